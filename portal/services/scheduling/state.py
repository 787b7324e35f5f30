"""The state the queue's plan decides on, as the database holds it: an account's quotas, its
members' caps, its admitted and queued jobs and its members' decayed usage (`load`, a fixed number
of queries for one account or every account with a queue); the row locks that admission takes; and
the per-job queue columns (place, blocker, reservation, estimate) written in bulk. Touches the DB
only."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import bindparam, case, func, literal, select, update

from ...extensions import db
from ...models.account import DEFAULT_ACCOUNT
from ...models import (ACTIVE_STATES, Account, AccountGpuQuota, Job, JobState, Membership, Node,
                       Placement, Preemption, QueueUsage, User)
from ...vocabulary import JobType
from ..restrictions import held_users
from .plan import CLUSTER_KINDS, Capacity, Decision, Demand, Limits, Room, Tally, decay, decide

QUEUED = JobState.QUEUED.value


@dataclass(frozen=True)
class QueueSettings:
    half_life_seconds: float = 86400.0
    penalty_seconds: float = 3600.0  # GPU-seconds charged per GPU at admission
    jupyter_limit: int | None = None
    default_guarantee: int = 0  # the Default account's guaranteed GPUs (when its quota is empty)

    @classmethod
    def from_config(cls, config) -> QueueSettings:
        return cls(half_life_seconds=config.get("QUEUE_HALF_LIFE_HOURS", 24.0) * 3600,
                   penalty_seconds=config.get("QUEUE_ENTRY_PENALTY_HOURS", 1.0) * 3600,
                   jupyter_limit=config.get("MAX_JUPYTER_PER_USER"),
                   default_guarantee=config.get("DEFAULT_ACCOUNT_GUARANTEE_GPUS", 0))


@dataclass
class AccountQueue:
    account_id: int
    name: str
    expired: bool
    limits: Limits
    used: Tally
    holding: list[Demand]
    queued: list[Demand]
    scores: dict[int, float]  # member -> decayed GPU-seconds now
    shown: dict[int, tuple] = field(default_factory=dict)  # queued job -> (position, blocker, reserved_at)
    types: dict[int, str] = field(default_factory=dict)  # job -> job type (for run-time predictions)

    def decide(self, now: datetime, settings: QueueSettings, capacity: Capacity | None = None,
               borrowing: bool = False) -> Decision:
        return decide(self.limits, self.used, self.queued, self.scores, self.holding, now, settings.penalty_seconds,
                      capacity=capacity, borrowing=borrowing)


def demand_of(row) -> Demand:
    return Demand(id=row.id, user_id=row.user_id, gpus=row.gpus or 0, gpu_model=row.gpu_model or "",
                  cpu_milli=row.cpu_milli or 0, memory_mib=row.memory_mib or 0, jupyter=row.job_type == JobType.JUPYTER.value,
                  time_limit=row.time_limit_seconds or 0, submitted=row.created_at,
                  reserved_at=getattr(row, "queue_reserved_at", None), started=getattr(row, "started_at", None),
                  workers=row.workers or 1, borrow=bool(row.borrow), borrowed=bool(row.borrowed),
                  not_before=row.not_before, preemptions=row.preemptions or 0)


DEMAND_COLUMNS = (Job.id, Job.account_id, Job.user_id, Job.gpus, Job.gpu_model, Job.cpu_milli, Job.memory_mib,
                  Job.job_type, Job.time_limit_seconds, Job.created_at, Job.workers, Job.borrow, Job.borrowed,
                  Job.not_before, Job.preemptions)


def in_ids(column, ids):
    return column.in_(bindparam(column.key + "_ids", list(ids), expanding=True))


def load(account_ids: list[int] | None, now: datetime, settings: QueueSettings) -> dict[int, AccountQueue]:
    """The queue state of these accounts (None: every account with a queued job): eight queries."""
    queued_stmt = select(*DEMAND_COLUMNS, Job.queue_reserved_at, Job.queue_position, Job.queue_blocker).where(
        Job.state == QUEUED)
    if account_ids is not None:
        queued_stmt = queued_stmt.where(in_ids(Job.account_id, account_ids))
    held = held_users(now)  # restricted from submitting: their queued jobs wait
    queued_rows = [r for r in db.session.execute(queued_stmt.order_by(Job.id)) if r.user_id not in held]
    ids = sorted(set(account_ids) if account_ids is not None else {r.account_id for r in queued_rows})
    if not ids:
        return {}
    accounts = {a.id: a for a in db.session.execute(
        select(Account.id, Account.name, Account.gpu_quota, Account.cpu_quota, Account.memory_quota_gib,
               Account.max_jobs, Account.expires_on, Account.borrow_limit, Account.borrow_jupyter)
        .where(in_ids(Account.id, ids)))}
    models = model_quotas(ids)
    caps: dict[int, dict] = {}
    for account_id, user_id, cap in db.session.execute(select(Membership.account_id, Membership.user_id,
                                                              Membership.gpu_cap).where(in_ids(Membership.account_id, ids))):
        caps.setdefault(account_id, {})[user_id] = cap
    holding_rows = list(db.session.execute(select(*DEMAND_COLUMNS, Job.started_at).where(
        in_ids(Job.account_id, ids), Job.state.in_(ACTIVE_STATES))))
    jupyter_users = {r.user_id for r in queued_rows if r.job_type == JobType.JUPYTER.value}
    jupyter = dict(db.session.execute(select(Job.user_id, func.count(Job.id)).where(
        in_ids(Job.user_id, jupyter_users), Job.job_type == JobType.JUPYTER.value, Job.state.in_(ACTIVE_STATES))
        .group_by(Job.user_id)).all()) if jupyter_users else {}
    scores: dict[int, dict] = {}
    for account_id, user_id, value, as_of in db.session.execute(select(
            QueueUsage.account_id, QueueUsage.user_id, QueueUsage.gpu_seconds, QueueUsage.as_of).where(
            in_ids(QueueUsage.account_id, ids))):
        scores.setdefault(account_id, {})[user_id] = decay(value, (now - as_of).total_seconds(), settings.half_life_seconds)
    maintenance = under_maintenance()
    result: dict[int, AccountQueue] = {}
    for account_id in ids:
        a = accounts.get(account_id)
        if a is None:
            continue
        limits = limits_of(a, models.get(account_id, {}), caps.get(account_id, {}), settings, maintenance)
        result[account_id] = AccountQueue(account_id, a.name, a.expires_on is not None and a.expires_on < now.date(),
                                          limits, Tally(jupyter), [], [], scores.get(account_id, {}))
    for r in holding_rows:
        q = result.get(r.account_id)
        if q is not None:
            d = demand_of(r)
            q.holding.append(d)
            q.used.add(d, jupyter=False)  # the JupyterLab counts span accounts: read above
            q.types[r.id] = r.job_type
    for r in queued_rows:
        q = result.get(r.account_id)
        if q is not None:
            q.queued.append(demand_of(r))
            q.shown[r.id] = (r.queue_position, r.queue_blocker, r.queue_reserved_at)
            q.types[r.id] = r.job_type
    return result


def guarantee_of(name: str, gpu_quota: int | None, settings: QueueSettings) -> int | None:
    """An account's guaranteed GPUs: its quota. The Default account, which every user belongs to,
    guarantees only the configured GPUs when its quota is empty (its GPU jobs beyond them borrow)."""
    return settings.default_guarantee if name == DEFAULT_ACCOUNT and gpu_quota is None else gpu_quota


def model_quotas(account_ids) -> dict[int, dict[str, int]]:
    """Per account: its per-model GPU quotas (one query)."""
    models: dict[int, dict] = {}
    for account_id, model, gpus in db.session.execute(select(AccountGpuQuota.account_id, AccountGpuQuota.gpu_model,
                                                             AccountGpuQuota.gpus).where(in_ids(AccountGpuQuota.account_id, account_ids))):
        models.setdefault(account_id, {})[model] = gpus
    return models


def limits_of(a, per_model: dict, caps: dict, settings: QueueSettings, maintenance: dict | None = None) -> Limits:
    """An account row's limits; the Default account's GPU jobs beyond its guarantee always borrow."""
    default = a.name == DEFAULT_ACCOUNT
    return Limits(account=a.name, gpus=guarantee_of(a.name, a.gpu_quota, settings), per_model=per_model,
                  cpu_milli=a.cpu_quota * 1000 if a.cpu_quota is not None else None,
                  memory_mib=a.memory_quota_gib * 1024 if a.memory_quota_gib is not None else None,
                  jobs=a.max_jobs, caps=caps, jupyter_limit=settings.jupyter_limit, maintenance=maintenance or {},
                  borrow_limit=a.borrow_limit, borrow_jupyter=bool(a.borrow_jupyter) or default, always_borrow=default)


def capacity(settings: QueueSettings) -> Capacity | None:
    """The cluster's free GPUs as admission sees them (plan rule 5), from the node inventory the
    syncer keeps: schedulable nodes' free GPUs; held for admitted jobs whose pods are not all bound
    yet; reserved for in-quota heads waiting for the cluster on the nodes where they will run
    (the oldest first); protected by lenders. None while the
    inventory has no GPU node (the syncer has not written it yet): quotas alone decide."""
    rows = db.session.execute(select(Node.name, Node.gpu_model, Node.gpus, Node.gpus_requested, Node.ready,
                                     Node.unschedulable, Node.reserved_for).where(Node.gpus > 0)).all()
    if not rows:
        return None
    nodes = {r.name: Room(r.gpu_model or "", max(0, r.gpus - (r.gpus_requested or 0)) if r.ready and not r.unschedulable else 0,
                          r.reserved_for or "") for r in rows}
    # Held: what admitted jobs have not been seen holding on a node yet. A Running job counts too:
    # its state is written before the node inventory that shows its pods (two commits).
    held: dict[int, tuple[str, int]] = {}
    for r in db.session.execute(select(Job.id, Job.gpus, Job.gpu_model, func.coalesce(func.sum(Placement.gpus), 0).label("placed"))
                                .outerjoin(Placement, Placement.job_id == Job.id)
                                .where(Job.state.in_(ACTIVE_STATES), Job.gpus > 0).group_by(Job.id, Job.gpus, Job.gpu_model)):
        if r.gpus > int(r.placed):
            held[r.id] = (r.gpu_model or "", r.gpus - int(r.placed))
    cap = Capacity(nodes, held, protected=_protected())
    for r in db.session.execute(select(Job.id, Job.gpus, Job.gpu_model, Job.workers, Job.queue_blocker, Account.name)
                                .join(Account, Account.id == Job.account_id)
                                .where(Job.state == QUEUED, Job.queue_reserved_at.is_not(None), Job.gpus > 0)
                                .order_by(Job.queue_reserved_at, Job.id)):
        if (r.queue_blocker or {}).get("kind") in CLUSTER_KINDS:  # the oldest head's nodes first
            cap.reserve(Demand(id=r.id, user_id=0, gpus=r.gpus, gpu_model=r.gpu_model or "", workers=r.workers or 1), r.name)
    return cap


def _protected() -> int:
    """GPUs lenders keep back: for each account with a lending limit, as many of its unused
    guaranteed GPUs as that limit says."""
    lenders = db.session.execute(select(Account.id, Account.gpu_quota, Account.lend_limit).where(
        Account.lend_limit > 0, Account.gpu_quota.is_not(None))).all()
    if not lenders:
        return 0
    used = dict(db.session.execute(select(Job.account_id, func.sum(Job.gpus)).where(
        in_ids(Job.account_id, [r.id for r in lenders]), Job.state.in_(ACTIVE_STATES), Job.borrowed.is_(False))
        .group_by(Job.account_id)).all())
    return sum(min(r.lend_limit, max(0, r.gpu_quota - int(used.get(r.id) or 0))) for r in lenders)


def borrowing_state(account_ids: set[int]) -> dict[int, tuple[int, int]]:
    """Per account: the GPUs its admitted jobs borrow and its smallest queued GPU job (0: none),
    in two grouped queries: the borrowers' order, without loading their queues."""
    ids = sorted(account_ids)
    borrowed = dict(db.session.execute(select(Job.account_id, func.sum(Job.gpus)).where(
        in_ids(Job.account_id, ids), Job.borrowed.is_(True), Job.state.in_(ACTIVE_STATES)).group_by(Job.account_id)).all())
    smallest = dict(db.session.execute(select(Job.account_id, func.min(Job.gpus)).where(
        in_ids(Job.account_id, ids), Job.state == QUEUED, Job.gpus > 0).group_by(Job.account_id)).all())
    return {a: (int(borrowed.get(a) or 0), int(smallest.get(a) or 0)) for a in ids}


