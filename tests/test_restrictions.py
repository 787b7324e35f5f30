"""Admins' restrictions of a user, enforced alike at every door: submitting (pages and API; queued
jobs wait and start once it is lifted; running jobs stop when the admin says so), the portal
(sessions end, sign-in, API tokens), the storage (/files); validation, audit, and the end that
comes by itself."""
import time
from datetime import datetime, timedelta

import pytest

from conftest import job_of, lab_people
from portal.cluster.client import Cluster, ClusterSettings
from portal.extensions import db
from portal.models import AuditEntry, Restriction, User
from portal.services import jobs
from portal.services.context import Actor
from portal.sync.syncer import SyncSettings, Syncer
from kubesim_fixtures import wait_for

A100 = "NVIDIA-A100-SXM4-80GB"


def restrict(client, user_id, kind, reason="sharing an account", until="", stop=False):
    data = {"kind": kind, "reason": reason, "until": until}
    if stop:
        data["stop_running"] = "y"
    return client.post(f"/admin/users/{user_id}/restrictions", data)


def active_ids(app, user_id):
    with app.app_context():
        now = datetime.utcnow()
        return [r.id for r in db.session.query(Restriction).filter_by(user_id=user_id) if r.active(now)]


def test_storage_and_portal_restrictions_validation_audit_and_the_end(app, make, new_client, tmp_path):
    app.config["STORAGE_ROOT"] = str(tmp_path / "storage")
    ids = lab_people(make, 4)
    root, bob = new_client().login(ids["root"]), new_client().login(ids["bob"])
    token = make.api_token(ids["bob"], name="script")[1]
    assert bob.get("/files/users/bob").status_code == 200
    # what the form refuses
    assert restrict(root, ids["bob"], "storage", reason="").status_code == 422
    assert restrict(root, ids["bob"], "storage", until="2001-01-01T00:00").status_code == 422
    assert restrict(root, ids["bob"], "everything").status_code == 422
    assert restrict(root, ids["root"], "portal").status_code == 409  # never oneself
    assert restrict(new_client().login(ids["carol"]), ids["bob"], "portal").status_code == 403  # admins only
    # the storage: files refuse with the reason and the end; the rest of the portal answers
    until = (datetime.utcnow() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    assert restrict(root, ids["bob"], "storage", reason="filled the disk", until=until).status_code == 303
    refused = bob.get("/files/users/bob")
    text = refused.get_data(as_text=True)
    assert refused.status_code == 403 and "filled the disk" in text and until.replace("T", " ") in text
    assert bob.get("/jobs").status_code == 200
    page = root.get(f"/admin/users/{ids['bob']}/restrictions").get_data(as_text=True)
    assert "filled the disk" in page and "in force" in page
    # it ends by itself at its end time (moved into the past here), and the flag clears
    with app.app_context():
        db.session.query(Restriction).update({"until": datetime.utcnow() - timedelta(seconds=1)})
        db.session.commit()
    assert bob.get("/files/users/bob").status_code == 200
    with app.app_context():
        assert db.session.get(User, ids["bob"]).restricted is False
    # the portal: the session ends, sign-in and tokens are refused with the reason
    assert restrict(root, ids["bob"], "portal", reason="compromised laptop").status_code == 303
    assert bob.get("/jobs").status_code == 302  # signed out
    api = new_client().get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 403 and "compromised laptop" in api.get_json()["detail"]
    [restriction] = active_ids(app, ids["bob"])
    assert root.post(f"/admin/users/{ids['bob']}/restrictions/{restriction}/lift", {}).status_code == 303
    assert new_client().get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert new_client().login(ids["bob"]).get("/jobs").status_code == 200
    with app.app_context():
        actions = [a.action for a in db.session.query(AuditEntry).filter(AuditEntry.action.like("user.%restrict"))]
    assert actions == ["user.restrict", "user.restrict", "user.unrestrict"]


def test_local_sign_in_is_refused_with_the_reason(app, make, new_client):
    admin = make.user("root", role="admin")
    eve = make.user("eve", password="eve-password-1")
    assert restrict(new_client().login(admin), eve, "portal", reason="ask the lab manager").status_code == 303
    client = new_client()
    refused = client.post("/login", {"username": "eve", "password": "eve-password-1"})
    assert refused.status_code == 403 and "ask the lab manager" in refused.get_data(as_text=True)


@pytest.fixture
def app_config(fresh_sim, tmp_path):
    sim = fresh_sim(time_scale=5, tick=0.05)[0]
    return {"KUBECONFIG": str(sim.write_kubeconfig(tmp_path / "kc"))}


def test_queued_jobs_wait_while_restricted_and_running_ones_stop_when_asked(app, make, new_client):
    ids = lab_people(make, 1)  # vision-lab: one GPU
    cluster = Cluster.connect(app.config["KUBECONFIG"], ClusterSettings(namespace="crater-jobs"))
    syncer = Syncer(app, cluster, settings=SyncSettings(lease_seconds=3, watch_timeout=5, reconcile_seconds=0.5)).start()
    try:
        def submit(name):
            with app.app_context():
                form = jobs.Submission(job_type="batch", account_id=ids["lab"], display_name=name, image="pytorch:2",
                                       command="sleep infinity", gpus=1, gpu_model=A100)
                return jobs.submit_job(Actor(db.session.get(User, ids["alice"])), form, cluster,
                                       jobs.SubmitSettings.from_config(app.config)).id
        first = submit("first")
        wait_for(lambda: job_of(app, first).state == "Running", timeout=30, what="the first job running")
        second = submit("second")
        assert job_of(app, second).state == "Queued"
        root, alice = new_client().login(ids["root"]), new_client().login(ids["alice"])
        assert restrict(root, ids["alice"], "submit", reason="over the fair share").status_code == 303
        refused = alice.post("/jobs/new/batch", {"account_id": ids["lab"], "display_name": "third", "image": "pytorch:2",
                                                 "command": "python x.py", "command_mode": "shell", "gpus": "0", "cpu": "1",
                                                 "memory_gib": "1", "time_limit_hours": "1", "idempotency_key": "k-1"})
        assert refused.status_code == 403 and "over the fair share" in refused.get_data(as_text=True)
        # the admitter's next pass says why it waits
        wait_for(lambda: "restricted from submitting jobs" in alice.get(f"/jobs/{second}").get_data(as_text=True),
                 timeout=15, what="the queued job's page naming the restriction")
        with app.app_context():
            jobs.stop_job(Actor(db.session.get(User, ids["root"])), first, cluster)
        wait_for(lambda: job_of(app, first).state == "Stopped", timeout=30, what="the first job stopped")
        time.sleep(3)  # several admitter passes: the queued job waits while its owner is restricted
        assert job_of(app, second).state == "Queued"
        [restriction] = active_ids(app, ids["alice"])
        assert root.post(f"/admin/users/{ids['alice']}/restrictions/{restriction}/lift", {}).status_code == 303
        wait_for(lambda: job_of(app, second).state == "Running", timeout=30, what="the queued job admitted once lifted")
        # restricted again, and this time the admin stops what runs
        assert restrict(root, ids["alice"], "submit", reason="second warning", stop=True).status_code == 303
        ended = wait_for(lambda: (lambda j: j if j.state == "Stopped" else None)(job_of(app, second)), timeout=30,
                         what="the running job stopped")
        assert ended.reason == "StoppedByAdmin" and "second warning" in ended.message
    finally:
        syncer.stop()
        cluster.close()
