"""One vocabulary for jobs: their states, types and reasons, and the words a person reads for
them in English or Chinese. Pages, mail, the syncer, the JSON API and the CLI all take their
words from here, so a reason reads the same wherever it is shown. Pure: no DB, no cluster; the
word functions need a Flask-Babel locale (a request, or `force_locale` in mail)."""
from __future__ import annotations

import enum

from flask_babel import gettext as _


class JobState(str, enum.Enum):
    QUEUED = "Queued"  # accepted, waiting for the account's quota; no cluster objects
    SUBMITTING = "Submitting"
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"
    LOST = "Lost"


# Active: admitted, holding the account's quota (and, but for a moment in Submitting, cluster objects).
ACTIVE_STATES = (JobState.SUBMITTING.value, JobState.PENDING.value, JobState.RUNNING.value)
# Open: not ended yet (Queued, or active): what can still change, be stopped, be polled.
OPEN_STATES = (JobState.QUEUED.value,) + ACTIVE_STATES
FINAL_STATES = (JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.STOPPED.value, JobState.LOST.value)


class JobType(str, enum.Enum):
    JUPYTER = "jupyter"
    BATCH = "batch"
    DISTRIBUTED = "distributed"

    def __str__(self) -> str:
        return self.value


JOB_TYPES = tuple(t.value for t in JobType)


class Reason:
    """Short codes kept in `jobs.reason`: why a job waits or how it ended."""
    CREATED = "Created"
    CREATING = "Creating"
    CONTAINER_CREATING = "ContainerCreating"
    UNSCHEDULABLE = "Unschedulable"
    IMAGE_PULL = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")
    COMPLETED = "Completed"
    EXIT_CODE = "ExitCode"
    OOM_KILLED = "OOMKilled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"  # the time limit
    SUBMIT_ERROR = "SubmitError"
    STOPPED_BY_USER = "StoppedByUser"
    STOPPED_BY_ADMIN = "StoppedByAdmin"
    IDLE_GPU = "IdleGPU"
    EVICTED = "Evicted"
    PENDING_TOO_LONG = "PendingTooLong"  # an interactive job that could not start in time
    LOST = "Lost"
    FAILED = "Failed"
    QUEUED = "WaitingForQuota"  # Queued: the account's quota is in use
    CANCELLED = "Cancelled"  # a queued job stopped by its owner before it was admitted


STOP_REASONS = (Reason.CANCELLED, Reason.STOPPED_BY_USER, Reason.STOPPED_BY_ADMIN, Reason.IDLE_GPU, Reason.EVICTED,
                Reason.DEADLINE_EXCEEDED, Reason.PENDING_TOO_LONG)


def state_words() -> dict[str, str]:
    return {"Queued": _("Queued"), "Submitting": _("Submitting"), "Pending": _("Pending"), "Running": _("Running"),
            "Succeeded": _("Succeeded"), "Failed": _("Failed"), "Stopped": _("Stopped"), "Lost": _("Lost")}


def type_words() -> dict[str, str]:
    return {"jupyter": _("JupyterLab"), "batch": _("Batch"), "distributed": _("Distributed")}


def state_word(state: str) -> str:
    return state_words().get(state, state)


def ended_words(state: str) -> str:
    """How a final state reads in a sentence: "Your job X succeeded / failed / ..."."""
    return {"Succeeded": _("succeeded"), "Failed": _("failed"), "Stopped": _("was stopped"),
            "Lost": _("was lost")}.get(state, state)


