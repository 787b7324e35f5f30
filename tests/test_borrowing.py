"""Borrowing and reclaim end to end, against kubesim with the syncer running: a job beyond its
account's guarantee runs on idle GPUs as borrowed; another account's job within its guarantee
takes the GPUs back (the borrowed job's Job is suspended, its pod Terminating for the grace, then
gone); the preempted job goes back to its queue in its original place, is told why, and runs again
(resumed, the same Job) when GPUs are free. Nothing ever holds more GPUs than the cluster has."""
from __future__ import annotations

import threading
import time

import pytest

from conftest import job_of
from kubesim_fixtures import wait_for
from flask import current_app
from portal.cluster.client import Cluster
from portal.cluster.manifests import ClusterSettings
from portal.extensions import db
from portal.models import AuditEntry, Job, JobEvent, Node, Notification, Preemption, QueueUsage, User
from portal.services import jobs, notify, policies
from portal.services.context import SYSTEM, Actor
from portal.services.scheduling.admission import QuotaExceeded
from portal.services.scheduling.state import QueueSettings
from portal.sync.syncer import SyncSettings, Syncer
from portal.vocabulary import history_words

A = "kubesim.crater.io/"
A100 = "NVIDIA-A100-SXM4-80GB"


@pytest.fixture
def app_config(fresh_sim, tmp_path):
    sim, core, _batch = fresh_sim(time_scale=1, tick=0.05)
    return {"KUBECONFIG": str(sim.write_kubeconfig(tmp_path / "kc")), "_core": core}


@pytest.fixture
def world(app, make, app_config):
    ids = {"alice": make.user("alice"), "bob": make.user("bob")}
    ids["nlp"] = make.account("nlp-lab", members={ids["alice"]: "member"}, gpu_quota=8)
    ids["vision"] = make.account("vision-lab", members={ids["bob"]: "member"}, gpu_quota=8)
    with app.app_context():  # a short grace, no minimum run time, no backoff: the test runs in seconds
        policies.update(SYSTEM, "preemption", {"grace_seconds": "3", "min_run_minutes": "0", "backoff_minutes": "0"})
    cluster = Cluster.connect(app.config["KUBECONFIG"], ClusterSettings(namespace="crater-jobs"))
    ids["cluster"], ids["core"] = cluster, app_config["_core"]
    syncer = Syncer(app, cluster, settings=SyncSettings(lease_seconds=3, watch_timeout=5, reconcile_seconds=1,
                                                        outbox_seconds=0.3)).start()
    yield ids
    syncer.stop()
    cluster.close()


def submit(app, world, who, account, gpus=8, run="forever", when_full="queue", job_type="batch", **kw):
    with app.app_context():
        actor = Actor(db.session.get(User, world[who]), "")
        form = jobs.Submission(job_type=job_type, account_id=world[account], display_name=f"{who} job", image="pytorch:2",
                               command="python train.py", gpus=gpus, gpu_model=A100,
                               annotations=((A + "run-seconds", run), (A + "termination-seconds", "30")),
                               queue_if_full=when_full != "refuse", borrow=when_full == "borrow", mount_home=True, **kw)
        return jobs.submit_job(actor, form, world["cluster"], jobs.SubmitSettings.from_config(current_app.config)).id


def _usage(app, account_id, user_id):
    with app.app_context():
        row = db.session.get(QueueUsage, (account_id, user_id))
        value = row.gpu_seconds if row else 0.0
        db.session.remove()
        return value


def _events(app, job_id):
    with app.app_context():
        reasons = {e.reason for e in db.session.query(JobEvent).filter_by(job_id=job_id)}
        db.session.remove()
        return reasons


class GpuWatch:
    """Samples the node inventory the syncer writes: no node ever holds more GPUs than it has."""

    def __init__(self, app):
        self.app, self.worst, self.stop = app, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            with self.app.app_context():
                for n in db.session.query(Node).filter(Node.gpus > 0):
                    self.worst = max(self.worst, n.gpus_requested - n.gpus)
                db.session.remove()
            time.sleep(0.1)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        return self.worst


