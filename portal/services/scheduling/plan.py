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
5. **The cluster must hold it (gang admission).** When the node inventory is known, a GPU job is
   admitted only if every one of its pods fits at once on schedulable nodes of its model (best
   fit, one pod per worker), beside the GPUs already held by admitted jobs whose pods are not
   bound yet. Cordoned nodes, and nodes reserved for another account, count as not free. A job
   that fits its quota but not the cluster becomes the head (kind `capacity`, or `fragmented` when
   enough GPUs are free in total but not on few enough nodes), and the account's later jobs of
   that model start only on GPUs the head could not use anyway (they leave as many places for its
   pods); the member's later jobs are not held back by it otherwise.
6. **Guaranteed and borrowed.** An account's GPU quota is its guaranteed share. A GPU job held
   back only by the account's GPU quota (total or per model) may run *borrowed*, beyond it, when
   its owner chose so (or the account always borrows, as the Default account does beyond its own
   guarantee), JupyterLab only where the account allows it: within the account's borrowing limit,
   on GPUs free now beyond those that lenders keep back (their lending limit, as far as their own
   guarantee is unused) and beyond those reserved for in-quota jobs waiting for the cluster (on the
   nodes where they will run: idle GPUs elsewhere are lent); never before
   its backoff after a preemption. Borrowing is tried only after every account's in-quota jobs
   (`borrowing=True` in a later round). A borrower waits alone, without reserving anything: the
   member's later jobs that fit the idle GPUs (or the guarantee) go on.
7. **Reclassification.** A borrowed job becomes an in-quota job, oldest first, as soon as it fits
   its account's guarantee beside the in-quota jobs (`reclassify`).
8. **Reclaim.** An in-quota job that fits its guarantee and waits only because other accounts'
   borrowed jobs hold the GPUs gets the fewest of them preempted that make it fit (`reclaim`: a
   distributed job is taken whole; on the nodes where it will then run), preferring the account
   furthest above its guarantee and the most recently started; never an in-quota job, never a
   job preempted as often as the bound allows, never one that ran less than the minimum run time
   unless the reclaiming job waited past the owner's bound, and never a job that this job itself
   once preempted (no cycles).
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
    workers: int = 1  # pods; each holds gpus // workers GPUs
    borrow: bool = False  # queued: its owner lets it run beyond the guarantee (may be preempted)
    borrowed: bool = False  # admitted: it runs beyond the guarantee
    not_before: datetime | None = None  # queued: not admitted as borrowed before (backoff)
    preemptions: int = 0  # how often it was preempted
    nodes: tuple = ()  # admitted: ((node, GPUs), ...) where its pods are bound
    account: str = ""  # admitted borrowed jobs seen by reclaim: their account
    preempted: frozenset = frozenset()  # the jobs it once preempted (never preempted by them)

    @property
    def per_worker(self) -> int:
        return self.gpus // max(1, self.workers)


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
    borrow_limit: int | None = None  # GPUs it may borrow at once (None: as many as are idle)
    borrow_jupyter: bool = False  # JupyterLab jobs may borrow
    always_borrow: bool = False  # GPU jobs beyond the guarantee borrow whatever their owner chose


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
        self.borrowed = 0  # GPUs held beyond the guarantee (not in gpus / per_model)
        self.per_model: dict[str, int] = {}
        self.member_gpus: dict[int, int] = {}
        self.jupyter: dict[int, int] = dict(jupyter or {})  # across all accounts

    def add(self, d: Demand, sign: int = 1, jupyter: bool = True) -> Tally:
        self.cpu_milli += sign * d.cpu_milli
        self.memory_mib += sign * d.memory_mib
        self.jobs += sign
        if d.borrowed:
            self.borrowed += sign * d.gpus
        else:
            self.gpus += sign * d.gpus
            if d.gpus:
                self.per_model[d.gpu_model] = self.per_model.get(d.gpu_model, 0) + sign * d.gpus
        self.member_gpus[d.user_id] = self.member_gpus.get(d.user_id, 0) + sign * d.gpus
        if d.jupyter and jupyter:
            self.jupyter[d.user_id] = self.jupyter.get(d.user_id, 0) + sign
        return self

    def copy(self) -> Tally:
        other = Tally(self.jupyter)
        other.gpus, other.cpu_milli, other.memory_mib, other.jobs = self.gpus, self.cpu_milli, self.memory_mib, self.jobs
        other.borrowed = self.borrowed
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
          now: datetime, penalty_seconds: float = 3600.0, order: list[Demand] | None = None,
          capacity: Capacity | None = None, borrowing: bool = False) -> Decision:
    """Which queued jobs start now (rules 1-6). `used` is what `holding` holds (it is not changed);
    `capacity` (None: the node inventory is unknown, quotas alone decide) is taken from as jobs are
    admitted; with `borrowing`, jobs beyond the guarantee may borrow idle GPUs (rule 6)."""
    order = order if order is not None else fair_order(queued, scores, penalty_seconds)
    used = used.copy()
    admitted, waiting, blockers = [], [], {}
    head: Demand | None = None
    head_by: datetime | None = None
    lanes: dict[tuple[int, str], Demand] = {}  # (member, what they wait for) -> their first waiting job
    for d in order:
        ahead = _ahead(lanes, d)
        if ahead is not None:
            waiting.append(d)
            blockers[d.id] = Blocker("behind", job=ahead, account=limits.account)
            continue
        placed: dict | None = {}
        b = maintenance_blocker(limits, d) or member_blocker(limits, used, d)
        if b is None:
            b = account_blocker(limits, used, d)
            if b is not None and b.kind in ("gpus", "model") and may_borrow(limits, d):
                b, placed = _borrow(limits, used, d, capacity, now, borrowing)
                if b is None:
                    d = replace(d, borrowed=True)
                    if capacity is not None:
                        capacity.take(placed, d.id)
                    admitted.append(d)
                    used.add(d)
                    continue
                waiting.append(d)  # a borrower waits alone: the member's smaller jobs may fit idle GPUs meanwhile
                blockers[d.id] = b
                continue
            if b is None and head is not None and not _beside(limits, used, d, head, blockers[head.id], now, head_by, capacity):
                b = Blocker("head", job=head.id, account=limits.account)
            if b is None and capacity is not None and d.gpus:
                placed = capacity.place(d, limits.account)
                if placed is None:
                    b = capacity.blocker(d, limits.account)
            if b is not None and head is None:
                head = d
                head_by = latest_start(limits, used, holding + [_held(x, now) for x in admitted], d, now)
        if b is None:
            if capacity is not None:
                capacity.take(placed, d.id)
            admitted.append(d)
            used.add(d)
            continue
        waiting.append(d)
        blockers[d.id] = b
        # Waiting for the cluster (or behind a head that does) holds back none of the member's later
        # jobs: the head rule alone keeps them off the GPUs the head waits for.
        cluster_head = b.kind == "head" and head is not None and blockers[head.id].kind in CLUSTER_KINDS
        if not cluster_head and _lane(b) != "none":
            lanes.setdefault((d.user_id, _lane(b)), d)
    return Decision(admitted, waiting, blockers, head)


