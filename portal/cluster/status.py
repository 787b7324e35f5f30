"""A portal job's state and reason from its Kubernetes Job and pods (pure: plain dicts in, a
dataclass out). Every non-success end and every wait gets a reason a person can act on."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..vocabulary import JobState, Reason

PENDING, RUNNING, SUCCEEDED, FAILED = (JobState.PENDING.value, JobState.RUNNING.value, JobState.SUCCEEDED.value,
                                       JobState.FAILED.value)


@dataclass
class PodInfo:
    name: str
    node: str
    phase: str
    ready: bool
    restarts: int
    reason: str = ""


@dataclass
class ClusterStatus:
    state: str
    reason: str = ""  # a short code: Unschedulable, ImagePullBackOff, DeadlineExceeded, OOMKilled, ExitCode, ...
    message: str = ""  # in words, for the detail page
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    pods: list[PodInfo] = field(default_factory=list)


def _terminated(pod: dict) -> dict | None:
    for status in pod.get("status", {}).get("containerStatuses", []):
        if "terminated" in status.get("state", {}):
            return status["state"]["terminated"]
    return None


def _waiting(pod: dict) -> dict | None:
    for status in pod.get("status", {}).get("containerStatuses", []):
        if "waiting" in status.get("state", {}):
            return status["state"]["waiting"]
    return None


def _pod_info(pod: dict) -> PodInfo:
    statuses = pod.get("status", {}).get("containerStatuses", [])
    waiting, terminated = _waiting(pod), _terminated(pod)
    reason = (waiting or {}).get("reason") or (terminated or {}).get("reason") or ""
    return PodInfo(name=pod["metadata"]["name"], node=pod.get("spec", {}).get("nodeName") or "",
                   phase=pod.get("status", {}).get("phase", PENDING), ready=all(s.get("ready") for s in statuses) and bool(statuses),
                   restarts=sum(s.get("restartCount", 0) for s in statuses), reason=reason)


def _failure(pods: list[dict]) -> tuple[str, str, int | None]:
    """The most telling failure among the pods: OOMKilled, an exit code, an image that won't pull."""
    for pod in pods:
        term = _terminated(pod)
        if term and term.get("reason") == "OOMKilled":
            return Reason.OOM_KILLED, "The container ran out of memory (OOMKilled). Ask for more memory.", term.get("exitCode")
    for pod in pods:
        term = _terminated(pod)
        if term and term.get("exitCode", 0) != 0:
            code = term["exitCode"]
            return Reason.EXIT_CODE, f"The command exited with code {code}.", code
    for pod in pods:
        waiting = _waiting(pod)
        if waiting and waiting.get("reason") in Reason.IMAGE_PULL:
            return waiting["reason"], waiting.get("message") or "The image could not be pulled.", None
    return Reason.FAILED, "The job failed.", None


def from_cluster(job: dict | None, pods: list[dict]) -> ClusterStatus:
    """State and reason of a job from its Job object (None when it is gone) and its pods."""
    infos = [_pod_info(p) for p in sorted(pods, key=lambda p: p["metadata"]["name"])]
    if job is None:
        return ClusterStatus(JobState.LOST.value, Reason.LOST, "The job's Kubernetes objects are gone.", pods=infos)
    status = job.get("status", {})
    conditions = {c["type"]: c for c in status.get("conditions", []) if c.get("status") == "True"}
    base = dict(started_at=status.get("startTime"), pods=infos)
    if "Complete" in conditions:
        return ClusterStatus(SUCCEEDED, Reason.COMPLETED, "The job finished successfully.", exit_code=0,
                             finished_at=status.get("completionTime") or conditions["Complete"].get("lastTransitionTime"), **base)
    if "Failed" in conditions:
        failed = conditions["Failed"]
        finished = failed.get("lastTransitionTime")
        if failed.get("reason") == "DeadlineExceeded":
            return ClusterStatus(FAILED, Reason.DEADLINE_EXCEEDED, "The job reached its time limit and was stopped.",
                                 finished_at=finished, **base)
        reason, message, code = _failure(pods)
        return ClusterStatus(FAILED, reason, message, exit_code=code, finished_at=finished, **base)
    live = [p for p in pods if p.get("status", {}).get("phase") not in (SUCCEEDED, FAILED)
            and not p["metadata"].get("deletionTimestamp")]
    if live and all(p.get("status", {}).get("phase") == RUNNING for p in live):
        running = sum(1 for p in live if p.get("status", {}).get("phase") == RUNNING)
        return ClusterStatus(RUNNING, "", f"{running} pod(s) running.", **base)
    for pod in live:
        scheduled = next((c for c in pod.get("status", {}).get("conditions", []) if c["type"] == "PodScheduled"), None)
        if scheduled and scheduled.get("status") == "False":
            return ClusterStatus(PENDING, scheduled.get("reason") or Reason.UNSCHEDULABLE, scheduled.get("message", ""), **base)
        waiting = _waiting(pod)
        if waiting and waiting.get("reason") in Reason.IMAGE_PULL:
            return ClusterStatus(PENDING, waiting["reason"], waiting.get("message") or "The image cannot be pulled.", **base)
        if waiting:
            return ClusterStatus(PENDING, waiting.get("reason", Reason.CONTAINER_CREATING), "The container is starting.", **base)
    if live and any(p.get("status", {}).get("phase") == RUNNING for p in live):
        return ClusterStatus(RUNNING, "", "Some pods are running, others are starting.", **base)
    return ClusterStatus(PENDING, Reason.CREATING, "Waiting for the job's pods to be created.", **base)
