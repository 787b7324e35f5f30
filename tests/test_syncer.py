"""The syncer against kubesim: job states, reasons and times reach the database; it converges
through dropped watches, expired resourceVersions and its own restart; one replica leads; a job
whose objects vanish becomes Lost; a heartbeat is written."""
import pytest

from kubesim_fixtures import wait_for
from flask import current_app
from portal.cluster.client import Cluster
from portal.cluster.manifests import ClusterSettings
from portal.extensions import db
from portal.models import Job, SyncHeartbeat, User
from portal.services import jobs
from portal.services.context import Actor
from portal.sync.syncer import SyncSettings, Syncer

A = "kubesim.crater.io/"


@pytest.fixture
def world(app, make, fresh_sim, tmp_path):
    sim, core, batch = fresh_sim()
    alice = make.user("alice")
    lab = make.account("vision-lab", members={alice: "member"})
    kubeconfig = str(sim.write_kubeconfig(tmp_path / "kc"))
    clusters, syncers = [], []

    def new_cluster():
        c = Cluster.connect(kubeconfig, ClusterSettings(namespace="crater-jobs"))
        clusters.append(c)
        return c

    def new_syncer(**kw):
        settings = SyncSettings(lease_seconds=kw.pop("lease_seconds", 3), watch_timeout=5, lost_grace=1.0)
        s = Syncer(app, new_cluster(), settings=settings, **kw).start()
        syncers.append(s)
        return s

    yield {"sim": sim, "core": core, "batch": batch, "alice": alice, "lab": lab, "cluster": new_cluster(),
           "syncer": new_syncer}
    for s in syncers:
        s.stop()
    for c in clusters:
        c.close()


def submit(app, world, run="3", gpus=1, **annotations):
    with app.app_context():
        actor = Actor(db.session.get(User, world["alice"]), "")
        form = jobs.Submission(job_type="batch", account_id=world["lab"], display_name="job", image="pytorch:2",
                               command="python train.py", gpus=gpus, gpu_model="NVIDIA-A100-SXM4-80GB",
                               annotations=((A + "run-seconds", run), *annotations.items()))
        return jobs.submit_job(actor, form, world["cluster"], jobs.SubmitSettings.from_config(current_app.config)).id


def row(app, job_id):
    with app.app_context():
        job = db.session.get(Job, job_id)
        result = (job.state, job.reason, job.exit_code, job.started_at, job.finished_at, job.message)
        db.session.remove()
        return result


def wait_state(app, job_id, state, timeout=15):
    return wait_for(lambda: (lambda r: r if r[0] == state else None)(row(app, job_id)), timeout=timeout,
                    what=f"job {job_id} {state}")


def test_states_reach_the_database(app, world):
    world["syncer"]()
    job_id = submit(app, world, run="40")
    wait_state(app, job_id, "Running")
    state, reason, code, started, finished, _m = wait_state(app, job_id, "Succeeded")
    assert (reason, code) == ("Completed", 0) and started and finished and finished >= started


@pytest.mark.parametrize("annotations, reason, code", [
    ({A + "exit-code": "3"}, "ExitCode", 3), ({A + "oom": "true"}, "OOMKilled", 137)])
def test_failures_explain_themselves(app, world, annotations, reason, code):
    world["syncer"]()
    job_id = submit(app, world, **annotations)
    _state, got_reason, got_code, _s, _f, message = wait_state(app, job_id, "Failed")
    assert (got_reason, got_code) == (reason, code) and message


def test_pending_carries_the_schedulers_message(app, world):
    world["syncer"]()
    # One A100 node cordoned, the other running a job. The admitter sees free GPUs, not free CPU: a
    # job asking for 125 of the largest node's 128 cores is admitted, and the scheduler says why it
    # cannot be placed.
    world["core"].patch_node("a100-1", {"spec": {"unschedulable": True}})
    wait_state(app, submit(app, world, run="forever", gpus=8), "Running")
    with app.app_context():
        actor = Actor(db.session.get(User, world["alice"]), "")
        form = jobs.Submission(job_type="batch", account_id=world["lab"], display_name="big", image="pytorch:2",
                               command="python train.py", cpu_milli=125_000, annotations=((A + "run-seconds", "forever"),))
        job_id = jobs.submit_job(actor, form, world["cluster"], jobs.SubmitSettings.from_config(current_app.config)).id
    state, reason, _c, _s, _f, message = wait_for(lambda: (lambda r: r if r[1] == "Unschedulable" else None)(row(app, job_id)))
    assert state == "Pending" and "1 node(s) were unschedulable" in message and "Insufficient cpu" in message


def test_converges_through_dropped_watches_and_expired_versions(app, world):
    world["syncer"]()
    first = submit(app, world, run="20")
    wait_state(app, first, "Running")
    world["sim"].store.drop_watches()
    second = submit(app, world, run="20")
    world["sim"].store.expire_history()
    world["sim"].store.drop_watches()
    for job_id in (first, second):
        wait_state(app, job_id, "Succeeded", timeout=20)


def test_a_final_state_reached_while_the_syncer_was_down_is_recorded(app, world):
    s = world["syncer"]()
    job_id = submit(app, world, run="100")  # 5 s at 20x: long enough to be seen Running on a loaded machine
    wait_state(app, job_id, "Running")
    s.stop()
    wait_for(lambda: any(c.type == "Complete" for c in
                         (world["batch"].read_namespaced_job(f"crater-{job_id}", "crater-jobs").status.conditions or [])),
             what="the job completing in the cluster")
    assert row(app, job_id)[0] == "Running"  # nobody watching
    world["syncer"]()
    wait_state(app, job_id, "Succeeded")


