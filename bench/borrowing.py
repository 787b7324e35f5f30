"""Benchmark: a simulated day of borrowing and reclaim, through the queue's own plan (the same
`decide`, `Capacity` and `reclaim` the admitter runs), with and without borrowing. Prints figures,
asserts nothing.

    .venv/bin/python bench/borrowing.py [--hours 24 --seeds 7,11,13,17,19 --step 10 --grace 60]

A cluster of 32 A100 (four nodes of 8) and four labs whose quotas (8 GPUs each) add up to the
cluster: three busy labs that ask for about 1.5 times their quota all day, and one that is idle for
the first half of the day and busy after. Jobs ask for 1, 2, 4 or 8 GPUs (some 2x8 distributed)
and run for a log-normal time around an hour; a preempted borrowed job resumes from its last checkpoint
(every `--checkpoint-minutes`, written to $CRATER_CHECKPOINT_DIR; the figures are also printed for
jobs that write none and start over). The admitter runs every `--step`
seconds: in-quota jobs first (a head waiting for the cluster reclaims lent GPUs; the victims' GPUs
come free after the grace), then borrowers, the accounts borrowing least first.

Reported side by side, quotas as walls (today) and with borrowing:
- the share of the cluster's GPUs allocated while queued demand exceeds the free GPUs (goal with
  borrowing: at least 95 %), and the idle rest split: GPUs too few or too scattered for any queued
  job's pods (fragmentation) and GPUs a queued job would fit (kept idle by the policy);
- each lab's median and p95 wait (submission to the start of the run that completes);
- reclaim latency: from an in-quota job becoming the head of its queue waiting for lent GPUs to
  its start (goal: p95 at most grace + 30 s);
- GPU-hours lost to preemption as a share of GPU-hours delivered (goal: under 2 %); preemptions of
  in-quota jobs (goal: 0) and cycles (a job preempted by one it had preempted; goal: 0).
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from queueing import percentile  # noqa: E402
from portal.services.scheduling.plan import (CLUSTER_KINDS, Capacity, Demand, Limits, ReclaimRules, Room, Tally,  # noqa: E402
                                             decide, reclaim, reclassify)

T0 = datetime(2026, 12, 1)
MODEL = "NVIDIA-A100-SXM4-80GB"
LABS = ("lab-a", "lab-b", "lab-c", "lab-d")


@dataclass
class Sim:
    job: Demand
    account: str
    duration: float  # seconds of work
    submitted: float
    first_start: float | None = None
    start: float | None = None  # of the current run
    end: float | None = None
    nodes: tuple = ()
    borrowed: bool = False
    preemptions: int = 0
    preempted_by: set = field(default_factory=set)  # jobs that preempted it
    preempted: set = field(default_factory=set)  # jobs it preempted
    head_since: float | None = None  # waiting for lent GPUs since
    holds: bool = False  # an in-quota head waiting for the cluster: its GPUs are held for it
    lost: float = 0.0  # GPU-seconds


# Job sizes: (share, GPUs, pods). "even": as many small as large jobs (most GPU-hours in jobs of 4
# and more on one node); "philly": mostly single-GPU jobs, as in published traces of shared GPU
# clusters (Microsoft's Philly, Jeon et al., ATC '19), with a few whole-node and two-pod jobs (no job asks more than a lab's guarantee).
MIXES = {"even": ((0.30, 1, 1), (0.25, 2, 1), (0.25, 4, 1), (0.15, 8, 1), (0.05, 8, 2)),
         "philly": ((0.65, 1, 1), (0.15, 2, 1), (0.10, 4, 1), (0.07, 8, 1), (0.03, 8, 2))}


def job_size(mix: tuple, draw: float) -> tuple[int, int]:
    """(GPUs, pods) of the mix's entry that a uniform draw in [0, 1) falls in."""
    upto = 0.0
    for share, gpus, workers in mix:
        upto += share
        if draw < upto:
            return gpus, workers
    return mix[-1][1:]


def trace(hours: float, seed: int, mix: str = "even") -> list[Sim]:
    rng = random.Random(seed)
    mean = sum(share * gpus for share, gpus, _w in MIXES[mix])
    jobs, next_id = [], 1
    for lab in LABS:
        busy_from = hours * 3600 / 2 if lab == "lab-d" else 0.0
        # demand about 1.5x the quota of 8 GPUs: mean job `mean` GPUs x ~1.3 h
        rate = 1.5 * 8 / (mean * 4700)
        t = busy_from
        while True:
            t += rng.expovariate(rate)
            if t >= hours * 3600:
                break
            gpus, workers = job_size(MIXES[mix], rng.random())
            duration = min(6 * 3600, max(300, rng.lognormvariate(math.log(3600), 0.6)))
            user = LABS.index(lab) * 10 + rng.randint(0, 4)
            jobs.append(Sim(Demand(id=next_id, user_id=user, gpus=gpus, gpu_model=MODEL, workers=workers, borrow=True,
                                   time_limit=int(duration * 1.5), submitted=T0 + timedelta(seconds=t)), lab, duration, t))
            next_id += 1
    return sorted(jobs, key=lambda s: s.submitted)