def may_borrow(limits: Limits, d: Demand) -> bool:
    """May `d` run beyond its account's guarantee (rule 6)?"""
    return d.gpus > 0 and (d.borrow or limits.always_borrow) and (not d.jupyter or limits.borrow_jupyter) \
        and limits.borrow_limit != 0


def _borrow(limits: Limits, used: Tally, d: Demand, capacity: Capacity | None, now: datetime,
            borrowing: bool) -> tuple[Blocker | None, dict | None]:
    """None and where it goes when `d` may borrow now; else what it waits for."""
    name = limits.account
    if d.not_before is not None and d.not_before > now:
        return Blocker("backoff", ask=d.gpus, account=name, note=d.not_before.isoformat(timespec="seconds")), None
    if limits.borrow_limit is not None and used.borrowed + d.gpus > limits.borrow_limit:
        return Blocker("borrow_limit", used.borrowed, limits.borrow_limit, d.gpus, account=name), None
    if capacity is None:  # the inventory is unknown: the cluster decides
        return (None, {}) if borrowing else (Blocker("borrow", ask=d.gpus, model=d.gpu_model, account=name), None)
    # The blocker leaves out how many GPUs are idle: it would change, and be written again, on
    # every pass in a busy cluster.
    placed = capacity.place(d, name, borrowing=True) if borrowing else None
    if placed is None:
        return Blocker("borrow", ask=d.gpus, model=d.gpu_model, account=name), None
    return None, placed


# What a member's waiting job holds their later jobs back from: a JupyterLab limit only their
# later notebooks, a GPU cap only their later GPU jobs, anything else all their later jobs.
LANE_OF = {"jupyter": "jupyter", "member": "gpus", "maintenance": "model", "capacity": "none", "fragmented": "none",
           "reclaim": "none"}
CLUSTER_KINDS = ("capacity", "fragmented", "reclaim")  # an in-quota job waiting for the cluster's GPUs


def _lane(b: Blocker) -> str:
    lane = LANE_OF.get(b.kind, "all")
    return f"model:{b.model}" if lane == "model" else lane


