"""Fair use, the user's side and the policies' actions: time-limit extensions (granted at once
within policy, else waiting for an account manager or an admin), admin locks (exempt from every
clean-up), the policies' warnings (one notice per warning episode, never twice), and a job's
history (its audit trail) for whoever may see the job."""
from __future__ import annotations

from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import delete, func, select, update

from ..cluster.client import Cluster, ClusterError
from ..extensions import db
from ..models import (OPEN_STATES, FINAL_STATES, AuditEntry, ExtensionRequest, ExtensionState, Job, JobState, JobWarning,
                      utcnow)
from ..vocabulary import state_word
from . import accounts, audit, job_states, jobs, notify, policies
from .context import SYSTEM, Actor
from .errors import Conflict, Forbidden, NotFound, ValidationFailed
from .pagination import Page, paginate
from .transactions import retrying

LOCKED_FOREVER = datetime(9999, 12, 31)
MAX_REASON = 500


def _text(value: str, field: str, required: bool = True) -> str:
    value = " ".join((value or "").split())
    if required and not value:
        raise ValidationFailed({field: _("Say why.")})
    if len(value) > MAX_REASON:
        raise ValidationFailed({field: _("At most %(n)s characters.", n=MAX_REASON)})
    return value


# ---- extensions --------------------------------------------------------------------------------

def request_extension(actor: Actor, job_id: int, hours: int | None, reason: str, cluster: Cluster,
                      now: datetime | None = None) -> ExtensionRequest:
    """The owner asks for `hours` more. Within policy (at most auto_max_hours, and no automatic grant
    for this job in the last auto_every_hours) it is granted at once and the Job's deadline moves
    in the cluster; otherwise it waits for a manager of the job's account or an admin."""
    now = now or utcnow()
    job = jobs.get_job(actor, job_id)
    if actor.user is None or job.user_id != actor.user.id:
        raise Forbidden(_("Only the job's owner asks for more time."))
    if job.state not in (JobState.PENDING.value, JobState.RUNNING.value):
        raise Conflict(_("Job %(id)s is %(state)s: only a pending or running job gets more time.", id=job.id, state=state_word(job.state)))
    policy = policies.get("extensions")
    most = int(policy.params["max_request_hours"])
    if hours is None or not 1 <= hours <= most:
        raise ValidationFailed({"hours": _("From 1 to %(n)s hours.", n=most)})
    reason = _text(reason, "reason")
    if db.session.execute(select(ExtensionRequest.id).where(ExtensionRequest.job_id == job.id,
                                                            ExtensionRequest.state == ExtensionState.PENDING)).first():
        raise Conflict(_("This job already has a request waiting for approval."))
    recent_auto = db.session.execute(select(func.count(ExtensionRequest.id)).where(
        ExtensionRequest.job_id == job.id, ExtensionRequest.automatic.is_(True),
        ExtensionRequest.created_at > now - timedelta(hours=policy.params["auto_every_hours"]))).scalar()
    request = ExtensionRequest(job_id=job.id, user_id=job.user_id, hours=hours, reason=reason, created_at=now)
    db.session.add(request)
    automatic = not policy.suspended and hours <= policy.params["auto_max_hours"] and not recent_auto
    if not automatic:
        db.session.flush()
        audit.record(actor, "job.extension_requested", "job", job.id, {"hours": hours, "reason": reason,
                                                                       "request": request.id})
        db.session.commit()
        return request
    request.automatic = True
    db.session.flush()
    _grant(actor, request, cluster, now, _("within policy"))
    return request


def _grant(actor: Actor, request: ExtensionRequest, cluster: Cluster, now: datetime, note: str) -> None:
    """Move the deadline (cluster first; nothing changes in the database if it cannot), then
    record the grant."""
    job = db.session.get(Job, request.job_id)
    new_limit = (job.time_limit_seconds or 0) + request.hours * 3600
    request_id = request.id
    db.session.commit()  # no transaction stays open while the cluster is called
    if job.state == JobState.RUNNING.value or job.state == JobState.PENDING.value:
        try:
            cluster.set_time_limit(job.id, new_limit)
        except ClusterError as exc:
            if exc.status != 404:
                db.session.rollback()
                if request.automatic:  # the owner's own request: nothing is kept, they try again
                    db.session.delete(db.session.get(ExtensionRequest, request_id))
                    db.session.commit()
                raise Conflict(_("The cluster could not move the deadline now: %(error)s Try again in a minute.",
                                 error=exc.message)) from None
    job_id, hours, automatic, asked = job.id, request.hours, request.automatic, request.reason

    def record() -> None:
        """The grant in one guarded transaction, retried as a deadlock victim (a policy pass may
        be warning the same job): the warning's row first, then the job's, the order it takes."""
        changed = db.session.execute(update(ExtensionRequest).where(
            ExtensionRequest.id == request_id, ExtensionRequest.state == ExtensionState.PENDING).values(
            state=ExtensionState.GRANTED, decided_by=actor.name if not automatic else "policy",
            decided_at=now, note=note[:MAX_REASON]))
        if changed.rowcount:
            db.session.execute(delete(JobWarning).where(JobWarning.job_id == job_id, JobWarning.kind == "time_limit"))
            db.session.execute(update(Job).where(Job.id == job_id).values(time_limit_seconds=new_limit))
            job_states.touch([job_id])
            audit.record(actor if not automatic else SYSTEM, "job.extend", "job", job_id,
                         {"hours": hours, "automatic": automatic, "by": actor.name, "reason": asked,
                          "note": note[:MAX_REASON], "time_limit_hours": round(new_limit / 3600, 2)})
        db.session.commit()
    retrying(record)


