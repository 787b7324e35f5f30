"""The syncer's pieces alone, on a clock the test moves: the lease elector (a replica that cannot
renew stops acting before another may take over), the supervisor (a failing loop resumes; one
that keeps failing stops the syncer), the orphan decision, and the reflector through 410s and
outages."""
from __future__ import annotations

import threading

import pytest

from kubesim_fixtures import wait_for
from portal.cluster.client import Cluster, ClusterError
from portal.cluster.manifests import ClusterSettings
from portal.sync.clock import FakeClock
from portal.sync.lease import LeaseElector
from portal.sync.reconciler import orphans
from portal.sync.reflector import Reflector
from portal.sync.supervisor import Supervisor


class Unreachable:
    """A Cluster whose API does not answer (what one replica sees in a network partition)."""

    def read_lease(self, name):
        raise ClusterError("The cluster cannot be reached: test", 0, retryable=True)

    write_lease = read_lease


@pytest.fixture
def cluster(fresh_sim, tmp_path):
    sim = fresh_sim()[0]
    c = Cluster.connect(str(sim.write_kubeconfig(tmp_path / "kc")), ClusterSettings(namespace="crater-jobs"))
    yield sim, c
    c.close()


# ---- the lease --------------------------------------------------------------------------------

def test_one_replica_leads_and_the_other_waits(cluster):
    _sim, c = cluster
    clock = FakeClock()
    a, b = LeaseElector(c, "a", clock, 15), LeaseElector(c, "b", clock, 15)
    assert a.step() and not b.step()
    clock.advance(5)
    assert a.step() and not b.step()  # renewed: still a's


def test_a_replica_that_cannot_renew_stops_acting_before_another_takes_over(cluster):
    """Step through time in small increments: at no instant do both count themselves leader, and
    the waiting replica does take over once the lease has expired."""
    _sim, c = cluster
    clock = FakeClock()
    a = LeaseElector(c, "a", clock, 15)
    b = LeaseElector(c, "b", clock, 15)
    assert a.step()
    a.cluster = Unreachable()  # a is cut off from the API from now on
    a_stopped = b_took_over = None
    for tick in range(1, 100):
        clock.advance(0.5)
        a.step()
        b.step()
        assert not (a.leading() and b.leading()), f"both lead at t={tick * 0.5}"
        if a_stopped is None and not a.leading():
            a_stopped = tick * 0.5
        if b.leading():
            b_took_over = tick * 0.5
            break
    assert a_stopped is not None and b_took_over is not None and a_stopped < b_took_over
    assert a_stopped <= 10.0 and b_took_over >= 15.0


def test_a_released_lease_is_taken_at_once(cluster):
    _sim, c = cluster
    clock = FakeClock()
    a, b = LeaseElector(c, "a", clock, 15), LeaseElector(c, "b", clock, 15)
    assert a.step()
    a.release()
    assert not a.leading() and b.step()


def test_the_api_refusing_is_not_an_exception_for_the_elector():
    elector = LeaseElector(Unreachable(), "a", FakeClock(), 15)
    assert elector.step() is False and "cannot be reached" in elector.last_error


# ---- the supervisor ---------------------------------------------------------------------------

def test_a_loop_that_fails_is_logged_and_resumed(caplog):
    stop, calls = threading.Event(), []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("boom")
        stop.wait()

    supervisor = Supervisor(FakeClock(), stop)
    clock = supervisor.clock
    supervisor.spawn("flaky", flaky)

    def resumed():
        clock.advance(5)  # past each backoff
        return len(calls) == 3
    wait_for(resumed, what="the loop resumed")
    assert caplog.text.count("syncer loop flaky failed") == 2 and "boom" in caplog.text
    assert supervisor.healthy() and not supervisor.failed
    stop.set()
    supervisor.join(2)


def test_a_loop_that_keeps_failing_stops_the_syncer():
    stop = threading.Event()
    clock = FakeClock()
    supervisor = Supervisor(clock, stop, max_crashes=3)

    def broken():
        raise RuntimeError("always")

    supervisor.spawn("broken", broken)
    while not stop.is_set():
        clock.advance(1)  # the backoff waits move on
        stop.wait(0.01)
    supervisor.join(2)
    assert supervisor.failed == "broken" and not supervisor.healthy()


def test_a_loop_that_returns_while_the_syncer_runs_counts_as_a_failure():
    stop = threading.Event()
    clock = FakeClock()
    supervisor = Supervisor(clock, stop, max_crashes=0)
    supervisor.spawn("quitter", lambda: None)
    wait_for(stop.is_set, what="the syncer stopped")
    assert supervisor.failed == "quitter"


# ---- the orphan decision ----------------------------------------------------------------------