def _ahead(lanes: dict[tuple[int, str], Demand], d: Demand) -> int | None:
    """The member's earlier waiting job that `d` must wait behind (None: nothing holds it back).
    Only a job submitted before `d` holds it back: a head served first does not push back the
    member's jobs submitted before it (a preempted job keeps its place)."""
    for lane, applies in (("all", True), ("jupyter", d.jupyter), ("gpus", d.gpus > 0),
                          (f"model:{d.gpu_model}", d.gpus > 0)):
        job = lanes.get((d.user_id, lane))
        if applies and job is not None and _key(job) < _key(d):
            return job.id
    return None


def _key(d: Demand) -> tuple:
    return (d.submitted or datetime.min, d.id)


def maintenance_blocker(limits: Limits, d: Demand) -> Blocker | None:
    """A GPU job whose model has no schedulable node now (rule 4)."""
    if d.gpus and d.gpu_model in limits.maintenance:
        return Blocker("maintenance", model=d.gpu_model, account=limits.account, note=limits.maintenance[d.gpu_model])
    return None


def _beside(limits: Limits, used: Tally, d: Demand, head: Demand, head_blocker: Blocker, now: datetime,
            head_by: datetime | None, capacity: Capacity | None = None) -> bool:
    """May `d` start now without delaying the head? It fits beside the head's reservation, or it
    ends (its time limit) before the head could start at the latest. Behind a head waiting for the
    cluster, a job of its GPU model starts only on GPUs the head could not use anyway (it leaves as
    many places for the head's pods as there are now)."""
    if head_blocker.kind in CLUSTER_KINDS:
        if not d.gpus or (bool(head.gpu_model) and d.gpu_model != head.gpu_model):
            return True
        if capacity is None:
            return False
        placed = capacity.place(d, limits.account)
        if placed is None:
            return True  # it does not fit either: the cluster check says so
        after = capacity.copy()
        after.take(placed)
        return after.slots(head, limits.account) == capacity.slots(head, limits.account)
    if account_blocker(limits, used.copy().add(head, jupyter=False), d) is None:
        return True
    return bool(d.time_limit) and head_by is not None and now + timedelta(seconds=d.time_limit) <= head_by


@dataclass
class Room:
    """A node as admission sees it: its GPU model, GPUs free now, the account it is reserved for."""
    model: str
    free: int
    reserved_for: str = ""


