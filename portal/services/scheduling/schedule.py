"""Which accounts a pass looks at, and the backend the syncer's admitter calls. Each account with
a queue has a fingerprint of what its decisions and estimates depend on (`signatures`); the
admission pass and the estimates each decide again only where it changed, plus a slice of the
rest so that every queue is looked at again within a bounded time. The fingerprints are kept in
memory: safe to lose. Touches the DB only."""
from __future__ import annotations

from datetime import datetime
from typing import Protocol
from collections.abc import Callable

from sqlalchemy import case, func, select

from ...extensions import db
from ...models import ACTIVE_STATES, Account, AccountGpuQuota, Job, Membership, Node, utcnow
from ..restrictions import held_users
from .admission import admit_queued, reclaim_stranded, reclassify_pass
from .estimates import RunTimes, estimate_pass
from .state import QUEUED, QueueSettings, in_ids, under_maintenance
from .usage import sample_usage


def signatures(idle_gpus: bool = True) -> dict[int, tuple]:
    """Per account with a queue: a fingerprint of what its decisions and estimates depend on (which
    jobs are queued; its admitted jobs and their versions; its quotas; its members' caps), in four
    small grouped queries, so a pass can skip the accounts where nothing changed. What the passes
    themselves write on queued jobs (place, blocker, estimate) does not change it."""
    is_queued = Job.state == QUEUED
    jobs = db.session.execute(select(
        Job.account_id, func.sum(case((is_queued, 0), else_=1)), func.sum(case((is_queued, 0), else_=Job.version)),
        func.sum(case((is_queued, 1), else_=0)), func.sum(case((is_queued, Job.id), else_=0)))
        .where(Job.state.in_((QUEUED,) + ACTIVE_STATES)).group_by(Job.account_id)).all()
    queued = {a for a, _n, _v, q, _ids in jobs if q}
    if not queued:
        db.session.commit()
        return {}
    accounts = {r[0]: tuple(r[1:]) for r in db.session.execute(select(
        Account.id, Account.gpu_quota, Account.cpu_quota, Account.memory_quota_gib, Account.max_jobs, Account.expires_on,
        Account.borrow_limit, Account.borrow_jupyter).where(in_ids(Account.id, queued)))}
    caps = {r[0]: tuple(r[1:]) for r in db.session.execute(select(
        Membership.account_id, func.count(Membership.id), func.sum(func.coalesce(Membership.gpu_cap, -1)),
        func.max(Membership.id)).where(in_ids(Membership.account_id, queued)).group_by(Membership.account_id))}
    models = {r[0]: tuple(r[1:]) for r in db.session.execute(select(
        AccountGpuQuota.account_id, func.count(AccountGpuQuota.id), func.sum(AccountGpuQuota.gpus),
        func.max(AccountGpuQuota.id)).where(in_ids(AccountGpuQuota.account_id, queued)).group_by(AccountGpuQuota.account_id))}
    closed = tuple(sorted(under_maintenance().items()))  # a model back from maintenance: decide again
    held = tuple(sorted(held_users(utcnow())))  # a restriction set, lifted or ended: decide again
    # What an account waiting on the cluster (a borrower, a head waiting for free GPUs) also
    # depends on: how many GPUs of the models it waits for are idle on the nodes, and how many
    # admitted jobs hold (a job that ends before the inventory shows its pods gone changes the
    # second, not the first). Read for every account with queued GPU jobs, so a fingerprint does
    # not change when an account starts waiting; the pass compares it only for the accounts
    # whose last decision waited on the cluster.
    waits_on: dict[int, tuple] = {}
    idle: dict = {}
    reserved: tuple = ()
    schedulable = Node.ready.is_(True) & Node.unschedulable.is_(False)
    if idle_gpus:
        idle = {m: int(g or 0) for m, g in db.session.execute(select(
            Node.gpu_model, func.sum(case((schedulable, Node.gpus - Node.gpus_requested), else_=0)))
            .where(Node.gpus > 0).group_by(Node.gpu_model)).all()}
        holding = {m or "": int(g or 0) for m, g in db.session.execute(select(Job.gpu_model, func.sum(Job.gpus)).where(
            Job.state.in_(ACTIVE_STATES), Job.gpus > 0).group_by(Job.gpu_model)).all()}
        # A node reserved for an account (or released) changes whose GPUs its idle ones are.
        reserved = tuple(db.session.execute(select(Node.name, Node.reserved_for).where(
            Node.gpus > 0, Node.reserved_for != "").order_by(Node.name)).all())
    if idle:
        models_of: dict[int, set] = {}
        for a, m in db.session.execute(select(Job.account_id, Job.gpu_model).where(is_queued, Job.gpus > 0).distinct()):
            models_of.setdefault(a, set()).add(m or "")
        waits_on = {a: (tuple((m, idle.get(m, 0) if m else sum(idle.values()),
                               holding.get(m, 0) + holding.get("", 0) if m else sum(holding.values())) for m in sorted(ms)),
                        reserved)
                    for a, ms in models_of.items()}
    db.session.commit()
    return {a: (int(n), int(v or 0), int(q), int(ids), accounts.get(a), caps.get(a), models.get(a), closed, held,
                waits_on.get(a))
            for a, n, v, q, ids in jobs if a in queued}


