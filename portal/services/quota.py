"""Quota admission: a job is inserted (state Submitting) only inside one transaction that locks
its account's row, sums what the account's active jobs hold, and checks the account's quotas (GPUs
in total and per model, CPU, memory, concurrent jobs) and the member's GPU cap. Concurrent
submissions therefore queue on the lock and can never exceed a quota together.

Touches the DB only; the caller creates the cluster objects after this commit."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from flask_babel import gettext as _
from sqlalchemy import func, select, update

from ..extensions import db
from ..models import ACTIVE_STATES, Account, AccountGpuQuota, Job, Membership, User, utcnow
from .errors import DomainError, Forbidden, NotFound


class QuotaExceeded(DomainError):
    """Refused: says what is used, what is allowed and what was asked."""

    status = 409


@dataclass(frozen=True)
class Ask:
    gpus: int = 0  # in total
    gpu_model: str = ""
    cpu_milli: int = 0
    memory_mib: int = 0


def _lock_account(account_id: int) -> Account | None:
    """Row lock on the account until commit. SQLite has no row locks: a no-op write as the
    transaction's first statement takes its database write lock instead."""
    if db.session.get_bind().dialect.name == "sqlite":
        db.session.commit()  # start a fresh transaction whose first statement is the write
        db.session.execute(update(Account).where(Account.id == account_id).values(id=Account.id))
        return db.session.get(Account, account_id, populate_existing=True)
    return db.session.execute(select(Account).where(Account.id == account_id).with_for_update()).scalar_one_or_none()


def usage(account_id: int, user_id: int | None = None) -> dict:
    """What the account's active jobs hold (GPUs, per model, CPU, memory, count); with `user_id`
    also that member's GPUs."""
    active = (Job.account_id == account_id) & Job.state.in_(ACTIVE_STATES)
    gpus, cpu, memory, count = db.session.execute(
        select(func.coalesce(func.sum(Job.gpus), 0), func.coalesce(func.sum(Job.cpu_milli), 0),
               func.coalesce(func.sum(Job.memory_mib), 0), func.count(Job.id)).where(active)).one()
    per_model = dict(db.session.execute(
        select(Job.gpu_model, func.sum(Job.gpus)).where(active, Job.gpus > 0).group_by(Job.gpu_model)).all())
    result = {"gpus": int(gpus), "cpu_milli": int(cpu), "memory_mib": int(memory), "jobs": int(count),
              "per_model": {k: int(v) for k, v in per_model.items()}}
    if user_id is not None:
        result["member_gpus"] = int(db.session.execute(
            select(func.coalesce(func.sum(Job.gpus), 0)).where(active, Job.user_id == user_id)).scalar_one())
    return result


def admit(user_id: int, account_id: int, ask: Ask, job: Job, jupyter_limit: int | None = None,
          before_commit: Callable[[Job], None] | None = None) -> Job:
    """Insert `job` (state Submitting) if the account's quotas and the member's cap allow `ask`
    (and, for a JupyterLab job, the user's limit of concurrent JupyterLab jobs in all accounts);
    commit. Raises QuotaExceeded (nothing written) otherwise. `before_commit(job)` runs once the
    job has its id, before the commit (to read what the caller needs without reloading)."""
    try:
        account = _lock_account(account_id)
        if account is None:
            raise NotFound(_("No such account."))
        member = db.session.execute(select(Membership).where(
            Membership.account_id == account_id, Membership.user_id == user_id)).scalar_one_or_none()
        if member is None:
            raise Forbidden(_("You are not a member of account %(name)s.", name=account.name))
        if account.is_expired(utcnow().date()):
            raise QuotaExceeded(_("Account %(name)s expired on %(date)s; ask its manager to renew it.",
                                  name=account.name, date=account.expires_on.isoformat()))
        used = usage(account_id, user_id)
        _check(account, member, used, ask)
        if job.job_type == "jupyter" and jupyter_limit is not None:
            _check_jupyter(user_id, jupyter_limit)
        job.state, job.user_id, job.account_id = "Submitting", user_id, account_id
        job.gpus, job.gpu_model, job.cpu_milli, job.memory_mib = ask.gpus, ask.gpu_model, ask.cpu_milli, ask.memory_mib
        db.session.add(job)
        if before_commit is not None:
            db.session.flush()
            before_commit(job)
        db.session.commit()
        return job
    except BaseException:
        db.session.rollback()
        raise


