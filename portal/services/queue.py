"""The queue, in the database: a submission that fits the account's quotas only later is kept as
a Queued job (no cluster objects) and admitted by the syncer's admitter as soon as the quota
allows, in the fair order of `queue_plan`. What this module reads and writes:

- `load(account_ids)`: an account's quotas, caps, admitted jobs, queued jobs and members' decayed
  usage, for one account (a submission, under its row lock) or for every account with a queue
  (the admitter's pass), in a fixed number of queries whatever the number of accounts;
- `admission_pass`: decide for every account; lock only the accounts where a job can start, decide
  again under the lock (the lock web submissions take), flip those jobs Queued -> Submitting and
  charge their members, commit; the caller then creates their cluster objects (services.jobs);
- place, blocker and reservation of every queued job, written only where they changed;
- `sample_usage`: members' GPU use decayed (half-life), brought up to date for members that hold
  GPUs; `estimate_starts`: predicted starts from run times of the members' past jobs;
- `queue_page`, `outlook`: what the pages show.

The admission step is behind `AdmissionBackend` (the portal's own: `PortalAdmission`), so a
Kueue backend can replace it (see docs/queue.md). Touches the DB only."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from flask_babel import gettext as _
from sqlalchemy import bindparam, case, func, literal, select, update

from ..extensions import db
from ..models import (ACTIVE_STATES, Account, AccountGpuQuota, Job, JobState, JobWarning, Membership, MemberRole,
                      QueueUsage, User)
from ..models import FINAL_STATES
from . import audit
from .context import SYSTEM, Actor
from .errors import Forbidden, NotFound
from .queue_plan import Decision, Demand, Limits, Tally, admit, decay, estimate, fair_order

QUEUED = JobState.QUEUED.value
ESTIMATE_SLACK = 60.0  # an estimate moves on the page only by more than this (or 10 % of the wait)
HISTORY_DAYS = 30
HISTORY_JOBS = 5000
WAIT_SAMPLES = 20  # admitted jobs needed before estimates correct their own bias
WAIT_SAMPLE_MIN = 60  # seconds: shorter predicted waits say little about the bias


@dataclass(frozen=True)
class QueueSettings:
    half_life_seconds: float = 86400.0
    penalty_seconds: float = 3600.0  # GPU-seconds charged per GPU at admission
    jupyter_limit: int | None = None

    @classmethod
    def from_config(cls, config) -> "QueueSettings":
        return cls(half_life_seconds=config.get("QUEUE_HALF_LIFE_HOURS", 24.0) * 3600,
                   penalty_seconds=config.get("QUEUE_ENTRY_PENALTY_HOURS", 1.0) * 3600,
                   jupyter_limit=config.get("MAX_JUPYTER_PER_USER"))


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

    def decide(self, now: datetime, settings: QueueSettings) -> Decision:
        return admit(self.limits, self.used, self.queued, self.scores, self.holding, now, settings.penalty_seconds)


def demand_of(row) -> Demand:
    return Demand(id=row.id, user_id=row.user_id, gpus=row.gpus or 0, gpu_model=row.gpu_model or "",
                  cpu_milli=row.cpu_milli or 0, memory_mib=row.memory_mib or 0, jupyter=row.job_type == "jupyter",
                  time_limit=row.time_limit_seconds or 0, submitted=row.created_at,
                  reserved_at=getattr(row, "queue_reserved_at", None), started=getattr(row, "started_at", None))


DEMAND_COLUMNS = (Job.id, Job.account_id, Job.user_id, Job.gpus, Job.gpu_model, Job.cpu_milli, Job.memory_mib,
                  Job.job_type, Job.time_limit_seconds, Job.created_at)


def _in(column, ids):
    return column.in_(bindparam(column.key + "_ids", list(ids), expanding=True))


def load(account_ids: list[int] | None, now: datetime, settings: QueueSettings) -> dict[int, AccountQueue]:
    """The queue state of these accounts (None: every account with a queued job): seven queries."""
    queued_stmt = select(*DEMAND_COLUMNS, Job.queue_reserved_at, Job.queue_position, Job.queue_blocker).where(
        Job.state == QUEUED)
    if account_ids is not None:
        queued_stmt = queued_stmt.where(_in(Job.account_id, account_ids))
    queued_rows = list(db.session.execute(queued_stmt.order_by(Job.id)))
    ids = sorted(set(account_ids) if account_ids is not None else {r.account_id for r in queued_rows})
    if not ids:
        return {}
    accounts = {a.id: a for a in db.session.execute(
        select(Account.id, Account.name, Account.gpu_quota, Account.cpu_quota, Account.memory_quota_gib,
               Account.max_jobs, Account.expires_on).where(_in(Account.id, ids)))}
    models: dict[int, dict] = {}
    for account_id, model, gpus in db.session.execute(select(AccountGpuQuota.account_id, AccountGpuQuota.gpu_model,
                                                             AccountGpuQuota.gpus).where(_in(AccountGpuQuota.account_id, ids))):
        models.setdefault(account_id, {})[model] = gpus
    caps: dict[int, dict] = {}
    for account_id, user_id, cap in db.session.execute(select(Membership.account_id, Membership.user_id,
                                                              Membership.gpu_cap).where(_in(Membership.account_id, ids))):
        caps.setdefault(account_id, {})[user_id] = cap
    holding_rows = list(db.session.execute(select(*DEMAND_COLUMNS, Job.started_at).where(
        _in(Job.account_id, ids), Job.state.in_(ACTIVE_STATES))))
    jupyter_users = {r.user_id for r in queued_rows if r.job_type == "jupyter"}
    jupyter = dict(db.session.execute(select(Job.user_id, func.count(Job.id)).where(
        _in(Job.user_id, jupyter_users), Job.job_type == "jupyter", Job.state.in_(ACTIVE_STATES))
        .group_by(Job.user_id)).all()) if jupyter_users else {}
    scores: dict[int, dict] = {}
    for account_id, user_id, value, as_of in db.session.execute(select(
            QueueUsage.account_id, QueueUsage.user_id, QueueUsage.gpu_seconds, QueueUsage.as_of).where(
            _in(QueueUsage.account_id, ids))):
        scores.setdefault(account_id, {})[user_id] = decay(value, (now - as_of).total_seconds(), settings.half_life_seconds)
    result: dict[int, AccountQueue] = {}
    for account_id in ids:
        a = accounts.get(account_id)
        if a is None:
            continue
        limits = Limits(account=a.name, gpus=a.gpu_quota, per_model=models.get(account_id, {}),
                        cpu_milli=a.cpu_quota * 1000 if a.cpu_quota is not None else None,
                        memory_mib=a.memory_quota_gib * 1024 if a.memory_quota_gib is not None else None,
                        jobs=a.max_jobs, caps=caps.get(account_id, {}), jupyter_limit=settings.jupyter_limit)
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


def jupyter_count(user_id: int) -> int:
    """The user's admitted JupyterLab jobs in all accounts."""
    return int(db.session.execute(select(func.count(Job.id)).where(
        Job.user_id == user_id, Job.job_type == "jupyter", Job.state.in_(ACTIVE_STATES))).scalar_one())