class AdmissionBackend(Protocol):
    """What the syncer's admitter calls on every pass, in the leading replica. The portal's own
    backend decides in the database (below); a Kueue backend would instead create queued jobs as
    suspended Jobs in a LocalQueue and only report what Kueue admitted (docs/queue.md)."""

    def admission_pass(self, now: datetime) -> list[int]:
        """Admit what can start now; return the job ids whose cluster objects are to be created
        (after the cluster Jobs of `last_preempted` are suspended)."""

    def sample_usage(self, now: datetime) -> int:
        """Bring the members' decayed usage up to date."""


class PortalAdmission:
    """Decides in the database. A pass reads the fingerprints of the accounts with a queue and
    decides only where one changed since the last pass (a job queued, admitted or ended, a
    quota or a cap changed), plus a slice of the others, so every queue is decided again at
    least every FULL_PASS_SECONDS (members' usage moves the order slowly). The first pass looks
    at every queue. The fingerprints are kept in memory: safe to lose."""

    FULL_PASS_SECONDS = 60.0
    SLICES = 30  # the unchanged queues looked at again: a slice per pass, each at least every minute

    def __init__(self, settings: QueueSettings):
        self.settings = settings
        self._seen: dict[int, tuple] = {}
        self._looked: dict[int, datetime] = {}
        self.last_preempted: list[int] = []
        self.last_reclassified: list[int] = []
        self._cluster_bound: set[int] = set()  # accounts whose last decision waited on the cluster
        self._heads_waiting: set[int] = set()  # ... with an in-quota head waiting for free GPUs

    def admission_pass(self, now: datetime) -> list[int]:
        current = signatures()
        first = not self._looked
        changed, borrow_only = set(), set()
        for a, sig in current.items():
            seen = self._seen.get(a)
            if first or seen is None or seen[:-1] != sig[:-1]:
                changed.add(a)
            elif seen[-1] != sig[-1] and a in self._cluster_bound:  # only the idle GPUs it waits for changed
                (changed if a in self._heads_waiting else borrow_only).add(a)
        stale = sorted((a for a in current if a not in changed and a not in borrow_only and
                        (now - self._looked.get(a, datetime.min)).total_seconds() >= self.FULL_PASS_SECONDS),
                       key=lambda a: self._looked.get(a, datetime.min))
        look = sorted(changed | set(stale[:max(1, -(-len(current) // self.SLICES))]))
        self.last_reclassified = reclassify_pass(now, self.settings)
        result = admit_queued(now, self.settings, look, borrow_only)
        admitted, self.last_preempted = result.admitted, result.preempted + reclaim_stranded(now, self.settings)
        self._cluster_bound = (self._cluster_bound - set(look) - borrow_only) | result.cluster_bound
        self._heads_waiting = (self._heads_waiting - set(look)) | result.heads_waiting
        self._looked = {a: (now if a in look else self._looked.get(a, now)) for a in current}  # borrow-only: not decided whole
        # Fingerprints as read before deciding: whatever changed meanwhile is looked at again next
        # pass, and so is every account that admitted (its jobs may come back to the queue if
        # the cluster cannot take them, which leaves the fingerprint as it was).
        admitting = set(db.session.execute(select(Job.account_id).where(in_ids(Job.id, admitted))).scalars()) \
            if admitted else set()
        db.session.commit()
        self._seen = {a: sig for a, sig in current.items() if a not in admitting}
        return admitted

    def sample_usage(self, now: datetime) -> int:
        return sample_usage(now, self.settings)



class EstimateSchedule:
    """Re-estimates the accounts whose queued or admitted jobs changed since their last estimate
    (or whose estimate is REFRESH_SECONDS old), oldest first, in chunks, within a time budget per
    round; predicted run times are read again every RUNTIMES_SECONDS."""

    REFRESH_SECONDS = 300.0
    RUNTIMES_SECONDS = 300.0
    CHUNK = 20

    def __init__(self, settings: QueueSettings):
        self.settings = settings
        self._runtimes: RunTimes | None = None
        self._runtimes_at = float("-inf")
        self._signatures: dict[int, tuple] = {}
        self._estimated_at: dict[int, float] = {}

    def run(self, now: datetime, monotonic: Callable[[], float], budget: float) -> int:
        """One round (`monotonic` is the clock's, for the budget): the estimates written."""
        mono = monotonic()
        if self._runtimes is None or mono - self._runtimes_at >= self.RUNTIMES_SECONDS:
            self._runtimes, self._runtimes_at = RunTimes(now), mono
            db.session.commit()
        current = signatures(idle_gpus=False)  # estimates do not follow the idle GPUs
        due = sorted((a for a, sig in current.items()
                      if self._signatures.get(a) != sig or mono - self._estimated_at.get(a, -1e18) >= self.REFRESH_SECONDS),
                     key=lambda a: self._estimated_at.get(a, -1e18))
        written = 0
        deadline = mono + budget
        for i in range(0, len(due), self.CHUNK):
            chunk = due[i:i + self.CHUNK]
            written += estimate_pass(now, self.settings, chunk, self._runtimes)
            for a in chunk:
                self._signatures[a], self._estimated_at[a] = current[a], mono
            if monotonic() >= deadline:
                break
        for gone in set(self._signatures) - set(current):
            self._signatures.pop(gone, None)
            self._estimated_at.pop(gone, None)
        return written
