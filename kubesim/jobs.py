"""The Job controller: pods from the template up to parallelism until completions succeed;
Indexed jobs (one success per index, JOB_COMPLETION_INDEX, the completion-index annotation and
label, hostname and subdomain for a headless Service); backoffLimit; activeDeadlineSeconds
(Failed, reason DeadlineExceeded, pods stopped); suspend; status counts, start and completion
times and conditions; ttlSecondsAfterFinished."""
from __future__ import annotations

from .store import clone
import uuid
from datetime import datetime, UTC

from . import errors
from .resources import core, get
from .store import now_iso
import contextlib

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
TERMINAL = ("Succeeded", "Failed")


def _ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _condition(type_: str, reason: str, message: str, stamp: str) -> dict:
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": stamp, "lastTransitionTime": stamp}


class JobController:
    """Syncs the jobs whose job or pods changed since the last pass, and once a second the jobs
    waiting on a clock (a deadline, a TTL)."""

    def __init__(self, sim):
        self.sim, self.store, self.recorder, self.clock = sim, sim.store, sim.recorder, sim.clock
        self.jobs, self.pods = get("batch/jobs"), core("pods")
        self._dirty: set[tuple[str, str]] = set()
        self._timed: set[tuple[str, str]] = set()
        self._last_timed = 0.0
        self.store.listeners.append(self._on_change)

    def _on_change(self, event, obj) -> None:
        meta = obj["metadata"]
        if event.rtype is self.jobs:
            key = (meta["namespace"], meta["name"])
            if event.type == "DELETED":
                self._dirty.discard(key)
                self._timed.discard(key)
            else:
                self._dirty.add(key)
        elif event.rtype is self.pods:
            for ref in meta.get("ownerReferences") or []:
                if ref.get("kind") == "Job" and ref.get("controller"):
                    self._dirty.add((meta["namespace"], ref["name"]))

    def sync_all(self) -> None:
        now = self.clock()
        with self.store.lock:
            keys = self._dirty
            self._dirty = set()
            if now - self._last_timed >= 1.0:
                keys |= self._timed
                self._last_timed = now
        for ns, name in sorted(keys):
            job = self.store.find(self.jobs, ns, name)
            if job is None:
                continue
            pods = [p for p in (self.store.find(self.pods, pns, pname) for _r, pns, pname in
                                self.sim.dependents_of(job["metadata"]["uid"])) if p is not None
                    and any(r.get("uid") == job["metadata"]["uid"] and r.get("controller")
                            for r in p["metadata"].get("ownerReferences") or [])]
            try:
                self.sync(job, pods)
            except errors.ApiError:
                self._dirty.add((ns, name))
                continue
            # Unfinished jobs may hit their deadline; finished ones may have a TTL to honour.
            finished = any(c["type"] in ("Complete", "Failed") for c in job.get("status", {}).get("conditions", []))
            if not finished or job.get("spec", {}).get("ttlSecondsAfterFinished") is not None:
                self._timed.add((ns, name))
            else:
                self._timed.discard((ns, name))

    def sync(self, job: dict, pods: list) -> None:
        meta, spec, status = job["metadata"], job.get("spec", {}), job.get("status", {})
        if meta.get("deletionTimestamp"):
            return
        now = self.clock()
        finished = next((c for c in status.get("conditions", []) if c["type"] in ("Complete", "Failed")
                         and c["status"] == "True"), None)
        if finished:
            self._ttl(job, now)
            return
        active = [p for p in pods if p.get("status", {}).get("phase") not in TERMINAL and not p["metadata"].get("deletionTimestamp")]
        succeeded = [p for p in pods if p.get("status", {}).get("phase") == "Succeeded"]
        failed = [p for p in pods if p.get("status", {}).get("phase") == "Failed"]
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        done_indexes = sorted({int(p["metadata"].get("annotations", {}).get(INDEX_ANNOTATION, -1)) for p in succeeded}) if indexed else []
        n_succeeded = len(done_indexes) if indexed else len(succeeded)
        stamp = now_iso(now)
        new_status = {"active": len(active), "succeeded": n_succeeded, "failed": len(failed),
                      "ready": sum(1 for p in active if p.get("status", {}).get("phase") == "Running"),
                      "terminating": sum(1 for p in pods if p["metadata"].get("deletionTimestamp")),
                      "conditions": list(status.get("conditions", []))}
        if status.get("startTime"):
            new_status["startTime"] = status["startTime"]
        if indexed:
            new_status["completedIndexes"] = _ranges(done_indexes)
        if spec.get("suspend"):
            for pod in active:
                self._delete_pod(job, pod)
            if not any(c["type"] == "Suspended" for c in new_status["conditions"]):
                new_status["conditions"].append(_condition("Suspended", "JobSuspended", "Job suspended", stamp))
                self.recorder.record(job, "Suspended", "Job suspended", component="job-controller")
            new_status.pop("startTime", None)
            return self._write(job, new_status)
        new_status["conditions"] = [c for c in new_status["conditions"] if c["type"] != "Suspended"]
        new_status.setdefault("startTime", stamp)
        deadline = spec.get("activeDeadlineSeconds")
        if deadline and now - _ts(new_status["startTime"]) >= deadline:
            return self._fail(job, active, new_status, "DeadlineExceeded", "Job was active longer than specified deadline", stamp)
        if len(failed) > spec.get("backoffLimit", 6):
            return self._fail(job, active, new_status, "BackoffLimitExceeded", "Job has reached the specified backoff limit", stamp)
        if completions is not None and n_succeeded >= completions or (completions is None and succeeded and not active):
            new_status["conditions"] += [_condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods", stamp),
                                         _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods", stamp)]
            new_status["completionTime"] = stamp
            for pod in active:
                self._delete_pod(job, pod)
            self._write(job, new_status)
            self.recorder.record(job, "Completed", "Job completed", component="job-controller")
            return
        want = spec.get("parallelism", 1)
        if completions is not None:
            want = min(want, completions - n_succeeded)
        if indexed:
            busy = {int(p["metadata"].get("annotations", {}).get(INDEX_ANNOTATION, -1)) for p in active}
            todo = [i for i in range(completions) if i not in done_indexes and i not in busy]
            for index in todo[:max(0, want - len(active))]:
                self._create_pod(job, index)
                new_status["active"] += 1
        else:
            for _ in range(max(0, want - len(active))):
                self._create_pod(job, None)
                new_status["active"] += 1
        self._write(job, new_status)

    def _fail(self, job, active, status, reason, message, stamp):
        for pod in active:
            self._delete_pod(job, pod)
        status["conditions"] += [_condition("FailureTarget", reason, message, stamp), _condition("Failed", reason, message, stamp)]
        status["active"] = 0
        self._write(job, status)
        self.recorder.record(job, reason, message, "Warning", component="job-controller")

    def _write(self, job, status):
        if {k: v for k, v in status.items() if k != "conditions"} == {k: v for k, v in job.get("status", {}).items() if k != "conditions"} \
                and status.get("conditions", []) == job.get("status", {}).get("conditions", []):
            return
        self.store.mutate(self.jobs, job["metadata"]["namespace"], job["metadata"]["name"],
                          lambda j: j.__setitem__("status", {k: v for k, v in status.items() if v not in (None, [])
                                                             or k == "conditions"}), "status")

    def _create_pod(self, job, index):
        meta, template = job["metadata"], clone(job["spec"]["template"])
        pod_meta = template.setdefault("metadata", {})
        suffix = uuid.uuid4().hex[:5]
        pod_meta["name"] = f"{meta['name']}-{index}-{suffix}" if index is not None else f"{meta['name']}-{suffix}"
        pod_meta.pop("namespace", None)
        pod_meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                                        "controller": True, "blockOwnerDeletion": True}]
        spec = template.setdefault("spec", {})
        if index is not None:
            pod_meta.setdefault("annotations", {})[INDEX_ANNOTATION] = str(index)
            pod_meta.setdefault("labels", {})[INDEX_ANNOTATION] = str(index)
            spec["hostname"] = f"{meta['name']}-{index}"
            for c in spec.get("containers", []):
                env = [e for e in c.get("env") or [] if e.get("name") != "JOB_COMPLETION_INDEX"]
                env.append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                    "apiVersion": "v1", "fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}})
                c["env"] = env
        pod = self.store.create(self.pods, meta["namespace"], {"apiVersion": "v1", "kind": "Pod", **template}, validate=False)
        self.recorder.record(job, "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}", component="job-controller")

    def _delete_pod(self, job, pod):
        try:
            self.sim.delete(self.pods, pod["metadata"]["namespace"], pod["metadata"]["name"])
        except errors.ApiError:
            return
        self.recorder.record(job, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}", component="job-controller")

    def _ttl(self, job, now):
        ttl = job.get("spec", {}).get("ttlSecondsAfterFinished")
        finished_at = job.get("status", {}).get("completionTime") or next(
            (c["lastTransitionTime"] for c in job.get("status", {}).get("conditions", []) if c["type"] in ("Complete", "Failed")), None)
        if ttl is not None and finished_at and now - _ts(finished_at) >= ttl:
            with contextlib.suppress(errors.ApiError):
                self.sim.delete(self.jobs, job["metadata"]["namespace"], job["metadata"]["name"], policy="Background")


def _ranges(indexes: list[int]) -> str:
    parts, start, prev = [], None, None
    for i in indexes:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev > start else str(start))
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev > start else str(start))
    return ",".join(parts)
