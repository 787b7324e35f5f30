"""Submitting and stopping jobs against kubesim through the real client: quota first, then the
cluster; failures end SubmitError with no orphan objects; a double submit makes one job; the
Jupyter token never reaches the database; only the owner, the account's managers and admins see
or stop a job."""
import pytest
from sqlalchemy import text

from kubesim_fixtures import wait_for
from flask import current_app
from portal.cluster.client import Cluster
from portal.cluster.manifests import ClusterSettings
from portal.extensions import db
from portal.models import AuditEntry, Job, User
from portal.services import jobs
from portal.services.context import Actor
from portal.services.errors import Conflict, NotFound, ValidationFailed
from portal.services.scheduling.admission import QuotaExceeded

SETTINGS = ClusterSettings(namespace="crater-jobs")
A = "kubesim.crater.io/"


@pytest.fixture
def world(app, make, fresh_sim, tmp_path):
    sim, core, batch = fresh_sim()
    ids = {"alice": make.user("alice"), "bob": make.user("bob"), "carol": make.user("carol"),
           "root": make.user("root", role="admin")}
    ids["lab"] = make.account("vision-lab", gpu_quota=8, members={ids["alice"]: "member", ids["bob"]: "member",
                                                                  ids["carol"]: "manager"})
    cluster = Cluster.connect(str(sim.write_kubeconfig(tmp_path / "kc")), SETTINGS)
    yield {**ids, "sim": sim, "core": core, "batch": batch, "cluster": cluster}
    cluster.api.close()


def as_user(world, name):
    return Actor(db.session.get(User, world[name]), "127.0.0.1")


def form(world, **kw):
    base = dict(job_type="batch", account_id=world["lab"], display_name="训练", image="pytorch/pytorch:2.4",
                command="python train.py", gpus=1, gpu_model="NVIDIA-A100-SXM4-80GB",
                annotations=((A + "run-seconds", "forever"),))
    base.update(kw)
    return jobs.Submission(**base)


def cluster_names(world):
    return {
        "jobs": [j.metadata.name for j in world["batch"].list_namespaced_job("crater-jobs").items],
        "services": [s.metadata.name for s in world["core"].list_namespaced_service("crater-jobs").items],
        "secrets": [s.metadata.name for s in world["core"].list_namespaced_secret("crater-jobs").items],
    }


def test_submit_creates_the_job_and_marks_it_pending(app, world):
    with app.app_context():
        job = jobs.submit_job(as_user(world, "alice"), form(world), world["cluster"], jobs.SubmitSettings.from_config(current_app.config))
        assert (job.state, job.reason, job.gpus) == ("Pending", "Created", 1)
        job_id = job.id
        assert db.session.query(AuditEntry).filter_by(action="job.submit").count() == 1
    assert cluster_names(world)["jobs"] == [f"crater-{job_id}"]
    pods = wait_for(lambda: world["core"].list_namespaced_pod("crater-jobs", label_selector=f"crater.io/job-id={job_id}").items)
    assert pods[0].metadata.labels["crater.io/user"] == "alice"


def test_api_failure_ends_submit_error_without_orphans(app, world):
    world["sim"].faults.set(error_code=503)
    with app.app_context():
        job = jobs.submit_job(as_user(world, "alice"), form(world), world["cluster"], jobs.SubmitSettings.from_config(current_app.config))
        assert (job.state, job.reason) == ("Failed", "SubmitError") and "503" in job.message
    world["sim"].faults.clear()
    assert cluster_names(world) == {"jobs": [], "services": [], "secrets": []}


def test_failure_after_the_job_was_created_removes_it(app, world):
    world["sim"].faults.set(error_code=500, path_prefix="/api/v1/namespaces/crater-jobs/secrets")
    with app.app_context():
        job = jobs.submit_job(as_user(world, "alice"), form(world, job_type="jupyter", command=()), world["cluster"], jobs.SubmitSettings.from_config(current_app.config))
        assert job.reason == "SubmitError"
    world["sim"].faults.clear()
    wait_for(lambda: cluster_names(world) == {"jobs": [], "services": [], "secrets": []}, what="no orphans")


