"""The queue's decisions, pure: no DB, no cluster, no clock. Given an account's quotas and its
members' caps, what its admitted jobs hold and the jobs waiting in its queue, they say which
queued jobs to admit now, in what order the rest stand, what each waits for, and (from predicted
run times) when each should start. The web submission and the syncer's admitter both decide
through `decide`, so a submission and the admitter can never disagree about who goes first.

The rules, in the order they apply:

1. **Fair order.** Inside an account the member with the least recent GPU use goes first (GPU-
   seconds with exponential decay, as in Kueue's admission fair sharing); each job taken charges
   its member an entry penalty (GPUs x CRATER_QUEUE_ENTRY_PENALTY_HOURS), so the next job goes to
   whoever is then lowest. A member's own jobs keep their submission order. Ties: submission time.
2. **The head keeps its place.** The first job in that order that does not fit the account's
   quotas becomes the head and holds a reservation (kept across passes, whatever the usage does
   afterwards). A job behind it is admitted only if it fits beside the head's reservation, or if
   its time limit ends before the head can start anyway (the running jobs' time limits say when
   that is at the latest): EASY backfill, so small jobs never starve a big one.
3. **Member limits wait alone.** A job held back only by its member's GPU cap or JupyterLab limit
   waits without reserving anything (the account's other members are not held up). Only the
   member's later jobs that compete for the same limit wait behind it (later GPU jobs behind one
   over the GPU cap, later JupyterLab jobs behind one over the JupyterLab limit); the member's
   other jobs go on. Behind a job that waits for the account's quota, all of the member's later
   jobs keep their submission order.
4. **Capacity under maintenance waits alone.** A GPU job whose model has no schedulable node (every
   node cordoned, drained or not ready) is not admitted: it waits, reserving nothing, until one is
   back; the account's other jobs go on, and the member's later jobs of that model wait behind it.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

ACCOUNT_KINDS = ("gpus", "model", "cpu", "memory", "jobs")


@dataclass(frozen=True)
class Demand:
    """A job as the queue sees it: what it asks (or, admitted, holds) and its times."""
    id: int
    user_id: int
    gpus: int = 0
    gpu_model: str = ""
    cpu_milli: int = 0
    memory_mib: int = 0
    jupyter: bool = False
    time_limit: int = 0  # seconds from its start; 0 = none
    submitted: datetime | None = None
    reserved_at: datetime | None = None  # queued: holds the head since then
    started: datetime | None = None  # admitted: when it started running (None: not yet)
    end: datetime | None = None  # admitted: when it should end (predicted), for estimates


@dataclass(frozen=True)
class Limits:
    """An account's quotas (None: no limit), its members' GPU caps, and the JupyterLab limit."""
    account: str
    gpus: int | None = None
    per_model: dict = field(default_factory=dict)
    cpu_milli: int | None = None
    memory_mib: int | None = None
    jobs: int | None = None
    caps: dict = field(default_factory=dict)  # user id -> GPU cap or None; members only
    jupyter_limit: int | None = None
    maintenance: dict = field(default_factory=dict)  # GPU model ("": every GPU node) -> the admin's reason


@dataclass(frozen=True)
class Blocker:
    """What a job waits for: kind (gpus, model, cpu, memory, jobs, member, jupyter, head,
    behind, nomember, cluster, maintenance), the numbers, for head/behind the job it waits behind,
    and for maintenance the admin's reason (`note`)."""
    kind: str
    used: float = 0
    limit: float = 0
    ask: float = 0
    model: str = ""
    account: str = ""
    job: int = 0
    note: str = ""

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (0, "") or k == "kind"}


class Tally:
    """What admitted jobs hold in one account (and each member's GPUs and JupyterLabs)."""

    def __init__(self, jupyter: dict | None = None):
        self.gpus = self.cpu_milli = self.memory_mib = self.jobs = 0
        self.per_model: dict[str, int] = {}
        self.member_gpus: dict[int, int] = {}
        self.jupyter: dict[int, int] = dict(jupyter or {})  # across all accounts

    def add(self, d: Demand, sign: int = 1, jupyter: bool = True) -> Tally:
        self.gpus += sign * d.gpus
        self.cpu_milli += sign * d.cpu_milli
        self.memory_mib += sign * d.memory_mib
        self.jobs += sign
        if d.gpus:
            self.per_model[d.gpu_model] = self.per_model.get(d.gpu_model, 0) + sign * d.gpus
        self.member_gpus[d.user_id] = self.member_gpus.get(d.user_id, 0) + sign * d.gpus
        if d.jupyter and jupyter:
            self.jupyter[d.user_id] = self.jupyter.get(d.user_id, 0) + sign
        return self

    def copy(self) -> Tally:
        other = Tally(self.jupyter)
        other.gpus, other.cpu_milli, other.memory_mib, other.jobs = self.gpus, self.cpu_milli, self.memory_mib, self.jobs
        other.per_model, other.member_gpus = dict(self.per_model), dict(self.member_gpus)
        return other