def reclaim_candidates() -> tuple[list[Demand], dict[str, int]]:
    """The admitted borrowed jobs (with their account, where their pods are bound and the jobs each
    once preempted) and every account's borrowed GPUs: what `plan.reclaim` chooses from."""
    rows = db.session.execute(select(*DEMAND_COLUMNS, Job.started_at, Account.name.label("account_name"))
                              .join(Account, Account.id == Job.account_id)
                              .where(Job.borrowed.is_(True), Job.state.in_(ACTIVE_STATES))).all()
    if not rows:
        return [], {}
    ids = [r.id for r in rows]
    nodes: dict[int, dict[str, int]] = {}
    per = {r.id: r.gpus // max(1, r.workers or 1) for r in rows}
    for job_id, node, pods in db.session.execute(select(Placement.job_id, Placement.node, func.count(Placement.id))
                                                 .where(in_ids(Placement.job_id, ids)).group_by(Placement.job_id, Placement.node)):
        nodes.setdefault(job_id, {})[node] = pods * per[job_id]
    preempted: dict[int, set] = {}
    for by, victim in db.session.execute(select(Preemption.by_job_id, Preemption.job_id).where(in_ids(Preemption.by_job_id, ids))):
        preempted.setdefault(by, set()).add(victim)
    over: dict[str, int] = {}
    out = []
    for r in rows:
        over[r.account_name] = over.get(r.account_name, 0) + (r.gpus or 0)
        out.append(replace(demand_of(r), nodes=tuple(sorted(nodes.get(r.id, {}).items())), account=r.account_name,
                           preempted=frozenset(preempted.get(r.id, ()))))
    return out, over


def stranded(before: datetime, limit: int = 20) -> list[tuple[Demand, str]]:
    """Admitted in-quota GPU jobs that the cluster has left Pending since before `before`, with
    their account's name, the oldest first. (Which of their GPUs are not bound yet, `capacity`
    holds.)"""
    rows = db.session.execute(select(*DEMAND_COLUMNS, Account.name.label("account_name"))
                              .join(Account, Account.id == Job.account_id)
                              .where(Job.state == JobState.PENDING.value, Job.borrowed.is_(False), Job.gpus > 0,
                                     func.coalesce(Job.admitted_at, Job.created_at) <= before)
                              .order_by(Job.created_at, Job.id).limit(limit)).all()
    return [(demand_of(r), r.account_name) for r in rows]


def reclaiming(job_ids: list[int], since: datetime) -> set[int]:
    """Of these jobs, those that preempted others since `since` and are not bound yet: their
    reclaim is under way (the victims' grace)."""
    return set(db.session.execute(select(Preemption.by_job_id).where(
        in_ids(Preemption.by_job_id, job_ids), Preemption.bound_at.is_(None), Preemption.at >= since)).scalars())


def guarantees_held(settings: QueueSettings) -> list[tuple[str, Limits, list[Demand]]]:
    """For each account with a borrowed job running: its GPU guarantee and its admitted GPU jobs
    (what reclassification looks at). One small query when nothing is borrowed, three otherwise."""
    accounts = sorted(set(db.session.execute(select(Job.account_id).where(
        Job.borrowed.is_(True), Job.state.in_(ACTIVE_STATES)).distinct()).scalars()))
    if not accounts:
        return []
    rows = db.session.execute(select(Account.id, Account.name, Account.gpu_quota).where(in_ids(Account.id, accounts))).all()
    models = model_quotas(accounts)
    holding: dict[int, list[Demand]] = {}
    for r in db.session.execute(select(Job.id, Job.account_id, Job.user_id, Job.gpus, Job.gpu_model, Job.workers, Job.borrowed,
                                       Job.started_at).where(in_ids(Job.account_id, accounts), Job.state.in_(ACTIVE_STATES),
                                                             Job.gpus > 0)):
        holding.setdefault(r.account_id, []).append(Demand(id=r.id, user_id=r.user_id, gpus=r.gpus, gpu_model=r.gpu_model or "",
                                                           workers=r.workers or 1, borrowed=bool(r.borrowed), started=r.started_at))
    return [(a.name, Limits(account=a.name, gpus=guarantee_of(a.name, a.gpu_quota, settings), per_model=models.get(a.id, {})),
             holding.get(a.id, [])) for a in rows]


def lock_capacity() -> None:
    """The cluster's free GPUs are shared by every account: an admission that takes them locks the
    Default account's row too, always after its own account's (SQLite: the write lock has it)."""
    if db.session.get_bind().dialect.name != "sqlite":
        db.session.execute(select(Account.id).where(Account.name == DEFAULT_ACCOUNT).with_for_update())


def under_maintenance() -> dict[str, str]:
    """GPU models whose every node is cordoned, drained or not ready ("" when every GPU node is),
    each with an admin's cordon reason: one grouped query over the node inventory."""
    schedulable = case((Node.ready.is_(True) & Node.unschedulable.is_(False), Node.gpus), else_=0)
    rows = db.session.execute(select(Node.gpu_model, func.sum(schedulable), func.max(Node.cordon_reason))
                              .where(Node.gpus > 0).group_by(Node.gpu_model)).all()
    closed = {model: reason or "" for model, free, reason in rows if not int(free or 0)}
    if rows and len(closed) == len(rows):
        closed[""] = next((reason for reason in closed.values() if reason), "")
    return closed


def jupyter_count(user_id: int) -> int:
    """The user's admitted JupyterLab jobs in all accounts."""
    return int(db.session.execute(select(func.count(Job.id)).where(
        Job.user_id == user_id, Job.job_type == JobType.JUPYTER.value, Job.state.in_(ACTIVE_STATES))).scalar_one())


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


def write_queued(changes: list[dict], columns: dict[str, str]) -> None:
    """Set per-job values on queued jobs (guarded: only while Queued) and move their versions: one
    UPDATE ... CASE id per 500 jobs, not one statement per job."""
    table = Job.__table__
    for i in range(0, len(changes), 500):
        chunk = changes[i:i + 500]
        ids = [c["jid"] for c in chunk]
        values = {column: case({c["jid"]: literal(c[key], type_=table.c[column].type) for c in chunk}, value=table.c.id)
                  for key, column in columns.items()}
        db.session.execute(update(table).where(table.c.id.in_(ids), table.c.state == QUEUED)
                           .values(version=table.c.version + 1, **values))