def test_a_borrowed_job_is_preempted_with_grace_requeued_in_place_and_resumed(app, world):
    watch = GpuWatch(app)
    own = submit(app, world, "alice", "nlp")  # nlp-lab's guarantee: 8 A100
    lent = submit(app, world, "alice", "nlp", when_full="borrow")  # the other 8, idle, lent
    wait_for(lambda: job_of(app, own).state == job_of(app, lent).state == "Running", timeout=30)
    assert (job_of(app, own).borrowed, job_of(app, lent).borrowed) == (False, True)
    job_obj = world["cluster"].batch.read_namespaced_job(f"crater-{lent}", "crater-jobs")
    uid = job_obj.metadata.uid
    assert job_obj.metadata.labels["crater.io/class"] == "borrowed"
    env = {e.name: e.value for e in job_obj.spec.template.spec.containers[0].env}
    assert env["CRATER_PREEMPTIBLE"] == "true" and env["CRATER_CHECKPOINT_DIR"].endswith(f"/checkpoints/{lent}")
    assert job_obj.spec.template.spec.termination_grace_period_seconds == 3
    # A job without the borrow choice waits: the guarantee is used and no GPU is idle.
    waits = submit(app, world, "alice", "nlp", gpus=1)
    assert job_of(app, waits).state == "Queued"

    # vision-lab's job within its guarantee needs the GPUs: the borrowed job is preempted.
    charged = _usage(app, world["nlp"], world["alice"])  # two admissions' entry penalties (and a few seconds' use)
    t0 = time.monotonic()
    owner = submit(app, world, "bob", "vision", run="4")
    wait_for(lambda: job_of(app, lent).state == "Queued", timeout=15, what="the borrowed job preempted")
    penalty = 8 * QueueSettings.from_config(app.config).penalty_seconds
    assert charged >= 2 * penalty * 0.99  # the fair order's charge for the run it lost is taken back
    assert charged - penalty * 1.01 <= _usage(app, world["nlp"], world["alice"]) <= charged - penalty * 0.9
    job = job_of(app, lent)
    assert job.reason == "Preempted" and job.preemptions == 1 and job.started_at is None
    obj = wait_for(lambda: (o := world["cluster"].batch.read_namespaced_job(f"crater-{lent}", "crater-jobs")).spec.suspend and o,
                   timeout=5, what="the Job suspended")
    assert obj.metadata.uid == uid  # suspended: the Job and its spec stay
    def terminating():
        pods = world["core"].list_namespaced_pod("crater-jobs", label_selector=f"crater.io/job-id={lent}").items
        return pods and all(p.metadata.deletion_timestamp for p in pods)
    wait_for(terminating, timeout=5, what="the pod Terminating for the grace")
    wait_for(lambda: not world["core"].list_namespaced_pod("crater-jobs", label_selector=f"crater.io/job-id={lent}").items,
             timeout=15, what="the preempted pod gone after its grace")
    wait_for(lambda: job_of(app, owner).state == "Running", timeout=15, what="the owner's job running")
    assert time.monotonic() - t0 < 3 + 20  # the grace and a few seconds (generous: a loaded machine)

    with app.app_context():
        p = db.session.query(Preemption).filter_by(job_id=lent).one()
        assert (p.by_job_id, p.by_account, p.account, p.gpus, p.grace_seconds) == (owner, "vision-lab", "nlp-lab", 8, 3)
        assert p.gpu_seconds_lost > 0
        assert db.session.query(Notification).filter_by(job_id=lent, kind="job_preempted").count() == 1
        lines = [history_words(e) for e in db.session.query(AuditEntry).filter_by(target_type="job", target_id=str(lent))]
        assert any(f"so that vision-lab's job {owner} could use its guaranteed GPUs" in line for line in lines)
        mail = notify.job_preempted_message(db.session.get(Job, lent), "crater@example.edu", "https://crater.example.edu")
        assert "was preempted" in mail["Subject"] and f"vision-lab's job {owner}" in mail.get_content()
        assert "$CRATER_CHECKPOINT_DIR" in mail.get_content() and f"/jobs/{lent}" in mail.get_content()
        db.session.remove()
    wait_for(lambda: _events(app, lent) & {"Suspended"}, timeout=10, what="the cluster's event on the job page")

    # The owner's job ends: the preempted job runs again, resumed (the same Job), before the job
    # queued after it, whose owner did not choose to borrow.
    try:
        wait_for(lambda: job_of(app, lent).state == "Running", timeout=30, what="the preempted job running again")
    except AssertionError:
        with app.app_context():
            nodes = [(n.name, n.gpus, n.gpus_requested, n.ready, n.unschedulable) for n in db.session.query(Node) if n.gpus]
            db.session.remove()
        raise AssertionError((job_of(app, lent).state, job_of(app, lent).queue_blocker, job_of(app, owner).state,
                              nodes)) from None
    obj = world["cluster"].batch.read_namespaced_job(f"crater-{lent}", "crater-jobs")
    assert obj.metadata.uid == uid and not obj.spec.suspend
    assert job_of(app, waits).state == "Queued"

    # nlp-lab's own job ends: the borrowed job now fits the guarantee and becomes an in-quota job
    # (it is no longer preempted), its label too; the job queued without borrowing waits on.
    with app.app_context():
        jobs.stop_job(Actor(db.session.get(User, world["alice"]), ""), own, world["cluster"])
        db.session.remove()
    wait_for(lambda: not job_of(app, lent).borrowed, timeout=15, what="the borrowed job reclassified")
    wait_for(lambda: world["cluster"].batch.read_namespaced_job(f"crater-{lent}", "crater-jobs")
             .metadata.labels["crater.io/class"] == "guaranteed", timeout=10, what="its label")
    assert watch.close() <= 0  # never more GPUs held on a node than it has


def test_jupyter_borrows_only_where_the_account_allows_it(app, world):
    with pytest.raises(QuotaExceeded) as refused:
        submit(app, world, "alice", "nlp", job_type="jupyter", when_full="borrow", gpus=1)
    assert refused.value.kind == "borrow_jupyter" and "may not borrow" in str(refused.value)


def test_the_reclaim_settings_refuse_bad_values_and_non_admins(app, make, new_client):
    admin = new_client().login(make.user("root", role="admin"))
    for values in ({"grace_seconds": "-1"}, {"grace_seconds": "3601"}, {"min_run_minutes": "NaN"}, {"max_preemptions": "0"},
                   {"backoff_minutes": "1e9"}, {"owner_wait_minutes": "soon"}):
        assert admin.post("/admin/policies/preemption", values).status_code == 422, values
    with app.app_context():
        assert policies.get("preemption").params == {k: v[0] for k, v in policies.DEFAULTS["preemption"].items()}
    assert new_client().login(make.user("eve")).post("/admin/policies/preemption", {"grace_seconds": "5"}).status_code == 403
    assert admin.post("/admin/policies/preemption", {"grace_seconds": "120"}).status_code == 303
    page = admin.get("/admin/policies?policy=preemption").get_data(as_text=True)
    assert 'id="preemption-log"' in page and "Nothing was preempted yet." in page