class Capacity:
    """The cluster's free GPUs per node (rule 5): schedulable nodes only; `held` are GPUs promised to
    admitted jobs whose pods are not bound yet, per job id as (model, GPUs), on no node in
    particular; `reserved` are free GPUs kept for an in-quota job waiting for the cluster on the
    nodes where it will run (`reserve`), so that other jobs may use the idle GPUs elsewhere;
    `protected` are GPUs that lenders never lend. Mutable: a decision takes what it admits."""

    def __init__(self, nodes: dict[str, Room], held: dict[int, tuple[str, int]] | None = None, protected: int = 0):
        self.nodes = nodes
        self.held = dict(held or {})
        self.reserved: dict[int, dict[str, int]] = {}
        self.protected = protected
        self._changed()

    def _changed(self) -> None:
        """Sums are kept until the next take or give: a pass asks far more than it changes."""
        self._sums: dict[tuple[str, str], int] = {}
        self._held_by_model: dict[str, int] | None = None

    def copy(self) -> Capacity:
        other = Capacity({n: replace(r) for n, r in self.nodes.items()}, self.held, self.protected)
        other.reserved = {job: dict(on) for job, on in self.reserved.items()}
        return other

    def reserve(self, d: Demand, account: str) -> None:
        """Keep free GPUs for `d` (an in-quota job waiting for the cluster) on the nodes where it
        will run: for each of its pods, the usable node with the most free GPUs, as many as the
        pod asks or the node has. The GPUs it still lacks there are what reclaim (or jobs ending)
        must free; the idle GPUs on other nodes stay free for others."""
        if not d.gpus or d.id in self.reserved:
            return
        on: dict[str, int] = {}
        for _worker in range(max(1, d.workers)):
            usable = [(r.free, n) for n, r in self.nodes.items() if self._usable(r, d.gpu_model, account) and r.free > 0]
            if not usable:
                break
            _free, node = min(usable, key=lambda x: (-x[0], x[1]))
            g = min(d.per_worker or d.gpus, self.nodes[node].free)
            self.nodes[node].free -= g
            on[node] = on.get(node, 0) + g
        self.reserved[d.id] = on
        self._changed()

    def _own(self, job: int, node: str) -> int:
        return self.reserved.get(job, {}).get(node, 0) if job else 0

    def room(self, node: str, job: int = 0) -> int:
        """GPUs free on `node` for `job` (its own reservation counts as free for it)."""
        return self.nodes[node].free + self._own(job, node)

    def _usable(self, room: Room, model: str, account: str) -> bool:
        return (not model or room.model == model) and room.reserved_for in ("", account)

    def _held_for(self, model: str, but: int = 0) -> int:
        if self._held_by_model is None:
            self._held_by_model = {}
            for m, g in self.held.values():
                self._held_by_model[m] = self._held_by_model.get(m, 0) + g
        total = sum(g for m, g in self._held_by_model.items() if not model or not m or m == model)
        own = self.held.get(but)
        if own is not None and (not model or not own[0] or own[0] == model):
            total -= own[1]
        return total

    def free(self, model: str, account: str, but: int = 0) -> int:
        """GPUs of `model` ("" any) free for `account`, less those held for other jobs than `but`."""
        key = (model, account)
        if key not in self._sums:
            self._sums[key] = sum(r.free for r in self.nodes.values() if self._usable(r, model, account))
        own = sum(g for n, g in self.reserved.get(but, {}).items() if self._usable(self.nodes[n], model, account)) if but else 0
        return self._sums[key] + own - self._held_for(model, but)

    def total(self, but: int = 0) -> int:
        if ("*", "*") not in self._sums:
            self._sums[("*", "*")] = sum(r.free for r in self.nodes.values())
        own = sum(self.reserved.get(but, {}).values()) if but else 0
        return self._sums[("*", "*")] + own - self._held_for("", but)

    def place(self, d: Demand, account: str, borrowing: bool = False) -> dict[str, int] | None:
        """Where every pod of `d` goes at once (best fit; identical pods, so greedy places as many as
        can fit), or None. A borrower also leaves the protected GPUs free."""
        if not d.gpus:
            return {}
        if self.free(d.gpu_model, account, but=d.id) < d.gpus:
            return None
        if borrowing and self.total(but=d.id) - d.gpus < self.protected:
            return None
        per = d.per_worker
        rooms = {n: r.free + self._own(d.id, n) for n, r in self.nodes.items() if self._usable(r, d.gpu_model, account)}
        placed: dict[str, int] = {}
        for _worker in range(max(1, d.workers)):
            fits = [n for n, free in rooms.items() if free >= per]
            if not fits:
                return None
            node = min(fits, key=lambda n: (rooms[n], n))
            rooms[node] -= per
            placed[node] = placed.get(node, 0) + per
        return placed

    def slots(self, d: Demand, account: str) -> int:
        """How many of `d`'s pods fit the free GPUs now."""
        per = max(1, d.per_worker)
        return sum(max(0, r.free + self._own(d.id, n)) // per for n, r in self.nodes.items()
                   if self._usable(r, d.gpu_model, account))

    def blocker(self, d: Demand, account: str) -> Blocker:
        free = max(0, self.free(d.gpu_model, account, but=d.id))
        kind = "fragmented" if free >= d.gpus else "capacity"
        return Blocker(kind, free, 0, d.gpus, d.gpu_model, account)

    def take(self, placed: dict[str, int] | None, job: int = 0) -> None:
        self._unreserve(job)
        for node, gpus in (placed or {}).items():
            self.nodes[node].free -= gpus
        self.held.pop(job, None)
        self._changed()

    def give(self, d: Demand) -> None:
        """`d` leaves: its GPUs on nodes are free again (those not bound yet were held)."""
        self._unreserve(d.id)
        for node, gpus in d.nodes:
            if node in self.nodes:
                self.nodes[node].free += gpus
        self.held.pop(d.id, None)
        self._changed()

    def _unreserve(self, job: int) -> None:
        for node, gpus in self.reserved.pop(job, {}).items() if job else ():
            self.nodes[node].free += gpus


def reclassify(limits: Limits, holding: list[Demand]) -> list[int]:
    """Rule 7: the borrowed jobs (oldest start first) that now fit the guarantee beside the
    account's in-quota jobs, in that order."""
    used = Tally()
    for d in holding:
        if not d.borrowed:
            used.add(d, jupyter=False)
    moved = []
    for d in sorted((d for d in holding if d.borrowed), key=lambda d: (d.started or datetime.max, d.id)):
        inquota = replace(d, borrowed=False)
        if _gpu_quota_blocker(limits, used, inquota) is None:
            used.add(inquota, jupyter=False)
            moved.append(d.id)
    return moved


def _gpu_quota_blocker(limits: Limits, used: Tally, d: Demand) -> Blocker | None:
    """The account's GPU guarantee (total or per model) alone."""
    return account_blocker(replace(limits, cpu_milli=None, memory_mib=None, jobs=None), used, d)