# ---- the admitter's pass ------------------------------------------------------------------------

class AdmissionBackend(Protocol):
    """What the syncer's admitter calls on every pass, in the leading replica. The portal's own
    backend decides in the database (below); a Kueue backend would instead create queued jobs as
    suspended Jobs in a LocalQueue and only report what Kueue admitted (docs/queue.md)."""

    def admission_pass(self, now: datetime) -> list[int]:
        """Admit what can start now; return the job ids whose cluster objects are to be created."""

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

    def admission_pass(self, now: datetime) -> list[int]:
        current = signatures()
        first = not self._looked
        changed = {a for a, sig in current.items() if first or self._seen.get(a) != sig}
        stale = sorted((a for a in current if a not in changed and
                        (now - self._looked.get(a, datetime.min)).total_seconds() >= self.FULL_PASS_SECONDS),
                       key=lambda a: self._looked.get(a, datetime.min))
        look = sorted(changed | set(stale[:max(1, -(-len(current) // self.SLICES))]))
        admitted = admission_pass(now, self.settings, look)
        self._looked = {a: (now if a in look else self._looked.get(a, now)) for a in current}
        # Fingerprints as read before deciding: whatever changed meanwhile is looked at again next
        # pass, and so is every account that admitted (its jobs may come back to the queue if
        # the cluster cannot take them, which leaves the fingerprint as it was).
        admitting = set(db.session.execute(select(Job.account_id).where(_in(Job.id, admitted))).scalars()) \
            if admitted else set()
        db.session.commit()
        self._seen = {a: sig for a, sig in current.items() if a not in admitting}
        return admitted

    def sample_usage(self, now: datetime) -> int:
        return sample_usage(now, self.settings)


def admission_pass(now: datetime, settings: QueueSettings, account_ids: list[int] | None = None) -> list[int]:
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
            admitted += _admit_locked(account_id, now, settings)
        else:
            _show(q, decision, now)
    db.session.commit()
    return admitted


def _admit_locked(account_id: int, now: datetime, settings: QueueSettings) -> list[int]:
    """Under the account's row lock (as a web submission takes it): decide again from fresh rows,
    flip the chosen jobs Queued -> Submitting (guarded: a job cancelled meanwhile stays cancelled)
    and charge their members; commit."""
    from .quota import lock_account, lock_users
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
            result = db.session.execute(update(Job).where(Job.id == d.id, Job.state == QUEUED).values(
                state=JobState.SUBMITTING.value, reason="", message="", admitted_at=now, queue_position=None,
                queue_blocker=None, queue_estimate=None, queue_reserved_at=None, version=Job.version + 1))
            if result.rowcount == 1:
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
    _write_queued(changes, {"pos": "queue_position", "blocker": "queue_blocker", "reserved": "queue_reserved_at"})
    return len(changes)


def _write_queued(changes: list[dict], columns: dict[str, str]) -> None:
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


def requeue(job_id: int, why: str) -> bool:
    """An admitted job whose cluster objects could not be created now (the API away) goes back to
    the queue, at the head (guarded: only from Submitting). The caller commits."""
    result = db.session.execute(update(Job).where(Job.id == job_id, Job.state == JobState.SUBMITTING.value).values(
        state=QUEUED, reason="", admitted_at=None, queue_blocker={"kind": "cluster", "error": why[:300]},
        queue_reserved_at=Job.created_at, version=Job.version + 1))
    return result.rowcount == 1


# ---- members' decayed usage ---------------------------------------------------------------------

def charge(account_id: int, user_id: int, gpu_seconds: float, now: datetime, settings: QueueSettings) -> None:
    """Add GPU-seconds to a member's decayed usage (the caller commits)."""
    row = db.session.get(QueueUsage, (account_id, user_id))
    if row is None:
        db.session.add(QueueUsage(account_id=account_id, user_id=user_id, gpu_seconds=gpu_seconds, as_of=now))
        return
    row.gpu_seconds = decay(row.gpu_seconds, (now - row.as_of).total_seconds(), settings.half_life_seconds) + gpu_seconds
    row.as_of = now


def sample_usage(now: datetime, settings: QueueSettings, max_gap: float = 86400.0) -> int:
    """Bring up to date the usage of every member that holds GPUs now: decayed to now, plus what
    they held since the last update (at most `max_gap` seconds of it). Members that hold nothing
    are not written: their value decays when read. One transaction."""
    held = db.session.execute(select(Job.account_id, Job.user_id, func.sum(Job.gpus)).where(
        Job.state == JobState.RUNNING.value, Job.gpus > 0).group_by(Job.account_id, Job.user_id)).all()
    if not held:
        db.session.commit()
        return 0
    keys = {(a, u) for a, u, _g in held}
    rows = {(r.account_id, r.user_id): r for r in db.session.execute(select(QueueUsage).where(
        _in(QueueUsage.account_id, {a for a, _u in keys}))).scalars() if (r.account_id, r.user_id) in keys}
    for account_id, user_id, gpus in held:
        row = rows.get((account_id, user_id))
        if row is None:
            db.session.add(QueueUsage(account_id=account_id, user_id=user_id, gpu_seconds=0.0, as_of=now))
            continue
        gap = min(max(0.0, (now - row.as_of).total_seconds()), max_gap)
        row.gpu_seconds = decay(row.gpu_seconds, gap, settings.half_life_seconds) + int(gpus) * gap
        row.as_of = now
    db.session.commit()
    return len(held)


# ---- estimated starts ---------------------------------------------------------------------------

class RunTimes:
    """Predicted run times from the last HISTORY_DAYS of ended jobs: the median run time of the
    member's jobs of that type, else of everyone's of that type, never beyond the time limit;
    without any history, the time limit itself."""

    def __init__(self, now: datetime):
        rows = db.session.execute(select(Job.user_id, Job.job_type, Job.started_at, Job.finished_at).where(
            Job.state.in_(FINAL_STATES), Job.finished_at > now - timedelta(days=HISTORY_DAYS),
            Job.started_at.is_not(None)).order_by(Job.finished_at.desc()).limit(HISTORY_JOBS))
        mine: dict[tuple, list] = {}
        everyone: dict[str, list] = {}
        for user_id, job_type, started, finished in rows:
            seconds = (finished - started).total_seconds()
            if seconds > 0:
                mine.setdefault((user_id, job_type), []).append(seconds)
                everyone.setdefault(job_type, []).append(seconds)
        self.mine = {k: statistics.median(v) for k, v in mine.items()}
        self.everyone = {k: statistics.median(v) for k, v in everyone.items()}
        # How the actual waits of the last day's admitted jobs compared with what their first
        # estimates said (later arrivals of members with less recent use go ahead, so raw
        # estimates lean early): the median ratio, within [1/3, 3], once there are enough.
        ratios = [(started - created).total_seconds() / first for created, started, first in db.session.execute(
            select(Job.created_at, Job.started_at, Job.queue_first_wait).where(
                Job.admitted_at > now - timedelta(days=1), Job.admitted_at <= now, Job.started_at.is_not(None),
                Job.queue_first_wait >= WAIT_SAMPLE_MIN).order_by(Job.admitted_at.desc()).limit(HISTORY_JOBS))]
        self.wait_ratio = min(3.0, max(1 / 3, statistics.median(ratios))) if len(ratios) >= WAIT_SAMPLES else 1.0

    def predict(self, d: Demand, job_type: str) -> float | None:
        guess = self.mine.get((d.user_id, job_type), self.everyone.get(job_type))
        if guess is None:
            return float(d.time_limit) if d.time_limit else None
        return min(guess, d.time_limit) if d.time_limit else guess


def estimate_starts(q: AccountQueue, now: datetime, settings: QueueSettings, runs: RunTimes,
                    idle_stops: dict[int, datetime]) -> dict[int, datetime | None]:
    """Predicted start of each of the account's queued jobs: admitted jobs end when their members'
    jobs usually end (or when the idle-GPU policy stops them, or at their time limit), and the
    queue's rules are replayed at each of those ends."""
    holding = []
    for d in q.holding:
        run = runs.predict(d, q.types.get(d.id, ""))
        deadline = (d.started or now) + timedelta(seconds=d.time_limit) if d.time_limit else None
        end = (d.started or now) + timedelta(seconds=run) if run is not None else None
        if end is not None and end < now + timedelta(seconds=ESTIMATE_SLACK):  # overdue: soon, not never
            end = now + timedelta(seconds=max(ESTIMATE_SLACK, 0.1 * run))
        if deadline is not None:
            end = min(end or deadline, max(deadline, now))
        if d.id in idle_stops:
            end = min(end or idle_stops[d.id], max(idle_stops[d.id], now))
        holding.append(replace(d, end=end))
    order = fair_order(q.queued, q.scores, settings.penalty_seconds)
    return estimate(q.limits, q.used, holding, order, now, lambda d: runs.predict(d, q.types.get(d.id, "")))


def idle_stops(job_ids) -> dict[int, datetime]:
    if not job_ids:
        return {}
    return dict(db.session.execute(select(JobWarning.job_id, JobWarning.act_at).where(
        _in(JobWarning.job_id, job_ids), JobWarning.kind == "idle_gpu", JobWarning.act_at.is_not(None))).all())


def write_estimates(starts: dict[int, datetime | None], shown: dict[int, tuple], now: datetime,
                    ratio: float = 1.0) -> int:
    """Write the estimates (raw starts stretched by the learned `ratio`) that moved by more than
    ESTIMATE_SLACK or 10 % of the wait; a job's first estimate also keeps its raw wait. `shown`:
    job -> (estimate shown, raw first wait, submitted). The caller commits."""
    changes, firsts = [], []
    for job_id, raw in starts.items():
        old, first_wait, submitted = shown.get(job_id, (None, None, now))
        start = now + (raw - now) * ratio if raw is not None else None
        if first_wait is None and raw is not None:
            firsts.append({"jid": job_id, "first": max(0, int((raw - submitted).total_seconds()))})
        if start is None and old is None:
            continue
        if start is not None and old is not None:
            slack = max(ESTIMATE_SLACK, 0.1 * (start - now).total_seconds())
            if abs((start - old).total_seconds()) <= slack:
                continue
        changes.append({"jid": job_id, "est": start})
    _write_queued(changes, {"est": "queue_estimate"})
    _write_queued(firsts, {"first": "queue_first_wait"})
    return len(changes)


def estimate_pass(now: datetime, settings: QueueSettings, account_ids: list[int] | None, runs: RunTimes) -> int:
    """Estimate and write the starts of the given accounts' queued jobs (None: every queue)."""
    queues = load(account_ids, now, settings)
    stops = idle_stops([d.id for q in queues.values() for d in q.holding])
    shown = {r.id: (r.queue_estimate, r.queue_first_wait, r.created_at) for r in db.session.execute(
        select(Job.id, Job.queue_estimate, Job.queue_first_wait, Job.created_at).where(
            Job.state == QUEUED, _in(Job.account_id, list(queues))))} if queues else {}
    written = 0
    for q in queues.values():
        written += write_estimates(estimate_starts(q, now, settings, runs, stops), shown, now, runs.wait_ratio)
    db.session.commit()
    return written


def signatures() -> dict[int, tuple]:
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
        Account.id, Account.gpu_quota, Account.cpu_quota, Account.memory_quota_gib, Account.max_jobs, Account.expires_on)
        .where(_in(Account.id, queued)))}
    caps = {r[0]: tuple(r[1:]) for r in db.session.execute(select(
        Membership.account_id, func.count(Membership.id), func.sum(func.coalesce(Membership.gpu_cap, -1)),
        func.max(Membership.id)).where(_in(Membership.account_id, queued)).group_by(Membership.account_id))}
    models = {r[0]: tuple(r[1:]) for r in db.session.execute(select(
        AccountGpuQuota.account_id, func.count(AccountGpuQuota.id), func.sum(AccountGpuQuota.gpus),
        func.max(AccountGpuQuota.id)).where(_in(AccountGpuQuota.account_id, queued)).group_by(AccountGpuQuota.account_id))}
    db.session.commit()
    return {a: (int(n), int(v or 0), int(q), int(ids), accounts.get(a), caps.get(a), models.get(a))
            for a, n, v, q, ids in jobs if a in queued}


# ---- what the pages show ----------------------------------------------------------------------

@dataclass(frozen=True)
class Standing:
    position: int | None
    waiting: int
    blocker: dict | None
    estimate: datetime | None
    reserved: bool


def standing(job: Job) -> Standing | None:
    """A queued job's place among its account's queued jobs, what it waits for, its estimate."""
    if job.state != QUEUED:
        return None
    waiting = db.session.execute(select(func.count(Job.id)).where(
        Job.account_id == job.account_id, Job.state == QUEUED)).scalar_one()
    return Standing(job.queue_position, int(waiting), job.queue_blocker, job.queue_estimate, job.queue_reserved_at is not None)


def queued_counts(account_ids: list[int]) -> dict[int, int]:
    """How many jobs wait in each of these accounts' queues (absent: none): one grouped count."""
    if not account_ids:
        return {}
    return {a: int(n) for a, n in db.session.execute(select(Job.account_id, func.count(Job.id)).where(
        Job.state == QUEUED, _in(Job.account_id, account_ids)).group_by(Job.account_id)).all()}


def queue_accounts(actor: Actor, page: int = 1, per_page: int = 50):
    """A page of the accounts whose queues the actor sees listed (every account for admins, their
    own for members), each with its queue's length and whether the actor may open it (managers,
    admins): the page, and one grouped count for the page's accounts."""
    from .pagination import paginate
    if actor.is_admin:
        stmt = select(Account.id, Account.name, literal(MemberRole.MANAGER.value).label("role")).order_by(Account.name)
    else:
        stmt = (select(Account.id, Account.name, Membership.role).join(Membership, Membership.account_id == Account.id)
                .where(Membership.user_id == actor.user.id).order_by(Account.name))
    result = paginate(stmt, page, per_page, rows="tuples")
    ids = [r[0] for r in result.items]
    counts = queued_counts(ids)
    result.items = [{"id": i, "name": name, "manager": role == MemberRole.MANAGER.value, "queued": counts.get(i, 0)}
                    for i, name, role in result.items]
    return result


@dataclass
class QueuePage:
    account: Account
    rows: list[dict]  # per queued job in the queue's order: job, owner, blocker, estimate, score
    members: list[dict]  # per member with usage: username, GPU-hours now, held GPUs
    total: int
    page: int
    pages: int


def queue_page(actor: Actor, account_id: int, now: datetime, settings: QueueSettings, page: int = 1,
               per_page: int = 50) -> QueuePage:
    """One account's queue for its managers and admins: the order and the usage that decides it."""
    from .accounts import is_manager
    account = db.session.get(Account, account_id)
    if account is None:
        raise NotFound(_("No such account."))
    if not (actor.is_admin or (actor.user is not None and is_manager(actor.user, account_id))):
        raise Forbidden(_("Only the account's managers and administrators see its queue."))
    q = load([account_id], now, settings).get(account_id)
    order = fair_order(q.queued, q.scores, settings.penalty_seconds) if q else []
    total = len(order)
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    shown = order[(page - 1) * per_page:page * per_page]
    jobs = {j.id: j for j in db.session.execute(select(Job.id, Job.display_name, Job.job_type, Job.gpus, Job.gpu_model,
                                                       Job.created_at, Job.queue_blocker, Job.queue_estimate,
                                                       Job.queue_reserved_at, Job.user_id).where(
        _in(Job.id, [d.id for d in shown]))).mappings()} if shown else {}
    users = {u.id: u.username for u in db.session.execute(select(User.id, User.username).where(
        _in(User.id, {d.user_id for d in order} | set(q.scores if q else {}) | {d.user_id for d in (q.holding if q else [])})))} \
        if q else {}
    rows = []
    for i, d in enumerate(shown, (page - 1) * per_page + 1):
        j = jobs.get(d.id)
        if j is not None:
            rows.append({"position": i, "job": j, "owner": users.get(d.user_id, "?"),
                         "score_hours": (q.scores.get(d.user_id, 0.0)) / 3600})
    held: dict[int, int] = {}
    for d in q.holding if q else []:
        held[d.user_id] = held.get(d.user_id, 0) + d.gpus
    members = sorted(({"username": users.get(u, "?"), "hours": (q.scores.get(u, 0.0)) / 3600, "held": held.get(u, 0),
                       "queued": sum(1 for d in order if d.user_id == u)}
                      for u in set(q.scores) | set(held) | {d.user_id for d in order}), key=lambda m: (m["hours"], m["username"])) if q else []
    return QueuePage(account, rows, members, total, page, pages)