def test_only_one_replica_leads_and_another_takes_over(app, world):
    first = world["syncer"]()
    wait_for(first.leading, what="first leads")
    second = world["syncer"]()
    import time
    time.sleep(2)
    assert not second.leading()
    first.stop()  # releases the lease
    wait_for(second.leading, timeout=10, what="takeover")
    job_id = submit(app, world, run="10")
    wait_state(app, job_id, "Succeeded")


def test_vanished_objects_make_a_job_lost_but_a_stop_stays_stopped(app, world):
    world["syncer"]()
    lost = submit(app, world, run="forever")
    stopped = submit(app, world, run="forever")
    wait_state(app, lost, "Running")
    wait_state(app, stopped, "Running")
    world["batch"].delete_namespaced_job(f"crater-{lost}", "crater-jobs", propagation_policy="Background")
    with app.app_context():
        jobs.stop_job(Actor(db.session.get(User, world["alice"]), ""), stopped, world["cluster"])
    assert wait_state(app, lost, "Lost")[1] == "Lost"
    import time
    time.sleep(1.5)
    assert row(app, stopped)[:2] == ("Stopped", "StoppedByUser")


def test_a_submission_abandoned_half_way_ends_submit_error(app, world, make):
    """The web process died after inserting the row and before creating anything: the job does
    not stay Submitting; a fresh submission in flight is left alone."""
    from datetime import timedelta

    from portal.models import utcnow
    abandoned = make.job(world["alice"], world["lab"], state="Submitting", created_at=utcnow() - timedelta(minutes=10))
    in_flight = make.job(world["alice"], world["lab"], state="Submitting")
    world["syncer"]()
    assert wait_state(app, abandoned, "Failed")[1] == "SubmitError"
    assert row(app, in_flight)[0] == "Submitting"


def test_heartbeat(app, world):
    s = world["syncer"]()
    wait_for(s.leading)

    def beat():
        with app.app_context():
            hb = db.session.get(SyncHeartbeat, 1)
            result = (hb.holder, hb.beat_at) if hb else None
            db.session.remove()
            return result
    holder, at = wait_for(beat, what="a heartbeat")
    assert holder == s.identity and at is not None


def test_crater_sync_command_runs_until_sigterm(app, world, tmp_path, schema):
    """`crater sync` as its own process, configured through CRATER_* variables."""
    import os
    import signal
    import subprocess
    import sys
    kubeconfig = world["sim"].write_kubeconfig(tmp_path / "sync-kc")
    env = {**os.environ, "CRATER_DATABASE_URL": schema, "CRATER_KUBECONFIG": str(kubeconfig),
           "CRATER_JOB_NAMESPACE": "crater-jobs", "CRATER_SECRET_KEY": "x" * 40}
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "sync"], env=env, stdout=subprocess.PIPE,
                            text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert proc.stdout.readline().startswith("syncer ")
        job_id = submit(app, world, run="10")
        wait_state(app, job_id, "Succeeded", timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def nodes(app):
    from portal.models import Node
    with app.app_context():
        result = {n.name: (n.gpu_model, n.gpus, n.gpus_requested, n.ready, n.unschedulable, n.gpus_free)
                  for n in db.session.query(Node)}
        db.session.remove()
        return result


def test_node_inventory_follows_the_cluster(app, world):
    world["syncer"]()
    inventory = wait_for(lambda: (lambda n: n if len(n) == 6 else None)(nodes(app)), what="six nodes")
    assert inventory["a100-0"] == ("NVIDIA-A100-SXM4-80GB", 8, 0, True, False, 8)
    assert inventory["cpu-0"][:3] == ("", 0, 0)
    job_id = submit(app, world, run="forever")
    wait_state(app, job_id, "Running")
    wait_for(lambda: sum(n[2] for n in nodes(app).values()) == 1, what="one GPU requested")
    world["core"].patch_node("rtx4090-0", {"spec": {"unschedulable": True}})
    world["sim"].set_node_ready("rtx4090-1", False)
    after = wait_for(lambda: (lambda n: n if n["rtx4090-0"][4] and not n["rtx4090-1"][3] else None)(nodes(app)))
    assert after["rtx4090-0"][5] == 0 and after["rtx4090-1"][5] == 0  # no free GPUs there any more
    with app.app_context():
        jobs.stop_job(Actor(db.session.get(User, world["alice"]), ""), job_id, world["cluster"])
    wait_for(lambda: sum(n[2] for n in nodes(app).values()) == 0, what="the GPU given back")


def test_events_and_the_last_log_lines_are_kept(app, world):
    from portal.models import JobEvent
    world["syncer"]()
    job_id = submit(app, world, run="10", **{A + "log": "epoch 1 done\nsaved model.pt"})
    wait_state(app, job_id, "Succeeded")

    def kept():
        with app.app_context():
            job = db.session.get(Job, job_id)
            reasons = {e.reason for e in db.session.query(JobEvent).filter_by(job_id=job_id)}
            result = (job.last_log, reasons)
            db.session.remove()
            return result if job.last_log and {"Scheduled", "Started", "Completed"} <= reasons else None
    last_log, reasons = wait_for(kept, what="kept log and events")
    assert "saved model.pt" in last_log
    assert {"SuccessfulCreate", "Pulling"} <= reasons