def test_a_double_submit_makes_one_job(app, world):
    with app.app_context():
        first = jobs.submit_job(as_user(world, "alice"), form(world, idempotency_key="double-click-1"), world["cluster"], jobs.SubmitSettings.from_config(current_app.config))
        again = jobs.submit_job(as_user(world, "alice"), form(world, idempotency_key="double-click-1"), world["cluster"], jobs.SubmitSettings.from_config(current_app.config))
        assert first.id == again.id and db.session.query(Job).count() == 1
    assert len(cluster_names(world)["jobs"]) == 1


def test_a_malformed_idempotency_key_is_refused_by_the_service_itself(app, world):
    """The key's rule lives in the service's rules, so no entry point (form, API, CLI) skips it."""
    with app.app_context():
        with pytest.raises(ValidationFailed) as caught:
            jobs.submit_job(as_user(world, "alice"), form(world, idempotency_key="k-1"), world["cluster"], jobs.SubmitSettings.from_config(current_app.config))
        assert set(caught.value.errors) == {"idempotency_key"} and db.session.query(Job).count() == 0
    assert cluster_names(world)["jobs"] == []


def test_quota_refusal_creates_nothing(app, world):
    with app.app_context():
        with pytest.raises(QuotaExceeded, match="uses 0 of 8 GPUs; this job asks for 16"):
            jobs.submit_job(as_user(world, "alice"), form(world, gpus=8, workers=2, job_type="distributed"), world["cluster"], jobs.SubmitSettings.from_config(current_app.config))
        assert db.session.query(Job).count() == 0
    assert cluster_names(world)["jobs"] == []


def test_the_jupyter_token_never_reaches_the_database(app, world):
    import base64
    with app.app_context():
        job = jobs.submit_job(as_user(world, "alice"), form(world, job_type="jupyter", command=()), world["cluster"], jobs.SubmitSettings.from_config(current_app.config))
        job_id = job.id
    secret = world["core"].read_namespaced_secret(f"crater-{job_id}", "crater-jobs")
    token = base64.b64decode(secret.data["token"]).decode()
    assert len(token) >= 32
    with app.app_context():
        for table in ("jobs", "audit_log"):
            for row in db.session.execute(text(f"SELECT * FROM {table}")):
                assert token not in " ".join(str(v) for v in row)


def test_who_may_see_and_stop_a_job(app, world):
    with app.app_context():
        job_id = jobs.submit_job(as_user(world, "alice"), form(world), world["cluster"], jobs.SubmitSettings.from_config(current_app.config)).id
        with pytest.raises(NotFound):
            jobs.get_job(as_user(world, "bob"), job_id)  # another member: as if it did not exist
        with pytest.raises(NotFound):
            jobs.stop_job(as_user(world, "bob"), job_id, world["cluster"])
        assert jobs.get_job(as_user(world, "carol"), job_id).id == job_id  # the account's manager
        stopped = jobs.stop_job(as_user(world, "carol"), job_id, world["cluster"])
        assert (stopped.state, stopped.reason) == ("Stopped", "StoppedByAdmin")
        with pytest.raises(Conflict):
            jobs.stop_job(as_user(world, "alice"), job_id, world["cluster"])
    wait_for(lambda: cluster_names(world)["jobs"] == [], what="cluster objects removed")


def test_the_owner_stops_their_job(app, world):
    with app.app_context():
        job_id = jobs.submit_job(as_user(world, "alice"), form(world), world["cluster"], jobs.SubmitSettings.from_config(current_app.config)).id
        assert jobs.stop_job(as_user(world, "alice"), job_id, world["cluster"]).reason == "StoppedByUser"