def run(jobs: list[Sim], borrowing: bool, hours: float, step: float, grace: float, rules: ReclaimRules,
        checkpoint: float = 0.0) -> dict:
    nodes = {f"a100-{i}": 8 for i in range(4)}
    free = dict(nodes)
    limits = {lab: Limits(lab, gpus=8, caps={u: None for u in range(LABS.index(lab) * 10, LABS.index(lab) * 10 + 5)})
              for lab in LABS}
    by_id = {s.job.id: s for s in jobs}
    pending = list(jobs)  # not submitted yet
    queued: dict[str, list[Sim]] = {lab: [] for lab in LABS}
    running: dict[int, Sim] = {}
    releasing: list[tuple[float, tuple]] = []  # (when, nodes) of preempted jobs in their grace
    busy_steps = allocated_busy = idle_shape = idle_policy = 0
    reclaims, preemptions, inquota_preempted, cycles = [], 0, 0, 0
    delivered = lost = 0.0
    t = 0.0
    while t < hours * 3600 or running:
        if t >= hours * 3600 + 24 * 3600:
            break
        now = T0 + timedelta(seconds=t)
        while pending and pending[0].submitted <= t:
            s = pending.pop(0)
            queued[s.account].append(s)
        for s in [s for s in running.values() if s.end is not None and s.end <= t]:
            for node, g in s.nodes:
                free[node] += g
            delivered += s.job.gpus * (s.end - s.start)
            del running[s.job.id]
        for when, where in [r for r in releasing if r[0] <= t]:
            for node, g in where:
                free[node] += g
            releasing.remove((when, where))
        # The admitter's pass: reclassification, in-quota (with reclaim), then borrowing.
        for lab in LABS:
            holding = [replace(s.job, borrowed=s.borrowed, started=T0 + timedelta(seconds=s.start)) for s in running.values()
                       if s.account == lab]
            for job_id in reclassify(limits[lab], holding):
                running[job_id].borrowed = False
        # A reclaiming job's GPUs are taken from `free` when it is admitted, while its victims' pods
        # still hold them (free goes below 0 there until the grace ends): held, as the admitter holds them.
        # In-quota heads that waited for the cluster at the last pass have the free GPUs on the
        # nodes where they will run reserved (as the admitter's capacity reserves them).
        cap = Capacity({n: Room(MODEL, max(0, f)) for n, f in free.items()})
        for s in sorted((s for q in queued.values() for s in q if s.holds), key=lambda s: s.submitted):
            cap.reserve(s.job, s.account)
        for phase in ((False, True) if borrowing else (False,)):
            order = sorted(LABS, key=lambda a: sum(s.job.gpus for s in running.values() if s.account == a and s.borrowed))
            for lab in order:
                if not queued[lab]:
                    continue
                holding = [replace(s.job, borrowed=s.borrowed) for s in running.values() if s.account == lab]
                used = Tally()
                for d in holding:
                    used.add(d)
                waiting = [replace(s.job, borrow=borrowing) for s in queued[lab]]
                decision = decide(limits[lab], used, waiting, {}, holding, now, capacity=cap, borrowing=phase)
                started = list(decision.admit)
                head = decision.head
                if not phase:
                    for x in queued[lab]:
                        x.holds = head is not None and x.job.id == head.id and decision.blockers[head.id].kind in CLUSTER_KINDS
                if not phase and borrowing and head is not None and decision.blockers[head.id].kind in CLUSTER_KINDS:
                    s = by_id[head.id]
                    candidates = [replace(v.job, borrowed=True, account=v.account, nodes=v.nodes, preemptions=v.preemptions,
                                          started=T0 + timedelta(seconds=v.start), preempted=frozenset(v.preempted))
                                  for v in running.values() if v.borrowed and v.start <= t]
                    over: dict[str, int] = {}
                    for v in candidates:
                        over[v.account] = over.get(v.account, 0) + v.gpus
                    # The reclaim latency runs from when lent GPUs could make it fit (whatever the
                    # minimum run time says); before, it waits for in-quota jobs or fragmentation.
                    possible = reclaim(head, lab, cap, candidates, over, T0, now, rules) is not None
                    s.head_since = (s.head_since if s.head_since is not None else t) if possible else None
                    # The owner's wait bound counts from the submission (as the admitter counts it).
                    victims = reclaim(head, lab, cap, candidates, over, T0 + timedelta(seconds=s.submitted), now, rules) \
                        if possible else None
                    if victims:
                        for v in victims:
                            vs = running.pop(v.id)
                            preemptions += 1
                            inquota_preempted += not vs.borrowed
                            cycles += head.id in vs.preempted
                            vs.preemptions += 1
                            vs.preempted_by.add(head.id)
                            s.preempted.add(v.id)
                            ran = t - vs.start
                            kept = (ran // checkpoint) * checkpoint if checkpoint else 0.0  # resumed from its last checkpoint
                            vs.lost += vs.job.gpus * (ran - kept)
                            lost += vs.job.gpus * (ran - kept)
                            vs.duration -= kept
                            releasing.append((t + grace, vs.nodes))  # promised to the head: not in `cap`
                            vs.start = vs.end = None
                            vs.nodes = ()
                            queued[vs.account].append(vs)
                        started.append(replace(head, borrowed=False))
                        reclaims.append(grace + step / 2)  # victims' pods gone after the grace; bound next pass
                for d in started:
                    s = by_id[d.id]
                    placed = cap.place(replace(d, borrowed=False), lab) if d.id != (head.id if head else -1) or d.borrowed \
                        else None
                    if placed is None:  # the reclaiming head: on the nodes its victims leave, after the grace
                        placed = _place_after(free, releasing, d)
                        begin = t + grace
                    else:
                        begin = t
                    cap.take(placed, d.id)
                    for node, g in placed.items():
                        free[node] -= g
                    s.nodes = tuple(sorted(placed.items()))
                    s.borrowed = d.borrowed
                    s.start, s.end = begin, begin + s.duration
                    s.first_start = s.first_start if s.first_start is not None else begin
                    if s.head_since is not None and not d.borrowed and d.id == (head.id if head else -1):
                        reclaims[-1] = begin - s.head_since + step / 2
                    s.head_since, s.holds = None, False
                    queued[lab].remove(s)
                    running[d.id] = s
        demand = sum(s.job.gpus for q in queued.values() for s in q)
        idle = sum(max(0, f) for f in free.values())
        in_use = sum(nodes.values()) - idle
        if demand > idle and t < hours * 3600:
            busy_steps += 1
            allocated_busy += in_use / sum(nodes.values())
            room = Capacity({n: Room(MODEL, max(0, f)) for n, f in free.items()})
            if any(room.place(s.job, s.account) is not None for q in queued.values() for s in q):
                idle_policy += idle / sum(nodes.values())  # a queued job would fit: idle by the policy
            else:
                idle_shape += idle / sum(nodes.values())  # too few or too scattered for any queued job's pods
        t += step
    waits = {lab: sorted((s.start - s.submitted - (s.lost / s.job.gpus if s.job.gpus else 0)) / 60 for s in jobs
                         if s.account == lab and s.start is not None) for lab in LABS}
    return {"busy_steps": busy_steps, "allocated_busy": allocated_busy, "idle_shape": idle_shape, "idle_policy": idle_policy,
            "waits": waits, "reclaims": reclaims, "preemptions": preemptions, "lost": lost, "delivered": delivered,
            "inquota_preempted": inquota_preempted, "cycles": cycles,
            "completed": sum(1 for s in jobs if s.end is not None and s.end <= t), "jobs": len(jobs)}


def pooled(runs: list[dict]) -> dict:
    """The figures of several seeds' days together: shares over all their busy steps, waits and
    reclaim latencies pooled before their percentiles are taken, counts summed."""
    total = {k: sum(r[k] for r in runs) for k in ("busy_steps", "allocated_busy", "idle_shape", "idle_policy", "preemptions",
                                                  "lost", "delivered", "inquota_preempted", "cycles", "completed", "jobs")}
    steps = max(1, total["busy_steps"])
    waits = {lab: sorted(w for r in runs for w in r["waits"][lab]) for lab in LABS}
    reclaims = sorted(x for r in runs for x in r["reclaims"])
    return {**total, "allocated_busy": total["allocated_busy"] / steps, "idle_shape": total["idle_shape"] / steps,
            "idle_policy": total["idle_policy"] / steps,
            "waits": {lab: (statistics.median(w) if w else float("nan"), percentile(w, 95)) for lab, w in waits.items()},
            "reclaim_p95": percentile(reclaims, 95) if reclaims else float("nan"), "reclaims": len(reclaims),
            "slow_reclaims": [round(x) for x in reclaims if x > 90],
            "lost_share": total["lost"] / total["delivered"] if total["delivered"] else 0.0}


def _place_after(free: dict, releasing: list, d: Demand) -> dict:
    """Where a reclaiming job goes once its victims' GPUs are free (the freed nodes first)."""
    room = dict(free)
    for _when, where in releasing:
        for node, g in where:
            room[node] = room.get(node, 0) + g
    placed: dict[str, int] = {}
    for _w in range(max(1, d.workers)):
        node = min((n for n, f in room.items() if f >= d.per_worker), key=lambda n: (room[n], n))
        room[node] -= d.per_worker
        placed[node] = placed.get(node, 0) + d.per_worker
    return placed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seeds", default="7,11,13,17,19", help="days to replay (one trace per seed), pooled")
    parser.add_argument("--step", type=float, default=10.0, help="seconds between admission passes")
    parser.add_argument("--grace", type=float, default=60.0)
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0,
                        help="borrowed jobs checkpoint this often to $CRATER_CHECKPOINT_DIR (0: never)")
    parser.add_argument("--min-run-minutes", type=float, default=10.0, help="the policy's minimum run time")
    parser.add_argument("--mix", choices=sorted(MIXES), default="even", help="job sizes (see MIXES)")
    parser.add_argument("--owner-wait-minutes", type=float, default=2.0, help="the policy's bound on the owner's wait")
    args = parser.parse_args()
    rules = ReclaimRules(min_run_seconds=args.min_run_minutes * 60, wait_bound_seconds=args.owner_wait_minutes * 60)
    results = {}
    for label, borrowing, checkpoint in (("quotas as walls", False, 0.0), ("with borrowing", True, args.checkpoint_minutes * 60),
                                         ("no checkpoints", True, 0.0)):
        results[label] = pooled([run(trace(args.hours, int(seed), args.mix), borrowing, args.hours, args.step, args.grace, rules,
                                     checkpoint) for seed in args.seeds.split(",")])
    walls, borrow = results["quotas as walls"], results["with borrowing"]
    print(f"simulated days: {len(args.seeds.split(','))} (seeds {args.seeds}), {walls['jobs']} jobs ({args.mix} sizes), "
          f"{args.hours:g} h each, 32 A100 in 4 nodes, 4 labs x 8 guaranteed, "
          f"passes every {args.step:g} s, grace {args.grace:g} s, minimum run {args.min_run_minutes:g} min, "
          f"owner's bound {args.owner_wait_minutes:g} min")
    print(f"{'':48}{'quotas as walls':>18}{'with borrowing':>18}")
    print(f"{'GPUs allocated while demand exceeds free (goal >= 95 %)':48}{walls['allocated_busy'] * 100:17.1f}%"
          f"{borrow['allocated_busy'] * 100:17.1f}%")
    print(f"{'  idle: too few or scattered for any queued job':48}{walls['idle_shape'] * 100:17.1f}%"
          f"{borrow['idle_shape'] * 100:17.1f}%")
    print(f"{'  idle: a queued job would fit (the policy)':48}{walls['idle_policy'] * 100:17.1f}%"
          f"{borrow['idle_policy'] * 100:17.1f}%")
    for lab in LABS:
        (wm, wp), (bm, bp) = walls["waits"][lab], borrow["waits"][lab]
        print(f"{lab + ' wait median / p95 (min)':48}{wm:8.1f} / {wp:7.1f}{bm:8.1f} / {bp:7.1f}")
    print(f"{'reclaims; p95 latency (goal <= grace + 30 s)':48}{'-':>18}{borrow['reclaims']:>8}; {borrow['reclaim_p95']:6.0f} s")
    print(f"{'preemptions; GPU-hours lost / delivered (< 2 %)':48}{'-':>18}{borrow['preemptions']:>8}; "
          f"{borrow['lost_share'] * 100:6.2f}%")
    print(f"{'preemptions of in-quota jobs; cycles (goal 0; 0)':48}{'-':>18}{borrow['inquota_preempted']:>8}; "
          f"{borrow['cycles']:6d}")
    print(f"{'jobs completed':48}{walls['completed']:>18}{borrow['completed']:>18}")
    print(f"reclaims slower than grace + 30 s (s): {borrow['slow_reclaims'] or 'none'}")
    worst = results["no checkpoints"]
    print(f"with borrowing but no checkpoints (a preempted job starts over): {worst['lost_share'] * 100:.2f}% of delivered "
          f"GPU-hours lost in {worst['preemptions']} preemptions; {worst['allocated_busy'] * 100:.1f}% allocated while busy")


if __name__ == "__main__":
    main()
