"""The only code that moves a job from one state to another, whoever asks (a web or API submission,
the admitter, the syncer, a stop, a policy, an admin). Every transition is guarded (it happens only
from the states it may come from, so two movers never overwrite each other: the first wins and the
other sees `False`), moves the job's version (a page holding an older version renders it again),
and queues the notice the owner gets, all in the caller's transaction. The caller commits.

    (new) -> Queued | Submitting          submitted() / queued()      (services.scheduling.admission)
    Queued -> Submitting                  admitted()                  (the admitter)
    Submitting/Pending/Running -> Queued  preempted()                 (the admitter's reclaim)
    Submitting -> Queued                  requeued()                  (the cluster could not take it)
    Submitting -> Pending                 created()                   (its cluster objects exist)
    Pending/Running -> Running/Pending/.. follow_cluster()            (the syncer's job writer)
    any open state -> a final state       ended()                     (stop, cancel, SubmitError, Lost)

`touched` and `touch` move the version alone, for what a job page shows beside the state
(events, warnings, a lock, a new time limit). Touches the DB only."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import update

from ..extensions import db
from ..models import ACTIVE_STATES, FINAL_STATES, Job, JobState, Preemption, utcnow
from ..vocabulary import Reason
from . import notify

QUEUED, SUBMITTING = JobState.QUEUED.value, JobState.SUBMITTING.value
_CHUNK = 500
_QUEUE_COLUMNS = dict(queue_position=None, queue_blocker=None, queue_estimate=None, queue_reserved_at=None)


def _guarded(job_id: int, from_states: tuple[str, ...], **values) -> bool:
    result = db.session.execute(update(Job).where(Job.id == job_id, Job.state.in_(from_states))
                                .values(version=Job.version + 1, **values))
    return result.rowcount == 1


def submitted(job: Job) -> None:
    """A new job (not yet added) that fits now: Submitting, its cluster objects next."""
    job.state = SUBMITTING


def queued(job: Job, position: int, blocker: dict) -> None:
    """A new job (not yet added) that fits only later: Queued, with its place and what it waits for."""
    job.state, job.reason = QUEUED, Reason.QUEUED
    job.queue_position, job.queue_blocker = position, blocker


def admitted(job_id: int, now: datetime, borrowed: bool = False) -> bool:
    """Queued -> Submitting: the admitter's turn came (a job cancelled meanwhile stays cancelled),
    in its guarantee or `borrowed` beyond it."""
    return _guarded(job_id, (QUEUED,), state=SUBMITTING, reason="", message="", admitted_at=now, borrowed=borrowed,
                    **_QUEUE_COLUMNS)


def reclassified(job_ids: list[int]) -> int:
    """Borrowed -> in-quota, for admitted jobs that now fit their account's guarantee."""
    if not job_ids:
        return 0
    return db.session.execute(update(Job).where(Job.id.in_(sorted(job_ids)), Job.borrowed.is_(True),
                                                Job.state.in_(ACTIVE_STATES))
                              .values(borrowed=False, version=Job.version + 1)).rowcount


def preempted(job_id: int, now: datetime, not_before: datetime, blocker: dict) -> bool:
    """An admitted borrowed job -> Queued, keeping its submission time (so its place in the
    queue): another account's in-quota job needs its GPUs. Its cluster Job is suspended next
    (the object and its spec stay) and resumed when it is admitted again. The owner's notice is
    queued by the caller, which records the preemption."""
    return _guarded(job_id, ACTIVE_STATES, state=QUEUED, reason=Reason.PREEMPTED, message="", admitted_at=None,
                    started_at=None, preemptions=Job.preemptions + 1, preempted_at=now, not_before=not_before,
                    queue_blocker=blocker, queue_position=None, queue_estimate=None, queue_reserved_at=None)


def requeued(job_id: int, why: str) -> bool:
    """Submitting -> Queued, at the head of its queue: the cluster could not take an admitted job
    now (the create is safe to repeat), or the process creating it died."""
    return _guarded(job_id, (SUBMITTING,), state=QUEUED, reason="", admitted_at=None,
                    queue_blocker={"kind": "cluster", "error": why[:300]}, queue_reserved_at=Job.created_at)


def created(job_id: int) -> bool:
    """Submitting -> Pending: its cluster objects exist (the syncer may have moved it on already)."""
    return _guarded(job_id, (SUBMITTING,), state=JobState.PENDING.value, reason=Reason.CREATED, message="")


def ended(job_id: int, from_states: tuple[str, ...], state: str, reason: str, message: str,
          at: datetime | None = None, tell_owner: bool = False) -> tuple[Job, bool]:
    """Any of `from_states` -> a final `state`, with its reason, message and end time; queues the
    end-of-job notice (also when the owner asked for none, with `tell_owner`). (job, whether this
    call ended it)."""
    if state not in FINAL_STATES:
        raise ValueError(f"not a final state: {state}")
    done = _guarded(job_id, from_states, state=state, reason=reason, message=message[:2000], finished_at=at or utcnow())
    job = db.session.get(Job, job_id, populate_existing=True)
    if done:
        notify.enqueue_job_ended(job, always=tell_owner)
    return job, done


def follow_cluster(row, values: dict) -> tuple[bool, bool]:
    """What the cluster says of a job that has not ended (the syncer's job writer): `values` holds
    state, reason, message and whatever else changed (pods, exit code, start and end times).
    Guarded: a final job is never rewritten (a concurrent stop wins). Queues the started notice at
    its first start and the end-of-job notice when it ends. (changed, ended by this call)."""
    result = db.session.execute(update(Job).where(Job.id == row.id, Job.state.notin_(FINAL_STATES))
                                .values(version=Job.version + 1, **values))
    if result.rowcount != 1:
        return False, False
    state = values.get("state", row.state)
    if state in FINAL_STATES:
        notify.enqueue_job_ended(row, state=state, reason=values.get("reason") or "")
        return True, True
    if state == JobState.RUNNING.value and row.started_at is None:  # its first start (of this run, after a preemption)
        notify.enqueue_job_started(row.id, row.user_id, getattr(row, "preemptions", 0) or 0)
        # A job that reclaimed lent GPUs is bound: how long the reclaim took (the preemption log, /metrics).
        db.session.execute(update(Preemption).where(Preemption.by_job_id == row.id, Preemption.bound_at.is_(None))
                           .values(bound_at=values.get("started_at") or utcnow()))
    return True, False


def touch(job_ids) -> None:
    """Move the version of these jobs (by id): something their pages show changed."""
    ids = sorted(set(job_ids))
    for i in range(0, len(ids), _CHUNK):
        db.session.execute(update(Job).where(Job.id.in_(ids[i:i + _CHUNK])).values(version=Job.version + 1))


def touched(job: Job) -> None:
    """Move the version of a job loaded in this session whose shown fields the caller changed."""
    job.version = (job.version or 0) + 1