def account_blocker(limits: Limits, used: Tally, d: Demand) -> Blocker | None:
    """The first account quota that `d` does not fit beside what `used` holds."""
    name = limits.account
    if limits.gpus is not None and used.gpus + d.gpus > limits.gpus:
        return Blocker("gpus", used.gpus, limits.gpus, d.gpus, account=name)
    model_limit = limits.per_model.get(d.gpu_model)
    if d.gpus and model_limit is not None and used.per_model.get(d.gpu_model, 0) + d.gpus > model_limit:
        return Blocker("model", used.per_model.get(d.gpu_model, 0), model_limit, d.gpus, d.gpu_model, name)
    if limits.cpu_milli is not None and used.cpu_milli + d.cpu_milli > limits.cpu_milli:
        return Blocker("cpu", used.cpu_milli, limits.cpu_milli, d.cpu_milli, account=name)
    if limits.memory_mib is not None and used.memory_mib + d.memory_mib > limits.memory_mib:
        return Blocker("memory", used.memory_mib, limits.memory_mib, d.memory_mib, account=name)
    if limits.jobs is not None and used.jobs + 1 > limits.jobs:
        return Blocker("jobs", used.jobs, limits.jobs, 1, account=name)
    return None


def member_blocker(limits: Limits, used: Tally, d: Demand) -> Blocker | None:
    """The member's own limits: their GPU cap in the account, their JupyterLab limit."""
    if d.user_id not in limits.caps:
        return Blocker("nomember", account=limits.account)
    cap = limits.caps[d.user_id]
    if cap is not None and used.member_gpus.get(d.user_id, 0) + d.gpus > cap:
        return Blocker("member", used.member_gpus.get(d.user_id, 0), cap, d.gpus, account=limits.account)
    if d.jupyter and limits.jupyter_limit is not None and used.jupyter.get(d.user_id, 0) + 1 > limits.jupyter_limit:
        return Blocker("jupyter", used.jupyter.get(d.user_id, 0), limits.jupyter_limit, 1)
    return None


def blocker(limits: Limits, used: Tally, d: Demand) -> Blocker | None:
    return account_blocker(limits, used, d) or member_blocker(limits, used, d)


def never_fits(limits: Limits, d: Demand) -> Blocker | None:
    """A limit that `d` exceeds on its own: it could never start, whatever ends."""
    return blocker(limits, Tally(), d)


def fair_order(queued: list[Demand], scores: dict[int, float], penalty_seconds: float) -> list[Demand]:
    """Every queued job in the order the queue serves them (rule 1, and the held heads first)."""
    heads = sorted((d for d in queued if d.reserved_at is not None), key=lambda d: (d.reserved_at, d.id))
    head_ids = {d.id for d in heads}
    by_member: dict[int, list[Demand]] = {}
    for d in sorted((d for d in queued if d.id not in head_ids), key=lambda d: (d.submitted or datetime.min, d.id)):
        by_member.setdefault(d.user_id, []).append(d)
    score = dict(scores)
    for d in heads:
        score[d.user_id] = score.get(d.user_id, 0.0) + d.gpus * penalty_seconds
    heap = [(score.get(u, 0.0), jobs[0].submitted or datetime.min, jobs[0].id, u, 0) for u, jobs in by_member.items()]
    heapq.heapify(heap)
    order = list(heads)
    while heap:
        s, _submitted, _id, user, i = heapq.heappop(heap)
        d = by_member[user][i]
        order.append(d)
        s += d.gpus * penalty_seconds
        if i + 1 < len(by_member[user]):
            nxt = by_member[user][i + 1]
            heapq.heappush(heap, (s, nxt.submitted or datetime.min, nxt.id, user, i + 1))
    return order


def latest_start(limits: Limits, used: Tally, holding: list[Demand], head: Demand, now: datetime) -> datetime | None:
    """When `head` fits at the latest: the running jobs end by their time limits at the latest
    (a job not started yet counts from now). None: it depends on a job without a time limit."""
    if account_blocker(limits, used, head) is None:
        return now
    left = used.copy()
    ends = []
    for d in holding:
        if not d.time_limit:
            ends.append((datetime.max, d))
        else:
            ends.append((max(now, (d.started or now) + timedelta(seconds=d.time_limit)), d))
    for end, d in sorted(ends, key=lambda e: (e[0], e[1].id)):
        if end == datetime.max:
            return None
        left.add(d, -1, jupyter=False)
        if account_blocker(limits, left, head) is None:
            return end
    return None


@dataclass
class Decision:
    admit: list[Demand]  # now, in this order
    order: list[Demand]  # the jobs still queued, in the queue's order
    blockers: dict[int, Blocker]  # what each of them waits for
    head: Demand | None  # the job holding the reservation