@dataclass(frozen=True)
class ReclaimRules:
    min_run_seconds: float = 600.0  # a borrowed job runs at least this long before it may be preempted ...
    wait_bound_seconds: float = 120.0  # ... unless the reclaiming job has waited longer than this
    max_preemptions: int = 3  # a job preempted this often is not preempted again


def reclaim(d: Demand, account: str, capacity: Capacity, candidates: list[Demand], over: dict[str, int],
            waited_since: datetime, now: datetime, rules: ReclaimRules) -> list[Demand] | None:
    """Rule 8: the borrowed jobs to preempt so that `d` (in-quota, waiting for the cluster) fits, in
    preference order: [] when it fits already, None when no allowed set makes it fit (now).
    `candidates` are borrowed jobs with `nodes` and `account`; `over` says how far each account
    is above its guarantee (its borrowed GPUs)."""
    if capacity.place(d, account) is not None:
        return []
    waited = (now - waited_since).total_seconds() >= rules.wait_bound_seconds

    def allowed(v: Demand) -> bool:  # (a start stamped by a cluster clock ahead of ours: just started)
        return (v.borrowed and v.account != account and v.id != d.id and d.id not in v.preempted
                and v.preemptions < rules.max_preemptions and bool(v.nodes)
                and (waited or v.started is None or max(0.0, (now - v.started).total_seconds()) >= rules.min_run_seconds))

    pool = sorted((v for v in candidates if allowed(v)),
                  key=lambda v: (-over.get(v.account, 0), -(v.started or now).timestamp(), -v.id))
    rank = {v.id: i for i, v in enumerate(pool)}

    def fits(victims) -> bool:
        trial = capacity.copy()
        for v in victims:
            trial.give(v)
        return trial.place(d, account) is not None

    if not pool or not fits(pool):
        return None
    best: list[Demand] | None = None
    if max(1, d.workers) == 1:  # one pod: the node needing the fewest victims
        for node, room in sorted(capacity.nodes.items()):
            if not capacity._usable(room, d.gpu_model, account):
                continue
            here = [(dict(v.nodes).get(node, 0), v) for v in pool if dict(v.nodes).get(node, 0)]
            chosen = _fewest(d.per_worker - capacity.room(node, d.id), here, rank)
            if chosen is None or not fits(chosen):
                continue
            key = (len(chosen), sum(rank[v.id] for v in chosen))
            if best is None or key < (len(best), sum(rank[v.id] for v in best)):
                best = chosen
    if best is None:  # several pods (or held GPUs in the way): take in preference order, then drop the unneeded
        best = []
        for v in pool:
            best.append(v)
            if fits(best):
                break
        for v in list(reversed(best)):
            rest = [x for x in best if x.id != v.id]
            if fits(rest):
                best = rest
    return sorted(best, key=lambda v: rank[v.id])


def _fewest(need: int, items: list[tuple[int, Demand]], rank: dict[int, int]) -> list[Demand] | None:
    """The fewest jobs whose GPUs on a node add up to `need`, the most preferred among such sets."""
    if need <= 0:
        return []
    sizes = sorted((g for g, _v in items), reverse=True)
    total, k = 0, 0
    for g in sizes:
        if total >= need:
            break
        total, k = total + g, k + 1
    if total < need:
        return None
    chosen: list[tuple[int, Demand]] = []
    for g, v in sorted(items, key=lambda item: rank[item[1].id]):
        if len(chosen) == k:
            break
        rest = sorted((x for x, w in items if w.id != v.id and all(w.id != c.id for _g, c in chosen)), reverse=True)
        if sum(c for c, _w in chosen) + g + sum(rest[:k - len(chosen) - 1]) >= need:
            chosen.append((g, v))
    return [v for _g, v in chosen]


def _held(d: Demand, now: datetime) -> Demand:
    return replace(d, started=now)


def estimate(limits: Limits, used: Tally, holding: list[Demand], order: list[Demand], now: datetime,
             duration) -> dict[int, datetime | None]:
    """When each queued job in `order` should start: replay the admission rules at every
    predicted end of an admitted job (`holding` with their `end`; `duration(d)` predicts how long a
    queued job runs). None: not within what the predictions can tell (a job without an end).
    A borrower is estimated as if it waited for the guarantee (idle GPUs cannot be predicted): the
    estimate is when it starts at the latest."""
    starts: dict[int, datetime | None] = {d.id: None for d in order}
    limits = replace(limits, always_borrow=False)
    order = [replace(d, borrow=False) if d.borrow else d for d in order]
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