def reason_words(job) -> tuple[str, str]:
    """(sentence, detail) for a job's reason: the sentence in the reader's language, the detail
    the cluster's or the actor's own message (shown as is), or "" when the sentence says it all."""
    r, state, message = job.reason or "", job.state, job.message or ""
    if r == Reason.UNSCHEDULABLE:
        return _("Waiting for resources."), message
    if r in Reason.IMAGE_PULL:
        return _("The image %(image)s cannot be pulled; check its name and tag.", image=job.image), message
    if r == Reason.EXIT_CODE:
        return _("The command exited with code %(code)s; see the logs.", code=job.exit_code), ""
    if r == Reason.OOM_KILLED:
        return _("Out of memory: the job used more memory than it asked for. Ask for more memory."), ""
    if r == Reason.DEADLINE_EXCEEDED:
        hours = round((job.time_limit_seconds or 0) / 3600, 1)
        return _("Time limit reached: the job ran for its %(hours)s hours and was stopped.", hours=hours), ""
    if r == Reason.SUBMIT_ERROR:
        return _("The cluster refused the job:"), message
    if r == Reason.CANCELLED:
        return _("Cancelled while it waited in the queue; it never reached the cluster."), ""
    if r == Reason.QUEUED:
        return _("Queued: it starts when the account's quota allows."), ""
    if r == Reason.STOPPED_BY_USER:
        return _("Stopped by its owner."), ""
    if r == Reason.STOPPED_BY_ADMIN:
        return _("Stopped by a manager or administrator."), message
    if r == Reason.LOST:
        return _("The job's cluster objects disappeared while it was active."), ""
    if r == Reason.COMPLETED:
        return _("Finished successfully."), ""
    if r == Reason.CREATED:
        return _("Submitted; waiting for the cluster to schedule it."), ""
    if r == Reason.IDLE_GPU:
        return _("Stopped because its GPUs stayed idle."), message
    if r == Reason.EVICTED:
        return _("Evicted from its node."), message
    if r == Reason.PENDING_TOO_LONG:
        return _("Stopped because it could not start in time (interactive jobs do not wait long)."), message
    if state == JobState.RUNNING.value:
        return _("Running."), ""
    if state == JobState.PENDING.value:
        return _("Starting: %(reason)s", reason=r or _("waiting")), ""
    return r, message


def reason_text(job) -> str:
    """The reason as one line of plain text (mail, CLI)."""
    sentence, detail = reason_words(job)
    return f"{sentence} {detail}".strip()


def waiting_words(b: dict | None) -> str:
    """What a queued job waits for, in a sentence (from the admitter's structured blocker)."""
    b = b or {}
    kind, name = b.get("kind"), b.get("account", "")
    used, limit, ask = b.get("used", 0), b.get("limit", 0), b.get("ask", 0)
    if kind == "gpus":
        return _("%(account)s uses %(used)s of %(limit)s GPUs; this job needs %(ask)s.", account=name, used=used,
                 limit=limit, ask=ask)
    if kind == "model":
        return _("%(account)s uses %(used)s of %(limit)s %(model)s GPUs; this job needs %(ask)s.", account=name,
                 used=used, limit=limit, model=b.get("model", ""), ask=ask)
    if kind == "cpu":
        return _("%(account)s uses %(used)s of %(limit)s CPU cores; this job needs %(ask)s.", account=name,
                 used=f"{used / 1000:g}", limit=f"{limit / 1000:g}", ask=f"{ask / 1000:g}")
    if kind == "memory":
        return _("%(account)s uses %(used)s of %(limit)s GiB of memory; this job needs %(ask)s GiB.", account=name,
                 used=f"{used / 1024:g}", limit=f"{limit / 1024:g}", ask=f"{ask / 1024:g}")
    if kind == "jobs":
        return _("%(account)s runs %(used)s of at most %(limit)s jobs at a time.", account=name, used=used, limit=limit)
    if kind == "member":
        return _("Its owner uses %(used)s of their %(limit)s-GPU cap in %(account)s; this job needs %(ask)s.",
                 used=used, limit=limit, account=name, ask=ask)
    if kind == "jupyter":
        return _("Its owner already has %(used)s of at most %(limit)s JupyterLab jobs.", used=used, limit=limit)
    if kind == "head":
        return _("Job %(job)s is at the head of the queue and holds the quota it waits for; this job would delay it.",
                 job=b.get("job", ""))
    if kind == "behind":
        return _("It starts after its owner's earlier job %(job)s (a member's jobs start in the order submitted).",
                 job=b.get("job", ""))
    if kind == "nomember":
        return _("Its owner is no longer a member of %(account)s; it cannot start.", account=name)
    if kind == "cluster":
        return _("The cluster could not take it just now; it is tried again shortly.")
    return _("Waiting for the account's quota.")
