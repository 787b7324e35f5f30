"""Web terminals into running jobs: who may open one (the job's owner, and admins, audited), into
which pod, how many at once per user (counted in the database, so the cap holds across web
workers and replicas), and the record of each terminal opened and closed (never what is typed)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import func, select, update

from ..extensions import db
from ..models import Job, JobState, TerminalSession, User
from ..vocabulary import state_word
from . import audit
from .context import Actor
from .errors import Conflict, DomainError, NotFound
from .jobs import get_job

STALE_BEATS = 3  # a session whose bridge missed this many beats no longer counts as open


class TooManyTerminals(DomainError):
    status = 429


@dataclass(frozen=True)
class Target:
    job_id: int
    pod: str
    pods: tuple[str, ...]
    owner: bool  # the actor owns the job (else an admin looks inside: audited as such)


def target(actor: Actor, job_id: int, pod: str = "") -> Target:
    """The pod a terminal opens into: one of the running job's pods (the first when none is
    named). Only the owner and admins: a manager may see the job but not enter it."""
    job = get_job(actor, job_id)
    owner = actor.user is not None and job.user_id == actor.user.id
    if not owner and not actor.is_admin:
        raise NotFound(_("No terminal of yours here."))
    if job.state != JobState.RUNNING.value:
        raise Conflict(_("A terminal opens once the job runs (it is %(state)s).", state=state_word(job.state)))
    pods = tuple(p["name"] for p in job.pods or [] if p.get("phase") == "Running")
    if not pods:
        raise Conflict(_("No pod of this job is running yet; try again in a moment."))
    if pod and pod not in pods:
        raise NotFound(_("This job has no running pod %(pod)s.", pod=pod))
    return Target(job.id, pod or pods[0], pods, owner)


def open_session(actor: Actor, t: Target, now: datetime, max_per_user: int, beat_seconds: float) -> int:
    """Record a terminal opened (audited), unless the user has `max_per_user` open already."""
    db.session.execute(select(User.id).where(User.id == actor.user.id).with_for_update())  # one count at a time
    fresh = now - timedelta(seconds=beat_seconds * STALE_BEATS)
    open_now = db.session.execute(select(func.count(TerminalSession.id)).where(
        TerminalSession.user_id == actor.user.id, TerminalSession.closed_at.is_(None),
        TerminalSession.seen_at >= fresh)).scalar_one()
    if open_now >= max_per_user:
        db.session.rollback()
        raise TooManyTerminals(_("You have %(n)s terminals open, the most one may have: close one first.", n=open_now))
    row = TerminalSession(user_id=actor.user.id, job_id=t.job_id, pod=t.pod, opened_at=now, seen_at=now)
    db.session.add(row)
    db.session.flush()
    audit.record(actor, "job.terminal_open", "job", t.job_id, {"pod": t.pod, "session": row.id, "owner": t.owner})
    db.session.commit()
    return row.id


def beat(session_id: int, now: datetime) -> None:
    db.session.execute(update(TerminalSession).where(TerminalSession.id == session_id).values(seen_at=now))
    db.session.commit()


def close_session(actor: Actor, session_id: int, now: datetime, reason: str, exit_code: int | None = None) -> None:
    """Record a terminal closed and why (exited, closed by the user, idle, too long, job ended,
    cluster error), audited; once only."""
    row = db.session.get(TerminalSession, session_id)
    if row is None or row.closed_at is not None:
        db.session.rollback()
        return
    row.closed_at, row.seen_at, row.close_reason = now, now, reason[:32]
    detail = {"pod": row.pod, "session": row.id, "reason": reason, "seconds": int((now - row.opened_at).total_seconds())}
    if exit_code is not None:
        detail["exit_code"] = exit_code
    audit.record(actor, "job.terminal_close", "job", row.job_id, detail)
    db.session.commit()


def job_running(job_id: int) -> bool:
    state = db.session.execute(select(Job.state).where(Job.id == job_id)).scalar()
    db.session.commit()
    return state == JobState.RUNNING.value