def decide(limits: Limits, used: Tally, queued: list[Demand], scores: dict[int, float], holding: list[Demand],
          now: datetime, penalty_seconds: float = 3600.0, order: list[Demand] | None = None) -> Decision:
    """Which queued jobs start now (rules 1-3). `used` is what `holding` holds (it is not changed)."""
    order = order if order is not None else fair_order(queued, scores, penalty_seconds)
    used = used.copy()
    admitted, waiting, blockers = [], [], {}
    head: Demand | None = None
    head_by: datetime | None = None
    lanes: dict[tuple[int, str], int] = {}  # (member, what they wait for) -> their first waiting job
    for d in order:
        ahead = _ahead(lanes, d)
        if ahead is not None:
            waiting.append(d)
            blockers[d.id] = Blocker("behind", job=ahead, account=limits.account)
            continue
        b = maintenance_blocker(limits, d) or member_blocker(limits, used, d)
        if b is None:
            b = account_blocker(limits, used, d)
            if b is None and head is not None and not _beside(limits, used, d, head, now, head_by):
                b = Blocker("head", job=head.id, account=limits.account)
            if b is not None and head is None:
                head = d
                head_by = latest_start(limits, used, holding + [_held(x, now) for x in admitted], d, now)
        if b is None:
            admitted.append(d)
            used.add(d)
            continue
        waiting.append(d)
        blockers[d.id] = b
        lanes.setdefault((d.user_id, _lane(b)), d.id)
    return Decision(admitted, waiting, blockers, head)


# What a member's waiting job holds their later jobs back from: a JupyterLab limit only their
# later notebooks, a GPU cap only their later GPU jobs, anything else all their later jobs.
LANE_OF = {"jupyter": "jupyter", "member": "gpus", "maintenance": "model"}


def _lane(b: Blocker) -> str:
    lane = LANE_OF.get(b.kind, "all")
    return f"model:{b.model}" if lane == "model" else lane


def _ahead(lanes: dict[tuple[int, str], int], d: Demand) -> int | None:
    """The member's earlier waiting job that `d` must wait behind (None: nothing holds it back)."""
    for lane, applies in (("all", True), ("jupyter", d.jupyter), ("gpus", d.gpus > 0),
                          (f"model:{d.gpu_model}", d.gpus > 0)):
        job = lanes.get((d.user_id, lane))
        if applies and job is not None:
            return job
    return None


def maintenance_blocker(limits: Limits, d: Demand) -> Blocker | None:
    """A GPU job whose model has no schedulable node now (rule 4)."""
    if d.gpus and d.gpu_model in limits.maintenance:
        return Blocker("maintenance", model=d.gpu_model, account=limits.account, note=limits.maintenance[d.gpu_model])
    return None


def _beside(limits: Limits, used: Tally, d: Demand, head: Demand, now: datetime, head_by: datetime | None) -> bool:
    """May `d` start now without delaying the head? It fits beside the head's reservation, or it
    ends (its time limit) before the head could start at the latest."""
    if account_blocker(limits, used.copy().add(head, jupyter=False), d) is None:
        return True
    return bool(d.time_limit) and head_by is not None and now + timedelta(seconds=d.time_limit) <= head_by


def _held(d: Demand, now: datetime) -> Demand:
    return replace(d, started=now)


def estimate(limits: Limits, used: Tally, holding: list[Demand], order: list[Demand], now: datetime,
             duration) -> dict[int, datetime | None]:
    """When each queued job in `order` should start: replay the admission rules at every
    predicted end of an admitted job (`holding` with their `end`; `duration(d)` predicts how long a
    queued job runs). None: not within what the predictions can tell (a job without an end)."""
    starts: dict[int, datetime | None] = {d.id: None for d in order}
    used = used.copy()
    ends = [(d.end, d.id, d) for d in holding if d.end is not None]
    heapq.heapify(ends)
    running = {d.id: d for d in holding}
    remaining = list(order)
    t = now
    for _round in range(len(order) + len(holding) + 1):
        decision = decide(limits, used, remaining, {}, list(running.values()), t, order=remaining)
        for d in decision.admit:
            starts[d.id] = t
            used.add(d)
            run = duration(d)
            started = replace(d, started=t, end=t + timedelta(seconds=run) if run is not None else None)
            running[d.id] = started
            if started.end is not None:
                heapq.heappush(ends, (started.end, d.id, started))
        remaining = decision.order
        if not remaining or not ends:
            break
        t = ends[0][0]
        while ends and ends[0][0] == t:
            _end, job_id, d = heapq.heappop(ends)
            used.add(d, -1)
            running.pop(job_id, None)
    return starts


def decay(value: float, seconds: float, half_life: float) -> float:
    """`value` GPU-seconds, `seconds` later, halving every `half_life` seconds."""
    if seconds <= 0:
        return value
    return value * math.pow(0.5, seconds / half_life)