def _may_decide(actor: Actor, job: Job) -> bool:
    return actor.is_admin or accounts.is_manager(actor.user, job.account_id)


def decide(actor: Actor, request_id: int, approve: bool, note: str, cluster: Cluster, now: datetime | None = None) -> ExtensionRequest:
    now = now or utcnow()
    request = db.session.get(ExtensionRequest, request_id)
    if request is None or not _may_decide(actor, request.job):
        raise NotFound(_("No such request."))
    if request.state != ExtensionState.PENDING:
        raise Conflict(_("This request was already %(state)s.", state=request.state))
    note = _text(note, "note", required=not approve)
    if approve:
        if request.job.state not in (JobState.PENDING.value, JobState.RUNNING.value):
            raise Conflict(_("The job has ended."))
        _grant(actor, request, cluster, now, note)
    else:
        request.state, request.decided_by, request.decided_at, request.note = ExtensionState.REJECTED, actor.name, now, note
        audit.record(actor, "job.extension_rejected", "job", request.job_id, {"hours": request.hours, "note": note})
        db.session.commit()
    decided = db.session.get(ExtensionRequest, request_id, populate_existing=True)
    if decided.state != ExtensionState.PENDING:  # the owner hears of it (the page, and mail as they chose)
        notify.notice(decided.job_id, decided.user_id, "extension_decided", f"extension:{decided.id}")
        db.session.commit()
    return decided


def pending_requests(actor: Actor, page: int, per_page: int) -> Page:
    """The requests the actor may decide, oldest first."""
    stmt = select(ExtensionRequest).join(Job, Job.id == ExtensionRequest.job_id).where(
        ExtensionRequest.state == ExtensionState.PENDING).order_by(ExtensionRequest.id)
    if not actor.is_admin:
        from .job_queries import managed_account_ids
        stmt = stmt.where(Job.account_id.in_(managed_account_ids(actor) or [0]))
    return paginate(stmt, page, per_page)


def requests_of(job_id: int) -> list[ExtensionRequest]:
    return list(db.session.execute(select(ExtensionRequest).where(ExtensionRequest.job_id == job_id)
                                   .order_by(ExtensionRequest.id.desc()).limit(20)).scalars())


def cancel_requests_of_ended_jobs(now: datetime) -> list[int]:
    """Requests still waiting for a job that has ended are cancelled (the reconciler's pass)."""
    rows = db.session.execute(select(ExtensionRequest.id, ExtensionRequest.job_id).join(Job, Job.id == ExtensionRequest.job_id)
                              .where(ExtensionRequest.state == ExtensionState.PENDING, Job.state.in_(FINAL_STATES))).all()
    for request_id, job_id in rows:
        changed = db.session.execute(update(ExtensionRequest).where(
            ExtensionRequest.id == request_id, ExtensionRequest.state == ExtensionState.PENDING).values(
            state=ExtensionState.CANCELLED, decided_by="system", decided_at=now, note="the job ended"))
        if changed.rowcount:
            audit.record(SYSTEM, "job.extension_cancelled", "job", job_id, {"request": request_id})
    db.session.commit()
    return [r for r, _j in rows]


# ---- locks -------------------------------------------------------------------------------------

def lock(actor: Actor, job_id: int, until: datetime | None, reason: str, now: datetime | None = None) -> Job:
    """Exempt a job from every clean-up until `until` (None: indefinitely). Admins only. Retried as
    a deadlock victim: a policy pass may be warning the same job at that moment."""
    actor.require_admin()
    now = now or utcnow()
    if until is not None and until <= now:
        raise ValidationFailed({"until": _("Choose a time in the future.")})
    reason = _text(reason, "reason")

    def work() -> Job:
        job = jobs.get_job(actor, job_id)
        if not job.is_open:
            raise Conflict(_("Job %(id)s has already ended.", id=job.id))
        # the warning row first, then the job's: the order a policy pass takes them in
        db.session.execute(delete(JobWarning).where(JobWarning.job_id == job.id, JobWarning.kind == "idle_gpu"))
        job.locked_until, job.lock_reason = until or LOCKED_FOREVER, reason
        job_states.touched(job)
        audit.record(actor, "job.lock", "job", job.id, {"until": until.isoformat() if until else "indefinitely",
                                                        "reason": reason})
        db.session.commit()
        return job
    return retrying(work)


