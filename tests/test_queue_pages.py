"""The queue through the pages, with the portal's real client talking to kubesim and the syncer
(and its admitter) running: a submission over quota is queued and says what it waits for, its place
and an estimate; a cancelled queued job never reaches the cluster; stopping the job that holds the
quota admits the next one within seconds, and it runs to the end; the queue pages and who may see
them."""
import pytest

from conftest import lab_people
from kubesim_fixtures import is_gone, wait_for
from portal.extensions import db
from portal.models import Job
from test_job_pages import _q as q
from test_job_pages import syncer  # noqa: F401  (the fixture: the syncer against this test's kubesim)

A100 = "NVIDIA-A100-SXM4-80GB"


@pytest.fixture
def cluster_sim(fresh_sim):
    return fresh_sim(time_scale=4)


@pytest.fixture
def app_config(cluster_sim, tmp_path):
    return {"KUBECONFIG": str(cluster_sim[0].write_kubeconfig(tmp_path / "kc"))}


@pytest.fixture
def people(make):
    return lab_people(make, gpu_quota=2)


def form(people, key, **kw):
    data = {"display_name": "sweep", "account_id": str(people["lab"]), "image": "pytorch/pytorch:2.4",
            "command": "python train.py", "command_mode": "shell", "gpu_model": A100, "gpus": "1", "cpu": "2",
            "memory_gib": "8", "time_limit_hours": "2", "idempotency_key": key}
    data.update(kw)
    return data


def job_id_of(response) -> int:
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    return int(response.location.rsplit("/", 1)[1])


def state_of(app, job_id):
    return q(app, lambda: db.session.get(Job, job_id).state)


@pytest.mark.usefixtures("syncer")
def test_over_quota_jobs_queue_say_why_and_start_when_the_quota_frees(app, new_client, people, cluster_sim):
    batch = cluster_sim[2]
    alice, bob = new_client().login(people["alice"]), new_client().login(people["bob"])
    holder = job_id_of(alice.post("/jobs/new/batch", form(people, "hold-000001", display_name="holder", gpus="2",
                                                          command="sleep infinity")))
    queued = job_id_of(bob.post("/jobs/new/batch", form(people, "queued-00001", display_name="next")))
    cancelled = job_id_of(bob.post("/jobs/new/batch", form(people, "cancel-00001", display_name="later")))
    assert state_of(app, queued) == state_of(app, cancelled) == "Queued"
    page = bob.get(f"/jobs/{queued}").get_data(as_text=True)
    assert "Account vision-lab uses 2 of 2 GPUs; this job asks for 1." in page
    assert "Place 1 of 2 in the queue of vision-lab." in page
    # Its history names what held it back when it was queued, not a generic "quota in use".
    assert "queued by bob: account vision-lab uses 2 of 2 GPUs; this job asks for 1." in page
    later = bob.get(f"/jobs/{cancelled}").get_data(as_text=True)
    assert f"It starts after its owner&#39;s earlier job {queued}" in later and "Place 2 of 2" in later
    # The admitter estimates from the holder's time limit (no history yet): within a few seconds.
    wait_for(lambda: q(app, lambda: db.session.get(Job, queued).queue_estimate) is not None, timeout=15,
             what="an estimate")
    assert "Estimated start: " in bob.get(f"/jobs/{queued}/status").get_data(as_text=True)
    listing = bob.get("/jobs").get_data(as_text=True)
    assert "#1 in line" in listing and "#2 in line" in listing
    # A refusal, when asked for: nothing written.
    refused = bob.post("/jobs/new/batch", form(people, "refuse-00001", when_full="refuse"))
    assert refused.status_code == 409 and "Submit it to the queue to wait for its turn" in refused.get_data(as_text=True)

    # Cancel the second: it ends at once, and the cluster never sees it.
    assert bob.post(f"/jobs/{cancelled}/stop").status_code == 303
    job = q(app, lambda: db.session.get(Job, cancelled))
    assert (job.state, job.reason) == ("Stopped", "Cancelled")
    # Stop the holder: the queued job is admitted within seconds, runs, and succeeds.
    assert alice.post(f"/jobs/{holder}/stop").status_code == 303
    seen = set()

    def moved():
        seen.add(state_of(app, queued))
        return "Succeeded" in seen
    wait_for(moved, timeout=60, interval=0.05, what="the queued job to run to the end")
    assert {"Running", "Succeeded"} <= seen
    job = q(app, lambda: db.session.get(Job, queued))
    assert job.admitted_at is not None and job.queue_position is None and job.started_at is not None
    assert is_gone(lambda: batch.read_namespaced_job(f"crater-{cancelled}", "crater-jobs"))
    history = bob.get(f"/jobs/{queued}").get_data(as_text=True)
    assert "admitted from the queue" in history and "queued by bob" in history


@pytest.mark.usefixtures("syncer")
def test_the_queue_pages_show_the_order_to_managers_and_admins(app, new_client, people):
    alice, bob = new_client().login(people["alice"]), new_client().login(people["bob"])
    job_id_of(alice.post("/jobs/new/batch", form(people, "hold-000002", gpus="2", command="sleep infinity")))
    waiting = job_id_of(bob.post("/jobs/new/batch", form(people, "wait-000002", display_name="等待的作业")))
    lab = people["lab"]
    for who in ("carol", "root"):
        client = new_client().login(people[who])
        page = client.get(f"/queues/{lab}")
        assert page.status_code == 200
        text = page.get_data(as_text=True)
        assert f'id="queued-{waiting}"' in text and "等待的作业" in text and "bob" in text
        assert "Recent GPU use of the members" in text and "alice" in text
        assert client.get(f"/queues/{lab}?part=table").status_code == 200
    assert f'href="/queues/{lab}"' not in bob.get("/queues").get_data(as_text=True)  # members see the length only
    assert ">1</td>" in bob.get("/queues").get_data(as_text=True)
    assert bob.get(f"/queues/{lab}").status_code == 403
    assert new_client().login(people["dave"]).get(f"/queues/{lab}").status_code == 403
    assert new_client().login(people["root"]).get("/queues/999999").status_code == 404
    assert f'href="/queues/{lab}"' in new_client().login(people["carol"]).get("/queues").get_data(as_text=True)


@pytest.mark.usefixtures("syncer")
def test_an_admission_the_cluster_cannot_take_goes_back_to_the_head_and_starts_once_it_can(app, new_client, people,
                                                                                           cluster_sim):
    sim = cluster_sim[0]
    alice, bob = new_client().login(people["alice"]), new_client().login(people["bob"])
    holder = job_id_of(alice.post("/jobs/new/batch", form(people, "hold-000003", gpus="2", command="sleep infinity")))
    queued = job_id_of(bob.post("/jobs/new/batch", form(people, "sick-000003", display_name="next")))
    sim.faults.set(error_code=503, path_prefix="/apis/batch/v1/namespaces/crater-jobs/jobs", methods=("POST",))
    try:
        assert alice.post(f"/jobs/{holder}/stop").status_code == 303
        wait_for(lambda: q(app, lambda: (db.session.get(Job, queued).queue_blocker or {}).get("kind")) == "cluster",
                 timeout=20, what="the admission to fail and go back to the queue")
        job = q(app, lambda: db.session.get(Job, queued))
        assert job.state == "Queued" and job.queue_reserved_at is not None
        assert "The cluster could not take it just now" in bob.get(f"/jobs/{queued}").get_data(as_text=True)
    finally:
        sim.faults.clear()
    wait_for(lambda: state_of(app, queued) in ("Pending", "Running", "Succeeded"), timeout=30,
             what="the job admitted once the cluster answers")
