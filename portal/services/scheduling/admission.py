"""Admission, under the account's row lock: a web or API submission (`admit_submission`: inserted
as Submitting when it fits now, Queued when it fits only later, refused with the numbers when it
never can) and the queued jobs the syncer's admitter starts (`admit_queued`: decide for every
account, lock only those where a job can start, decide again under the lock, flip those jobs
Queued -> Submitting and charge their members). Both decide by the same plan (`plan.decide`), so
concurrent submissions and the admitter can never exceed a quota or disagree about who goes
first. Touches the DB
only: the caller creates the cluster objects after the commit."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from collections.abc import Callable

from flask_babel import gettext as _
from sqlalchemy import select

from ...extensions import db
from ...models import Job, JobState, Membership, utcnow
from ...vocabulary import JobType, never_words, refusal_words
from .. import audit, job_states
from ..context import SYSTEM
from ..errors import DomainError, Forbidden, NotFound
from .plan import Decision, Demand, decide, never_fits
from .state import AccountQueue, QueueSettings, jupyter_count, load, lock_account, lock_users, write_queued
from .usage import charge


NEW = 1 << 62  # the id of the job being submitted, while the queue decides (after every real id)


class QuotaExceeded(DomainError):
    """Refused: says what is used, what is allowed and what was asked; `kind` is what refused it
    (expired, never, or the quota that is full: gpus, model, cpu, memory, jobs, member, ...)."""

    status = 409

    def __init__(self, message: str = "", kind: str = ""):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Ask:
    gpus: int = 0  # in total
    gpu_model: str = ""
    cpu_milli: int = 0
    memory_mib: int = 0


def admit_submission(user_id: int, account_id: int, ask: Ask, job: Job, jupyter_limit: int | None = None,
          before_commit: Callable[[Job], None] | None = None, queue_if_full: bool = False,
          settings=None, now=None) -> Job:
    """Insert `job` as Submitting if the account's quotas, the member's cap and (for a JupyterLab
    job) the user's limit of concurrent JupyterLab jobs in all accounts allow `ask` now and no
    queued job of the account would be delayed by it (the queue's own rules, `plan.decide`);
    else, with `queue_if_full`, as Queued (the admitter starts it when its turn comes); commit.
    Raises QuotaExceeded (nothing written) when it could never fit (it asks more than a quota
    itself), the account has expired, or it does not fit now and may not queue.
    `before_commit(job)` runs once the job has its id, before the commit."""
    settings = replace(settings or QueueSettings(), jupyter_limit=jupyter_limit)
    now = now or utcnow()
    try:
        account = lock_account(account_id)
        if account is None:
            raise NotFound(_("No such account."))
        member = db.session.execute(select(Membership).where(
            Membership.account_id == account_id, Membership.user_id == user_id)).scalar_one_or_none()
        if member is None:
            raise Forbidden(_("You are not a member of account %(name)s.", name=account.name))
        if account.is_expired(now.date()):
            raise QuotaExceeded(_("Account %(name)s expired on %(date)s; ask its manager to renew it.",
                                  name=account.name, date=account.expires_on.isoformat()), kind="expired")
        if job.job_type == JobType.JUPYTER:
            lock_users([user_id])
        q = load([account_id], now, settings)[account_id]
        if job.job_type == JobType.JUPYTER and user_id not in q.used.jupyter:
            q.used.jupyter[user_id] = jupyter_count(user_id)
        d = Demand(id=NEW, user_id=user_id, gpus=ask.gpus, gpu_model=ask.gpu_model, cpu_milli=ask.cpu_milli,
                   memory_mib=ask.memory_mib, jupyter=job.job_type == JobType.JUPYTER, time_limit=job.time_limit_seconds or 0,
                   submitted=now)
        never = never_fits(q.limits, d)
        if never is not None:
            raise QuotaExceeded(never_words(account.name, never.as_dict()), kind="never")
        decision = decide(q.limits, q.used, q.queued + [d], q.scores, q.holding, now, settings.penalty_seconds)
        if not any(x.id == NEW for x in decision.admit):
            if not queue_if_full:
                raise QuotaExceeded(refusal_words(decision.blockers[NEW].as_dict()), kind=decision.blockers[NEW].kind)
            job_states.queued(job, next(i for i, x in enumerate(decision.order, 1) if x.id == NEW),
                              decision.blockers[NEW].as_dict())
        else:
            job_states.submitted(job)
        job.user_id, job.account_id, job.created_at = user_id, account_id, now
        job.gpus, job.gpu_model, job.cpu_milli, job.memory_mib = ask.gpus, ask.gpu_model, ask.cpu_milli, ask.memory_mib
        db.session.add(job)
        if job.state == JobState.SUBMITTING.value:
            charge(account_id, user_id, ask.gpus * settings.penalty_seconds, now, settings)
        if before_commit is not None:
            db.session.flush()
            before_commit(job)
        db.session.commit()
        return job
    except BaseException:
        db.session.rollback()
        raise


def admit_queued(now: datetime, settings: QueueSettings, account_ids: list[int] | None = None) -> list[int]:
    """One pass over the queues of these accounts (None: every account with a queue): the ids
    admitted (now Submitting, committed)."""
    if account_ids is not None and not account_ids:
        return []
    queues = load(account_ids, now, settings)
    db.session.commit()  # the reads end here; each admitting account gets a transaction of its own
    admitted: list[int] = []
    for account_id, q in queues.items():
        decision = q.decide(now, settings)
        if decision.admit and not q.expired:
            admitted += _admit_account(account_id, now, settings)
        else:
            _show(q, decision, now)
    db.session.commit()
    return admitted


def _admit_account(account_id: int, now: datetime, settings: QueueSettings) -> list[int]:
    """Under the account's row lock (as a web submission takes it): decide again from fresh rows,
    flip the chosen jobs Queued -> Submitting (guarded: a job cancelled meanwhile stays cancelled)
    and charge their members; commit."""
    try:
        if lock_account(account_id) is None:
            return []
        q = load([account_id], now, settings).get(account_id)
        if q is None or q.expired:
            db.session.commit()
            return []
        decision = q.decide(now, settings)
        lock_users([d.user_id for d in decision.admit if d.jupyter])
        if any(d.jupyter for d in decision.admit):  # the JupyterLab counts, now under the users' locks
            q = load([account_id], now, settings)[account_id]
            decision = q.decide(now, settings)
        done = []
        for d in decision.admit:
            if job_states.admitted(d.id, now):
                done.append(d.id)
                charge(account_id, d.user_id, d.gpus * settings.penalty_seconds, now, settings)
                audit.record(SYSTEM, "job.admit", "job", d.id, {"account": q.name, "gpus": d.gpus,
                                                                 "waited_s": int((now - d.submitted).total_seconds()) if d.submitted else 0})
        _show(q, decision, now)
        db.session.commit()
        return done
    except BaseException:
        db.session.rollback()
        raise


def _show(q: AccountQueue, decision: Decision, now: datetime) -> int:
    """Write place, blocker and reservation of the account's queued jobs where they changed (the
    version moves, so lists and polls show it). The caller commits."""
    changes = []
    head_id = decision.head.id if decision.head is not None else None
    for position, d in enumerate(decision.order, 1):
        blocker = decision.blockers[d.id].as_dict()
        reserved = (d.reserved_at or now) if d.id == head_id else None
        old = q.shown.get(d.id)
        if old is None or old[0] != position or old[1] != blocker or old[2] != reserved:
            changes.append({"jid": d.id, "pos": position, "blocker": blocker, "reserved": reserved})
    write_queued(changes, {"pos": "queue_position", "blocker": "queue_blocker", "reserved": "queue_reserved_at"})
    return len(changes)