def test_orphans_are_final_or_unknown_jobs_past_their_grace():
    states = {1: "Running", 2: "Succeeded", 3: "Failed", 5: "Pending"}
    due, waiting = orphans(100.0, {1, 2, 3, 4, 5}, states, {}, grace=30)
    assert due == [] and set(waiting) == {2, 3, 4}  # seen for the first time: the grace starts
    due, waiting = orphans(120.0, {1, 2, 3, 4, 5}, states, waiting, grace=30)
    assert due == []
    due, waiting = orphans(131.0, {1, 2, 4, 5}, states, waiting, grace=30)  # job 3's objects went meanwhile
    assert due == [2, 4] and waiting == {}


def test_objects_of_a_queued_job_are_orphans_but_an_admitted_ones_are_not():
    """A queued job has no cluster objects; these are left from a create that did not answer."""
    due, waiting = orphans(100.0, {8, 9}, {8: "Queued", 9: "Submitting"}, {}, grace=30)
    assert due == [] and set(waiting) == {8}
    due, waiting = orphans(131.0, {8, 9}, {8: "Queued", 9: "Submitting"}, waiting, grace=30)
    assert due == [8]
    due, waiting = orphans(131.0, {8}, {8: "Submitting"}, {8: 100.0}, grace=30)  # admitted again in time
    assert due == [] and waiting == {}


def test_an_active_job_is_never_an_orphan():
    due, waiting = orphans(10**6, {7}, {7: "Running"}, {7: 0.0}, grace=0)
    assert due == [] and waiting == {}


# ---- the reflector ----------------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.relists, self.changes = 0, []

    def relisted(self, kind, objects):
        self.relists += 1

    def changed(self, kind, event_type, obj):
        self.changes.append((event_type, obj["metadata"]["name"]))


def test_the_reflector_lists_watches_and_relists_after_410(cluster):
    sim, c = cluster
    stop = threading.Event()
    reflector = Reflector("nodes", c, FakeClock(), stop, watch_timeout=2)
    recorder = Recorder()
    reflector.listeners.append(recorder)
    thread = threading.Thread(target=reflector.run, daemon=True)
    thread.start()
    try:
        wait_for(reflector.synced.is_set, what="the first list")
        assert len(reflector) == 6 and recorder.relists == 1
        sim.set_node_ready("cpu-0", False)
        wait_for(lambda: ("MODIFIED", "cpu-0") in recorder.changes, what="the node's change")
        sim.store.expire_history()
        sim.store.drop_watches()
        wait_for(lambda: recorder.relists == 2, what="a relist after 410")
        cond = reflector.get("", "cpu-0")["status"]["conditions"]
        assert any(x["type"] == "Ready" and x["status"] != "True" for x in cond)
    finally:
        stop.set()


def test_the_reflector_backs_off_while_the_api_fails_and_catches_up(cluster):
    sim, c = cluster
    stop = threading.Event()
    clock = FakeClock()
    reflector = Reflector("nodes", c, clock, stop, watch_timeout=2)
    recorder = Recorder()
    reflector.listeners.append(recorder)
    sim.faults.set(error_code=503)
    thread = threading.Thread(target=reflector.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: reflector.failures >= 1, what="a failure")
        assert not reflector.synced.is_set() and "injected fault" in reflector.last_error
        sim.faults.clear()
        sim.set_node_ready("cpu-1", False)  # happens while the reflector is not listening
        clock.advance(30)
        wait_for(reflector.synced.is_set, what="the list after the outage")
        cond = reflector.get("", "cpu-1")["status"]["conditions"]
        assert any(x["type"] == "Ready" and x["status"] != "True" for x in cond)
    finally:
        stop.set()


# ---- the event writer -------------------------------------------------------------------------

def test_the_event_writer_keeps_the_newest_events_of_each_job(app, make):
    from portal.extensions import db
    from portal.models import JobEvent
    from portal.sync.writers import KEEP_EVENTS, EventWriter
    alice = make.user("alice")
    lab = make.account("vision-lab", members={alice: "member"})
    busy, quiet = make.job(alice, lab, state="Running"), make.job(alice, lab, state="Running")
    writer = EventWriter(threading.Event())

    def event(job_id, n):
        return {"metadata": {"uid": f"{job_id}-{n}", "creationTimestamp": f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}Z"},
                "involvedObject": {"name": f"crater-{job_id}"}, "reason": f"R{n}", "message": "m", "type": "Normal"}
    writer.relisted("events", [event(busy, n) for n in range(KEEP_EVENTS + 10)] + [event(quiet, n) for n in range(3)])
    with app.app_context():
        writer.write()
        kept = {j: sorted(int(r.reason[1:]) for r in db.session.query(JobEvent).filter_by(job_id=j)) for j in (busy, quiet)}
        db.session.remove()
    assert kept[busy] == list(range(10, KEEP_EVENTS + 10)) and kept[quiet] == [0, 1, 2]
