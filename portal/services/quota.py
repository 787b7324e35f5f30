"""Quota admission: a job is inserted (Submitting, or Queued when it fits only later) only inside
one transaction that locks its account's row, reads what the account's active jobs hold and what
waits in its queue, and decides by the queue's rules (services/queue_plan.py: the account's quotas
in GPUs, per model, CPU, memory and concurrent jobs; the member's GPU cap; the JupyterLab limit;
the queue's order). Concurrent submissions and the syncer's admitter take the same lock, so
together they can never exceed a quota.

Touches the DB only; the caller creates the cluster objects after this commit."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from flask_babel import gettext as _
from sqlalchemy import select, update

from ..extensions import db
from ..models import Account, Job, JobState, Membership, User, utcnow
from ..vocabulary import Reason
from .errors import DomainError, Forbidden, NotFound


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


def lock_account(account_id: int) -> Account | None:
    """Row lock on the account until commit. SQLite has no row locks: a no-op write as the
    transaction's first statement takes its database write lock instead."""
    if db.session.get_bind().dialect.name == "sqlite":
        db.session.commit()  # start a fresh transaction whose first statement is the write
        db.session.execute(update(Account).where(Account.id == account_id).values(id=Account.id))
        return db.session.get(Account, account_id, populate_existing=True)
    return db.session.execute(select(Account).where(Account.id == account_id).with_for_update()).scalar_one_or_none()


def lock_users(user_ids) -> None:
    """The per-user JupyterLab limit spans accounts, so those users' rows are locked too (MySQL;
    SQLite's write lock already covers it). Always after the account's lock, in id order."""
    if user_ids and db.session.get_bind().dialect.name != "sqlite":
        db.session.execute(select(User.id).where(User.id.in_(sorted(set(user_ids)))).order_by(User.id).with_for_update())


def admit(user_id: int, account_id: int, ask: Ask, job: Job, jupyter_limit: int | None = None,
          before_commit: Callable[[Job], None] | None = None, queue_if_full: bool = False,
          settings=None, now=None) -> Job:
    """Insert `job` as Submitting if the account's quotas, the member's cap and (for a JupyterLab
    job) the user's limit of concurrent JupyterLab jobs in all accounts allow `ask` now and no
    queued job of the account would be delayed by it (the queue's own rules, `queue_plan.admit`);
    else, with `queue_if_full`, as Queued (the admitter starts it when its turn comes); commit.
    Raises QuotaExceeded (nothing written) when it could never fit (it asks more than a quota
    itself), the account has expired, or it does not fit now and may not queue.
    `before_commit(job)` runs once the job has its id, before the commit."""
    from . import queue
    from .queue_plan import Demand, admit as plan_admit, never_fits
    settings = replace(settings or queue.QueueSettings(), jupyter_limit=jupyter_limit)
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
        if job.job_type == "jupyter":
            lock_users([user_id])
        q = queue.load([account_id], now, settings)[account_id]
        if job.job_type == "jupyter" and user_id not in q.used.jupyter:
            q.used.jupyter[user_id] = queue.jupyter_count(user_id)
        d = Demand(id=NEW, user_id=user_id, gpus=ask.gpus, gpu_model=ask.gpu_model, cpu_milli=ask.cpu_milli,
                   memory_mib=ask.memory_mib, jupyter=job.job_type == "jupyter", time_limit=job.time_limit_seconds or 0,
                   submitted=now)
        never = never_fits(q.limits, d)
        if never is not None:
            raise QuotaExceeded(_("This job can never start in account %(name)s: %(why)s",
                                  name=account.name, why=refusal_words(never.as_dict())), kind="never")
        decision = plan_admit(q.limits, q.used, q.queued + [d], q.scores, q.holding, now, settings.penalty_seconds)
        if not any(x.id == NEW for x in decision.admit):
            if not queue_if_full:
                raise QuotaExceeded(refusal_words(decision.blockers[NEW].as_dict()), kind=decision.blockers[NEW].kind)
            job.state = JobState.QUEUED.value
            job.reason = Reason.QUEUED
            job.queue_position = next(i for i, x in enumerate(decision.order, 1) if x.id == NEW)
            job.queue_blocker = decision.blockers[NEW].as_dict()
        else:
            job.state = JobState.SUBMITTING.value
        job.user_id, job.account_id, job.created_at = user_id, account_id, now
        job.gpus, job.gpu_model, job.cpu_milli, job.memory_mib = ask.gpus, ask.gpu_model, ask.cpu_milli, ask.memory_mib
        db.session.add(job)
        if job.state == JobState.SUBMITTING.value:
            queue.charge(account_id, user_id, ask.gpus * settings.penalty_seconds, now, settings)
        if before_commit is not None:
            db.session.flush()
            before_commit(job)
        db.session.commit()
        return job
    except BaseException:
        db.session.rollback()
        raise


def refusal_words(b: dict) -> str:
    """Why a job cannot start now (or ever), in the reader's language, from a queue blocker."""
    kind, name = b.get("kind"), b.get("account", "")
    used, limit, ask = b.get("used", 0), b.get("limit", 0), b.get("ask", 0)
    if kind == "gpus":
        return _("Quota exceeded: account %(name)s uses %(used)s of %(limit)s GPUs; this job asks for %(ask)s.",
                 name=name, used=used, limit=limit, ask=ask)
    if kind == "model":
        return _("Quota exceeded: account %(name)s uses %(used)s of %(limit)s %(model)s GPUs; this job asks for %(ask)s.",
                 name=name, used=used, limit=limit, model=b.get("model", ""), ask=ask)
    if kind == "cpu":
        return _("Quota exceeded: account %(name)s uses %(used)s of %(limit)s CPU cores; this job asks for %(ask)s.",
                 name=name, used=_cores(used), limit=_cores(limit), ask=_cores(ask))
    if kind == "memory":
        return _("Quota exceeded: account %(name)s uses %(used)s of %(limit)s GiB of memory; this job asks for %(ask)s GiB.",
                 name=name, used=_gib(used), limit=_gib(limit), ask=_gib(ask))
    if kind == "jobs":
        return _("Quota exceeded: account %(name)s already runs %(used)s of %(limit)s concurrent jobs.",
                 name=name, used=used, limit=limit)
    if kind == "member":
        return _("Your GPU cap in account %(name)s is %(limit)s; you use %(used)s and this job asks for %(ask)s.",
                 name=name, limit=limit, used=used, ask=ask)
    if kind == "jupyter":
        return _("You already have %(used)s of at most %(limit)s JupyterLab jobs; stop one first.",
                 used=used, limit=limit)
    if kind in ("head", "behind"):
        return _("Jobs queued earlier in account %(name)s go first; submit it to the queue to wait for its turn.", name=name)
    if kind == "nomember":
        return _("The owner is no longer a member of account %(name)s.", name=name)
    return _("The account's quota is in use.")


def _cores(milli: float) -> str:
    return f"{milli / 1000:g}"


def _gib(mib: float) -> str:
    return f"{mib / 1024:g}"
