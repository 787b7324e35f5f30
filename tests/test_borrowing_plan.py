"""Borrowing, gang admission, reclassification and reclaim as rules of the pure plan, checked on
generated clusters and queues (Hypothesis): guarantees, borrowing limits, lending limits and the
cluster's GPUs are never exceeded; a job's pods are placed all at once or not at all; the victims
of a reclaim are borrowed jobs of other accounts, make the job fit, and are a minimal set; no job
is ever preempted by a job it once preempted."""
from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.services.scheduling.plan import (Capacity, Demand, Limits, ReclaimRules, Room, Tally, decide, estimate, reclaim,
                                             reclassify)

NOW = datetime(2026, 12, 2, 12, 0)
RULES = ReclaimRules(min_run_seconds=600, wait_bound_seconds=120, max_preemptions=3)
settings_ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cluster(sizes: list[int], model: str = "A100") -> Capacity:
    return Capacity({f"n{i}": Room(model, free) for i, free in enumerate(sizes)})


@st.composite
def jobs(draw, first_id: int, n: int, model: str = "A100", user: int = 1):
    out = []
    for i in range(n):
        workers = draw(st.sampled_from([1, 1, 1, 2, 3]))
        per = draw(st.sampled_from([1, 1, 2, 4, 8]))
        out.append(Demand(id=first_id + i, user_id=user + draw(st.integers(0, 2)), gpus=per * workers, gpu_model=model,
                          workers=workers, borrow=draw(st.booleans()),
                          submitted=NOW - timedelta(minutes=draw(st.integers(0, 600)))))
    return out


def placed_ok(cap_before: Capacity, cap_after: Capacity) -> bool:
    return all(r.free >= 0 for r in cap_after.nodes.values()) and \
        all(cap_after.nodes[n].free <= cap_before.nodes[n].free for n in cap_before.nodes)


@given(sizes=st.lists(st.integers(0, 8), min_size=1, max_size=5), guarantee=st.integers(0, 16),
       borrow_limit=st.one_of(st.none(), st.integers(0, 16)), protected=st.integers(0, 8), data=st.data())
@settings_
def test_admission_never_exceeds_guarantee_borrowing_limit_lenders_or_the_cluster(sizes, guarantee, borrow_limit, protected,
                                                                                 data):
    queued = data.draw(jobs(1, data.draw(st.integers(0, 8))))
    limits = Limits("lab", gpus=guarantee, caps={1: None, 2: None, 3: None}, borrow_limit=borrow_limit)
    cap = cluster(sizes)
    cap.protected = protected
    before = cap.copy()
    decision = decide(limits, Tally(), queued, {}, [], NOW, capacity=cap, borrowing=True)
    used = Tally()
    for d in decision.admit:
        used.add(d)
    assert used.gpus <= guarantee
    assert borrow_limit is None or used.borrowed <= borrow_limit
    assert all(d.borrow for d in decision.admit if d.borrowed)  # only who chose to borrow does
    assert placed_ok(before, cap)
    assert sum(r.free for r in before.nodes.values()) - sum(r.free for r in cap.nodes.values()) == used.gpus + used.borrowed
    if used.borrowed:  # borrowers left the lenders' protected GPUs free (in-quota jobs may use them)
        assert sum(r.free for r in before.nodes.values()) - used.borrowed >= protected
    for d in decision.order:  # nothing waits that both fits and is first in line for it
        assert decision.blockers[d.id].kind