def unlock(actor: Actor, job_id: int) -> Job:
    actor.require_admin()

    def work() -> Job:
        job = jobs.get_job(actor, job_id)
        job.locked_until, job.lock_reason = None, ""
        job_states.touched(job)
        audit.record(actor, "job.unlock", "job", job.id)
        db.session.commit()
        return job
    return retrying(work)


# ---- the policies' warnings ----------------------------------------------------------------------

def warn(job_id: int, kind: str, act_at: datetime, now: datetime) -> bool:
    """A policy's warning (idle_gpu: stopped at act_at unless busy or locked; time_limit: the limit
    is reached at act_at). True if it is new (see `warn_many`)."""
    return bool(warn_many([(job_id, act_at)], kind, now))


def warn_many(items: list[tuple[int, datetime]], kind: str, now: datetime) -> list[int]:
    """Warnings for many jobs in one transaction (a pass may warn hundreds at once). One row per
    job and kind; the owner's notice goes into the outbox with a key of its episode, so it is never
    sent twice. Returns the jobs warned now (those already warned are left as they are)."""
    ids = sorted({job_id for job_id, _at in items})
    if not ids:
        return []
    already, episodes, owners = set(), {}, {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        already |= set(db.session.execute(select(JobWarning.job_id).where(JobWarning.job_id.in_(chunk),
                                                                          JobWarning.kind == kind)).scalars())
        episodes.update({int(t): n for t, n in db.session.execute(
            select(AuditEntry.target_id, func.count(AuditEntry.id)).where(
                AuditEntry.target_type == "job", AuditEntry.target_id.in_([str(j) for j in chunk]),
                AuditEntry.action == f"job.warned.{kind}").group_by(AuditEntry.target_id)).all()})
        owners.update(dict(db.session.execute(select(Job.id, Job.user_id).where(Job.id.in_(chunk))).all()))
    due = {job_id: at for job_id, at in items if job_id not in already and job_id in owners}
    mail = notify.wants_mail_of(set(owners[j] for j in due), f"warning_{kind}")
    for job_id, act_at in sorted(due.items()):
        episode = 1 + episodes.get(job_id, 0)
        db.session.add(JobWarning(job_id=job_id, kind=kind, warned_at=now, act_at=act_at, episode=episode))
        notify.notice(job_id, owners[job_id], f"warning_{kind}", f"warning_{kind}:{job_id}:{episode}",
                      mail=mail[owners[job_id]])
        audit.record(SYSTEM, f"job.warned.{kind}", "job", job_id, {"act_at": act_at.isoformat(), "episode": episode})
    warned = sorted(due)
    job_states.touch(warned)  # the job pages show the warning
    db.session.commit()
    return warned


def clear_warning(job_id: int, kind: str, why: str) -> bool:
    gone = db.session.execute(delete(JobWarning).where(JobWarning.job_id == job_id, JobWarning.kind == kind)).rowcount
    if gone:
        job_states.touch([job_id])
        audit.record(SYSTEM, f"job.warning_cleared.{kind}", "job", job_id, {"why": why})
    db.session.commit()
    return bool(gone)


def warnings_of(job_ids: list[int]) -> dict[tuple[int, str], JobWarning]:
    if not job_ids:
        return {}
    out = {}
    for i in range(0, len(job_ids), 500):
        for w in db.session.execute(select(JobWarning).where(JobWarning.job_id.in_(job_ids[i:i + 500]))).scalars():
            out[(w.job_id, w.kind)] = w
    return out


def clear_warnings_of_ended_jobs() -> int:
    ended = select(Job.id).where(Job.state.notin_(OPEN_STATES))
    gone = db.session.execute(delete(JobWarning).where(JobWarning.job_id.in_(ended))).rowcount
    db.session.commit()
    return gone


# ---- what the owner sees -------------------------------------------------------------------------

def history(actor: Actor, job_id: int, limit: int = 100) -> list[AuditEntry]:
    """The job's audit trail, for whoever may see the job (get_job checks), oldest first."""
    job = jobs.get_job(actor, job_id)
    return list(db.session.execute(select(AuditEntry).where(
        AuditEntry.target_type == "job", AuditEntry.target_id == str(job.id)).order_by(AuditEntry.id).limit(limit)).scalars())


def time_left(job: Job, now: datetime) -> timedelta | None:
    deadline = job.deadline()
    return None if deadline is None else max(timedelta(0), deadline - now)