def _check(account: Account, member: Membership, used: dict, ask: Ask) -> None:
    name = account.name
    if account.gpu_quota is not None and used["gpus"] + ask.gpus > account.gpu_quota:
        raise QuotaExceeded(_("Quota exceeded: account %(name)s uses %(used)s of %(limit)s GPUs; this job asks for %(ask)s.",
                              name=name, used=used["gpus"], limit=account.gpu_quota, ask=ask.gpus))
    model_limit = db.session.execute(select(AccountGpuQuota.gpus).where(
        AccountGpuQuota.account_id == account.id, AccountGpuQuota.gpu_model == ask.gpu_model)).scalar_one_or_none()
    model_used = used["per_model"].get(ask.gpu_model, 0)
    if ask.gpus and model_limit is not None and model_used + ask.gpus > model_limit:
        raise QuotaExceeded(_("Quota exceeded: account %(name)s uses %(used)s of %(limit)s %(model)s GPUs; this job asks for %(ask)s.",
                              name=name, used=model_used, limit=model_limit, model=ask.gpu_model, ask=ask.gpus))
    if account.cpu_quota is not None and used["cpu_milli"] + ask.cpu_milli > account.cpu_quota * 1000:
        raise QuotaExceeded(_("Quota exceeded: account %(name)s uses %(used)s of %(limit)s CPU cores; this job asks for %(ask)s.",
                              name=name, used=_cores(used["cpu_milli"]), limit=account.cpu_quota, ask=_cores(ask.cpu_milli)))
    if account.memory_quota_gib is not None and used["memory_mib"] + ask.memory_mib > account.memory_quota_gib * 1024:
        raise QuotaExceeded(_("Quota exceeded: account %(name)s uses %(used)s of %(limit)s GiB of memory; this job asks for %(ask)s GiB.",
                              name=name, used=_gib(used["memory_mib"]), limit=account.memory_quota_gib, ask=_gib(ask.memory_mib)))
    if account.max_jobs is not None and used["jobs"] + 1 > account.max_jobs:
        raise QuotaExceeded(_("Quota exceeded: account %(name)s already runs %(used)s of %(limit)s concurrent jobs.",
                              name=name, used=used["jobs"], limit=account.max_jobs))
    if member.gpu_cap is not None and used["member_gpus"] + ask.gpus > member.gpu_cap:
        raise QuotaExceeded(_("Your GPU cap in account %(name)s is %(limit)s; you use %(used)s and this job asks for %(ask)s.",
                              name=name, limit=member.gpu_cap, used=used["member_gpus"], ask=ask.gpus))


def _check_jupyter(user_id: int, limit: int) -> None:
    """The per-user JupyterLab limit spans accounts, so the user's row is locked too (MySQL)."""
    if db.session.get_bind().dialect.name != "sqlite":
        db.session.execute(select(User.id).where(User.id == user_id).with_for_update())
    running = db.session.execute(select(func.count(Job.id)).where(
        Job.user_id == user_id, Job.job_type == "jupyter", Job.state.in_(ACTIVE_STATES))).scalar_one()
    if running + 1 > limit:
        raise QuotaExceeded(_("You already have %(used)s of at most %(limit)s JupyterLab jobs; stop one first.",
                              used=running, limit=limit))


def _cores(milli: int) -> str:
    return f"{milli / 1000:g}"


def _gib(mib: int) -> str:
    return f"{mib / 1024:g}"