@given(sizes=st.lists(st.integers(0, 8), min_size=1, max_size=5), workers=st.integers(1, 5), per=st.integers(1, 8))
@settings_
def test_gang_admission_places_every_pod_at_once_or_none(sizes, workers, per):
    cap = cluster(sizes)
    d = Demand(id=1, user_id=1, gpus=workers * per, gpu_model="A100", workers=workers)
    placed = cap.place(d, "lab")
    possible = sum(free // per for free in sizes) >= workers
    assert (placed is not None) == possible
    if placed is not None:
        assert sum(placed.values()) == workers * per
        assert all(g % per == 0 and g <= sizes[int(n[1:])] for n, g in placed.items())
    # a job the cluster cannot hold is blocked with the numbers, never admitted in part
    decision = decide(Limits("lab", gpus=64, caps={1: None}), Tally(), [d], {}, [], NOW, capacity=cap)
    assert [x.id for x in decision.admit] == ([1] if possible else [])
    if not possible:
        b = decision.blockers[1]
        assert b.kind == ("fragmented" if sum(sizes) >= workers * per else "capacity") and b.ask == workers * per


@st.composite
def reclaim_world(draw):
    """Four nodes of 8 GPUs, full of borrowed jobs of other accounts (and some in-quota ones), and
    an in-quota job of `lab` waiting for the cluster."""
    nodes = {f"n{i}": 8 for i in range(4)}
    free = dict(nodes)
    running = []
    next_id = 100
    for _ in range(draw(st.integers(1, 9))):
        workers = draw(st.sampled_from([1, 1, 1, 2]))
        per = draw(st.sampled_from([1, 2, 4]))
        spots = []
        for _w in range(workers):
            fits = [n for n, f in free.items() if f >= per]
            if not fits:
                break
            node = draw(st.sampled_from(fits))
            free[node] -= per
            spots.append(node)
        if len(spots) < workers:
            for node in spots:
                free[node] += per
            continue
        where: dict[str, int] = {}
        for node in spots:
            where[node] = where.get(node, 0) + per
        next_id += 1
        running.append(Demand(id=next_id, user_id=9, gpus=per * workers, gpu_model="A100", workers=workers,
                              borrowed=draw(st.booleans()), account=draw(st.sampled_from(["default", "nlp", "lab"])),
                              started=NOW - timedelta(minutes=draw(st.integers(0, 60))), nodes=tuple(sorted(where.items())),
                              preemptions=draw(st.integers(0, 3)),
                              preempted=frozenset(draw(st.sets(st.sampled_from([1, 2]), max_size=1)))))
    cap = Capacity({n: Room("A100", f) for n, f in free.items()})
    workers = draw(st.sampled_from([1, 1, 2]))
    per = draw(st.sampled_from([1, 2, 4, 8]))
    head = Demand(id=1, user_id=1, gpus=per * workers, gpu_model="A100", workers=workers,
                  submitted=NOW - timedelta(minutes=draw(st.integers(0, 5))))
    over: dict[str, int] = {}
    for v in running:
        if v.borrowed:
            over[v.account] = over.get(v.account, 0) + v.gpus
    return cap, running, head, over


def eligible(v: Demand, head: Demand, waited: bool) -> bool:
    return (v.borrowed and v.account != "lab" and head.id not in v.preempted and v.preemptions < RULES.max_preemptions
            and (waited or (NOW - v.started).total_seconds() >= RULES.min_run_seconds))


def fits_without(cap: Capacity, head: Demand, victims) -> bool:
    trial = cap.copy()
    for v in victims:
        trial.give(v)
    return trial.place(head, "lab") is not None


@given(world=reclaim_world())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_reclaim_preempts_a_minimal_set_of_allowed_borrowed_jobs(world):
    cap, running, head, over = world
    since = head.submitted
    waited = (NOW - since).total_seconds() >= RULES.wait_bound_seconds
    victims = reclaim(head, "lab", cap, running, over, since, NOW, RULES)
    allowed = [v for v in running if eligible(v, head, waited)]
    if cap.place(head, "lab") is not None:
        assert victims == []
        return
    if victims is None:
        assert not fits_without(cap, head, allowed)  # no allowed set would do
        return
    assert victims and all(eligible(v, head, waited) for v in victims)  # borrowed, other accounts, old enough, no cycle
    assert fits_without(cap, head, victims)
    for v in victims:  # nothing in it is unneeded
        assert not fits_without(cap, head, [x for x in victims if x.id != v.id])
    if head.workers == 1 and len(allowed) <= 8:  # one pod: no smaller set exists at all
        smaller = any(fits_without(cap, head, combo) for k in range(len(victims))
                      for combo in itertools.combinations(allowed, k))
        assert not smaller


def test_reclaim_prefers_the_account_furthest_above_its_guarantee_and_the_most_recent_start():
    cap = Capacity({"n0": Room("A100", 0), "n1": Room("A100", 0)})
    old = Demand(id=10, user_id=9, gpus=8, gpu_model="A100", borrowed=True, account="nlp",
                 started=NOW - timedelta(hours=3), nodes=(("n0", 8),))
    new = Demand(id=11, user_id=9, gpus=8, gpu_model="A100", borrowed=True, account="nlp",
                 started=NOW - timedelta(hours=1), nodes=(("n1", 8),))
    head = Demand(id=1, user_id=1, gpus=8, gpu_model="A100", submitted=NOW)
    assert [v.id for v in reclaim(head, "lab", cap, [old, new], {"nlp": 16}, NOW, NOW, RULES)] == [11]
    other = replace(old, account="default")
    assert [v.id for v in reclaim(head, "lab", cap, [other, new], {"nlp": 8, "default": 30}, NOW, NOW, RULES)] == [10]
    # too young to be preempted, until the owner's job has waited past the bound
    young = replace(new, started=NOW - timedelta(minutes=2))
    assert reclaim(head, "lab", cap, [young], {"nlp": 8}, NOW, NOW, RULES) is None
    assert [v.id for v in reclaim(head, "lab", cap, [young], {"nlp": 8}, NOW - timedelta(minutes=3), NOW, RULES)] == [11]
    # an in-quota job is never preempted, nor one of the same account, nor one it once preempted
    assert reclaim(head, "lab", cap, [replace(new, borrowed=False)], {}, NOW, NOW, RULES) is None
    assert reclaim(head, "lab", cap, [replace(new, account="lab")], {}, NOW, NOW, RULES) is None
    assert reclaim(head, "lab", cap, [replace(new, preempted=frozenset({1}))], {"nlp": 8}, NOW, NOW, RULES) is None
    assert reclaim(head, "lab", cap, [replace(new, preemptions=3)], {"nlp": 8}, NOW, NOW, RULES) is None


def test_a_start_the_cluster_stamped_ahead_of_the_portals_clock_counts_as_just_started():
    """The pods' start comes from the cluster's clock, which may run ahead of the portal's: with no
    minimum run time such a job is preempted at once, not after the owner's bound."""
    cap = Capacity({"n0": Room("A100", 0)})
    ahead = Demand(id=10, user_id=9, gpus=8, gpu_model="A100", borrowed=True, account="nlp",
                   started=NOW + timedelta(seconds=40), nodes=(("n0", 8),))
    head = Demand(id=1, user_id=1, gpus=8, gpu_model="A100", submitted=NOW)
    no_minimum = replace(RULES, min_run_seconds=0)
    assert [v.id for v in reclaim(head, "lab", cap, [ahead], {"nlp": 8}, NOW, NOW, no_minimum)] == [10]
    assert reclaim(head, "lab", cap, [ahead], {"nlp": 8}, NOW, NOW, RULES) is None  # the minimum still holds


def test_a_distributed_victim_is_preempted_whole_and_frees_every_node():
    cap = Capacity({"n0": Room("A100", 0), "n1": Room("A100", 0)})
    gang = Demand(id=20, user_id=9, gpus=16, gpu_model="A100", workers=2, borrowed=True, account="nlp",
                  started=NOW - timedelta(hours=1), nodes=(("n0", 8), ("n1", 8)))
    head = Demand(id=1, user_id=1, gpus=16, gpu_model="A100", workers=2, submitted=NOW)
    assert [v.id for v in reclaim(head, "lab", cap, [gang], {"nlp": 16}, NOW, NOW, RULES)] == [20]


@given(guarantee=st.integers(0, 16), sizes=st.lists(st.integers(1, 8), min_size=1, max_size=6), data=st.data())
@settings_
def test_a_borrowed_job_that_fits_the_guarantee_is_reclassified(guarantee, sizes, data):
    holding = [Demand(id=i, user_id=1, gpus=g, gpu_model="A100", borrowed=data.draw(st.booleans()),
                      started=NOW - timedelta(minutes=i)) for i, g in enumerate(sizes, 1)]
    limits = Limits("lab", gpus=guarantee)
    moved = reclassify(limits, holding)
    inquota = sum(d.gpus for d in holding if not d.borrowed or d.id in moved)
    assert all(next(d for d in holding if d.id == m).borrowed for m in moved)
    if sum(d.gpus for d in holding if not d.borrowed) <= guarantee:
        assert inquota <= guarantee
        # nothing left borrowed would still fit (in the order they are looked at)
        assert all(inquota + d.gpus > guarantee for d in holding if d.borrowed and d.id not in moved)


def test_borrowers_wait_for_the_guaranteed_round_and_take_only_idle_gpus():
    cap = cluster([8])
    lab = Limits("lab", gpus=0, caps={1: None}, borrow_limit=None)
    d = Demand(id=1, user_id=1, gpus=4, gpu_model="A100", borrow=True, submitted=NOW)
    first = decide(lab, Tally(), [d], {}, [], NOW, capacity=cap.copy(), borrowing=False)
    assert first.admit == [] and first.blockers[1].kind == "borrow"
    second = decide(lab, Tally(), [d], {}, [], NOW, capacity=cap.copy(), borrowing=True)
    assert [(x.id, x.borrowed) for x in second.admit] == [(1, True)]
    # a lender keeps 6 of its unused guarantee: only 2 are idle for borrowers
    kept = cap.copy()
    kept.protected = 6
    third = decide(lab, Tally(), [d], {}, [], NOW, capacity=kept, borrowing=True)
    assert third.admit == [] and third.blockers[1].kind == "borrow"
    two = replace(d, gpus=2)
    assert decide(lab, Tally(), [two], {}, [], NOW, capacity=kept.copy(), borrowing=True).admit  # 2 are idle
    # after a preemption it borrows again only after its backoff
    later = replace(d, not_before=NOW + timedelta(minutes=2))
    assert decide(lab, Tally(), [later], {}, [], NOW, capacity=cap.copy(), borrowing=True).blockers[1].kind == "backoff"
    # a job that did not choose to borrow waits for the guarantee
    assert decide(lab, Tally(), [replace(d, borrow=False)], {}, [], NOW, capacity=cap.copy(), borrowing=True).admit == []
    # the Default account's jobs always borrow
    default = replace(lab, account="default", always_borrow=True)
    assert decide(default, Tally(), [replace(d, borrow=False)], {}, [], NOW, capacity=cap.copy(), borrowing=True).admit


def test_a_borrower_is_estimated_as_if_it_waited_for_the_guarantee():
    lab = Limits("lab", gpus=8, caps={1: None})
    running = Demand(id=9, user_id=1, gpus=8, gpu_model="A100", started=NOW, end=NOW + timedelta(hours=1))
    borrower = Demand(id=1, user_id=1, gpus=4, gpu_model="A100", borrow=True, submitted=NOW)
    assert estimate(lab, Tally().add(running), [running], [borrower], NOW, lambda d: 3600)[1] == NOW + timedelta(hours=1)


def test_a_head_waiting_for_the_cluster_keeps_the_gpus_on_its_nodes_and_lends_those_elsewhere():
    """An in-quota head of lab-a needs 8 GPUs on one node; n0 has 5 free, n1 3. Its reservation is
    the 5 on n0 (the node where it will run): another account's borrower of 2 runs on n1, one of 4
    does not fit without taking the head's GPUs and waits. The head itself still sees its own."""
    cap = cluster([5, 3])
    head = Demand(id=1, user_id=1, gpus=8, gpu_model="A100")
    cap.reserve(head, "lab-a")
    assert cap.reserved == {1: {"n0": 5}} and cap.room("n0", 1) == 5 and cap.room("n0") == 0
    assert cap.free("A100", "lab-a", but=1) == 8 and cap.free("A100", "lab-b") == 3
    small = Demand(id=2, user_id=2, gpus=2, gpu_model="A100", borrow=True, submitted=NOW)
    big = Demand(id=3, user_id=2, gpus=4, gpu_model="A100", borrow=True, submitted=NOW)
    decision = decide(Limits("lab-b", gpus=0, caps={2: None}), Tally(), [big, small], {}, [], NOW, capacity=cap, borrowing=True)
    assert [d.id for d in decision.admit] == [2] and decision.blockers[3].kind == "borrow"
    assert cap.nodes["n1"].free == 1 and cap.room("n0", 1) == 5
    cap.take({"n0": 5, "n1": 1}, 1)  # the head placed (here, as if GPUs freed): its reservation is gone
    assert cap.reserved == {} and cap.nodes["n0"].free == 0 and cap.nodes["n1"].free == 0


@given(sizes=st.lists(st.integers(0, 8), min_size=1, max_size=5), data=st.data())
@settings_
def test_reservations_keep_free_gpus_whole_and_others_place_only_beside_them(sizes, data):
    """Heads' reservations take only free GPUs, at most what each asks; every other job's placement
    leaves them untouched; the head sees its own reserved GPUs as free; releasing gives all back."""
    cap = cluster(sizes)
    heads = data.draw(jobs(1, data.draw(st.integers(1, 3))))
    for h in heads:
        cap.reserve(h, "lab-a")
    assert all(r.free >= 0 for r in cap.nodes.values())
    for h in heads:
        assert sum(cap.reserved[h.id].values()) <= h.gpus
    reserved = sum(g for on in cap.reserved.values() for g in on.values())
    assert sum(r.free for r in cap.nodes.values()) + reserved == sum(sizes)
    for d in data.draw(jobs(50, data.draw(st.integers(0, 5)), user=7)):
        placed = cap.place(d, "lab-b")
        if placed is not None:
            cap.take(placed, d.id)
            assert all(r.free >= 0 for r in cap.nodes.values())
    assert sum(g for on in cap.reserved.values() for g in on.values()) == reserved  # untouched by others
    for h in heads:
        assert cap.free("A100", "lab-a", but=h.id) >= sum(cap.reserved[h.id].values())
        on = dict(cap.reserved[h.id])
        free_before = {n: cap.nodes[n].free for n in on}
        cap.give(replace(h, nodes=()))
        assert all(cap.nodes[n].free == free_before[n] + g for n, g in on.items())
    assert cap.reserved == {}
