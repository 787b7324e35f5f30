"""The job pages through HTTP, with the portal's real client talking to kubesim and the syncer
running: the forms (field errors, quota refusals, ignored host/privilege fields, double submits),
the list (scopes, filters, sorting, polling only while something can change), the detail page
(reasons, outlook, pods, events, logs), the actions (stop, delete, clone, templates) and JupyterLab
access for the owner only."""
import re
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from conftest import lab_people
from kubesim_fixtures import wait_for
from portal.extensions import db
from portal.models import AccountGpuQuota, AuditEntry, Job, JobTemplate, Node, SyncHeartbeat, utcnow
from portal.sync.syncer import SyncSettings, Syncer
from portal.services import job_states

A100 = "NVIDIA-A100-SXM4-80GB"


@pytest.fixture
def cluster_sim(fresh_sim):
    return fresh_sim()


@pytest.fixture
def app_config(cluster_sim, tmp_path):
    sim = cluster_sim[0]
    return {"KUBECONFIG": str(sim.write_kubeconfig(tmp_path / "kc")), "SHARED_PVC": "crater-shared",
            "MAX_JUPYTER_PER_USER": 1}


@pytest.fixture
def people(make):
    return lab_people(make, gpu_quota=8)


@pytest.fixture
def syncer(app):
    from portal.cluster.setup import cluster_for
    s = Syncer(app, cluster_for(app), settings=SyncSettings(lease_seconds=3, watch_timeout=5)).start()
    wait_for(lambda: _q(app, lambda: db.session.query(Node).count()), timeout=10, what="node inventory")
    yield s
    s.stop()


def _q(app, fn):
    with app.app_context():
        try:
            return fn()
        finally:
            db.session.remove()


def as_(new_client, user_id):
    return new_client().login(user_id)


def batch_form(people, **kw):
    data = {"display_name": "训练 ResNet", "account_id": str(people["lab"]), "image": "pytorch/pytorch:2.4",
            "command": "python train.py --epochs 3", "command_mode": "shell", "env": "SEED=1\nMODE=fast",
            "gpu_model": A100, "gpus": "1", "cpu": "4", "memory_gib": "16", "shm_gib": "2",
            "working_dir": "/workspace", "time_limit_hours": "2", "mount_home": "y", "idempotency_key": "k" * 16}
    data.update(kw)
    return data


def job_rows(app):
    return _q(app, lambda: [(j.id, j.state, j.user_id) for j in db.session.query(Job).order_by(Job.id)])


def wait_state(app, job_id, state, timeout=20):
    return wait_for(lambda: _q(app, lambda: db.session.get(Job, job_id).state == state), timeout=timeout,
                    what=f"job {job_id} {state}")


@pytest.fixture
def submitted(app, new_client, people, syncer, cluster_sim):
    """alice's batch job, submitted through the form: (alice's client, job id)."""
    alice = as_(new_client, people["alice"])
    response = alice.post("/jobs/new/batch", batch_form(people))
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    return alice, int(response.location.rsplit("/", 1)[1])


def test_the_form_offers_the_clusters_gpu_models_and_a_submission_key(new_client, people, syncer):
    form_page = as_(new_client, people["alice"]).get("/jobs/new/batch").get_data(as_text=True)
    assert A100 in form_page and 'name="idempotency_key"' in form_page


def test_the_forms_values_reach_the_pod(submitted, cluster_sim):
    _sim, core, batch = cluster_sim
    _alice, job_id = submitted
    pod = wait_for(lambda: core.list_namespaced_pod("crater-jobs", label_selector=f"crater.io/job-id={job_id}").items)[0]
    container = pod.spec.containers[0]
    assert container.command == ["/bin/sh", "-c", "python train.py --epochs 3"]
    assert container.working_dir == "/workspace"
    assert container.resources.limits["nvidia.com/gpu"] == "1" and container.resources.requests["memory"] == "16384Mi"
    assert {e.name: e.value for e in container.env} == {"SEED": "1", "MODE": "fast", "CRATER_PREEMPTIBLE": "false",
                                                        "CRATER_CHECKPOINT_DIR": f"/home/alice/.crater/checkpoints/{job_id}"}
    assert pod.spec.node_selector == {"nvidia.com/gpu.product": A100}
    mounts = {m.mount_path: m.sub_path for m in container.volume_mounts}
    assert mounts == {"/home/alice": "users/alice", "/dev/shm": None}
    assert batch.read_namespaced_job(f"crater-{job_id}", "crater-jobs").spec.active_deadline_seconds == 7200


def test_a_finished_batch_job_explains_itself_and_stops_polling(app, submitted):
    alice, job_id = submitted
    wait_state(app, job_id, "Succeeded")
    page = alice.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "Finished successfully" in page and "hx-trigger=\"every 2s\"" not in page
    assert "python train.py --epochs 3" in page  # the spec as YAML
    assert f"crater-{job_id}-" in page  # the pods table


def test_the_logs_of_a_finished_job_stay_readable_and_downloadable(app, submitted):
    alice, job_id = submitted
    wait_state(app, job_id, "Succeeded")
    wait_for(lambda: _q(app, lambda: db.session.get(Job, job_id).last_log), what="the kept log lines")
    logs = alice.get(f"/jobs/{job_id}/logs").get_data(as_text=True)
    assert "kept when the job ended" in logs and "step" in logs
    download = alice.get(f"/jobs/{job_id}/logs/download")
    assert download.headers["Content-Disposition"].startswith("attachment;") and b"step" in download.data


def test_another_member_of_the_account_does_not_see_the_job(new_client, people, submitted):
    _alice, job_id = submitted
    bob = as_(new_client, people["bob"])
    for url in (f"/jobs/{job_id}", f"/jobs/{job_id}/logs", f"/jobs/{job_id}/clone", f"/jobs/{job_id}/status"):
        assert bob.get(url).status_code == 404
    assert bob.post(f"/jobs/{job_id}/stop").status_code == 404


@pytest.mark.parametrize("change, field, message", [
    ({"display_name": ""}, "display_name", "Give the job a name"),
    ({"image": "not an image!"}, "image", "image reference"),
    ({"gpus": "99"}, "gpus", "At most 8 GPUs"),
    ({"gpu_model": "Made-Up-GPU"}, "gpu_model", "Not a valid choice"),
    ({"time_limit_hours": "9999"}, "time_limit_hours", "Between 0.1 and 336"),
    ({"env": "MASTER_ADDR=evil"}, "env", "is set by Crater"),
    ({"env": "no equals sign"}, "env", "NAME=value"),
    ({"shm_gib": "64"}, "shm_gib", "Shared memory counts"),
    ({"command": "   "}, "command", "What should the job run?"),
    ({"working_dir": "relative/path"}, "working_dir", "absolute path"),
    ({"account_id": "999999"}, "account_id", "Not a valid choice"),
    ({"cpu": "-1"}, "cpu", "Between 0.1 and 256 CPU cores"),
])
def test_bad_input_gets_field_errors_and_creates_nothing(app, new_client, people, syncer, cluster_sim, change, field,
                                                         message):
    alice = as_(new_client, people["alice"])
    response = alice.post("/jobs/new/batch", batch_form(people, **change))
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert message in body
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"|aria-invalid="true"[^>]*id="{field}"', body)
    assert job_rows(app) == []
    assert cluster_sim[2].list_namespaced_job("crater-jobs").items == []


def test_a_form_answers_every_error_at_once_and_none_spurious(app, new_client, people, syncer):
    alice = as_(new_client, people["alice"])
    body = alice.post("/jobs/new/batch", batch_form(people, env="no equals sign", shm_gib="64")).get_data(as_text=True)
    assert "NAME=value" in body and "Shared memory counts" in body  # the parse error no longer hides the rule's
    assert 'id="form-summary"' in body and 'href="#env"' in body and 'href="#shm_gib"' in body
    body = alice.post("/jobs/new/batch", batch_form(people, memory_gib="-1", shm_gib="2")).get_data(as_text=True)
    assert "GiB" in body and "Shared memory counts" not in body  # a wrong memory is said once
    assert job_rows(app) == []


def test_an_account_the_user_does_not_belong_to_is_refused(app, new_client, people, syncer):
    response = as_(new_client, people["alice"]).post("/jobs/new/batch", batch_form(people, account_id=str(people["other"])))
    assert response.status_code == 422 and job_rows(app) == []


def test_posted_host_and_privilege_fields_never_reach_the_pod(app, new_client, people, syncer, cluster_sim):
    core = cluster_sim[1]
    hostile = {"privileged": "true", "hostPath": "/", "hostNetwork": "true", "hostPID": "true", "hostPort": "22",
               "capabilities": "SYS_ADMIN", "serviceAccountName": "default", "automountServiceAccountToken": "true",
               "securityContext": '{"privileged": true}', "volumes": "hostPath:/etc"}
    response = as_(new_client, people["alice"]).post("/jobs/new/batch", batch_form(people, **hostile))
    assert response.status_code == 303
    pod = wait_for(lambda: core.list_namespaced_pod("crater-jobs").items)[0]
    spec = core.api_client.sanitize_for_serialization(pod)["spec"]
    assert not any(k in spec for k in ("hostNetwork", "hostPID", "hostIPC", "serviceAccountName"))
    assert spec["automountServiceAccountToken"] is False
    assert all("hostPath" not in v for v in spec.get("volumes", []))
    container = spec["containers"][0]
    assert container["securityContext"] == {"privileged": False, "allowPrivilegeEscalation": False}
    assert all("hostPort" not in p for p in container.get("ports", []))


def test_a_double_submit_makes_one_job(app, new_client, people, syncer):
    alice = as_(new_client, people["alice"])
    first = alice.post("/jobs/new/batch", batch_form(people))
    second = alice.post("/jobs/new/batch", batch_form(people))
    assert first.status_code == second.status_code == 303 and first.location == second.location
    assert len(job_rows(app)) == 1


def test_quota_and_jupyter_limit_refusals_show_on_the_form(app, new_client, people, syncer, cluster_sim):
    alice = as_(new_client, people["alice"])
    response = alice.post("/jobs/new/batch", batch_form(people, gpus="8", gpu_model=""))
    assert response.status_code == 303
    refused = alice.post("/jobs/new/batch", batch_form(people, idempotency_key="second-key-0001", when_full="refuse"))
    assert refused.status_code == 409
    assert "uses 8 of 8 GPUs; this job asks for 1" in refused.get_data(as_text=True)
    jupyter = {"display_name": "nb", "account_id": str(people["lab"]), "image": "quay.io/jupyter/pytorch-notebook",
               "gpus": "0", "cpu": "1", "memory_gib": "2", "time_limit_hours": "1", "idempotency_key": "nb-0000001"}
    assert alice.post("/jobs/new/jupyter", jupyter).status_code == 303
    again = alice.post("/jobs/new/jupyter", dict(jupyter, idempotency_key="nb-0000002", when_full="refuse"))
    assert again.status_code == 409 and "1 of at most 1 JupyterLab" in again.get_data(as_text=True)
    assert len(job_rows(app)) == 2


def test_jupyter_opens_for_its_owner_only_and_the_token_stays_in_the_cluster(app, new_client, people, syncer,
                                                                            cluster_sim, database_url):
    core = cluster_sim[1]
    alice = as_(new_client, people["alice"])
    response = alice.post("/jobs/new/jupyter", {
        "display_name": "笔记本", "account_id": str(people["lab"]), "image": "quay.io/jupyter/pytorch-notebook",
        "gpu_model": A100, "gpus": "1", "cpu": "2", "memory_gib": "8", "time_limit_hours": "4",
        "idempotency_key": "jupyter-key-1"})
    job_id = int(response.location.rsplit("/", 1)[1])
    assert alice.get(f"/jobs/{job_id}/jupyter").status_code in (303, 409)  # 409 until it runs
    wait_state(app, job_id, "Running")
    page = alice.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "Open JupyterLab" in page
    opened = alice.get(f"/jobs/{job_id}/jupyter")
    assert opened.status_code == 303
    secret = core.read_namespaced_secret(f"crater-{job_id}", "crater-jobs")
    import base64
    token = base64.b64decode(secret.data["token"]).decode()
    assert opened.location == f"/jupyter/crater-{job_id}/?token={token}"
    carol = as_(new_client, people["carol"])  # the account's manager sees the job, not the notebook
    assert carol.get(f"/jobs/{job_id}").status_code == 200
    assert "Open JupyterLab" not in carol.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert carol.get(f"/jobs/{job_id}/jupyter").status_code == 404
    assert as_(new_client, people["root"]).get(f"/jobs/{job_id}/jupyter").status_code == 404

    def dump():
        rows = []
        for table in db.metadata.sorted_tables:
            rows += [str(tuple(r)) for r in db.session.execute(table.select())]
        return "\n".join(rows)
    assert token not in _q(app, dump)
    # stop it from the page (htmx swaps the status block)
    stopped = alice.post(f"/jobs/{job_id}/stop", htmx=True)
    assert stopped.status_code == 200 and "Stopped by its owner" in stopped.get_data(as_text=True)
    wait_for(lambda: not core.list_namespaced_secret("crater-jobs").items, what="secret removed")


def test_a_cluster_failure_during_submit_ends_submit_error_without_orphans(app, new_client, people, syncer, cluster_sim):
    sim, core, batch = cluster_sim
    sim.faults.set(error_code=503, path_prefix="/apis/batch/v1/namespaces/crater-jobs/jobs")
    try:
        response = as_(new_client, people["alice"]).post("/jobs/new/batch", batch_form(people))
    finally:
        sim.faults.clear()
    assert response.status_code == 303
    job_id = int(response.location.rsplit("/", 1)[1])
    assert _q(app, lambda: (db.session.get(Job, job_id).state, db.session.get(Job, job_id).reason)) == ("Failed", "SubmitError")
    page = as_(new_client, people["alice"]).get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "The cluster refused the job" in page
    assert batch.list_namespaced_job("crater-jobs").items == [] and core.list_namespaced_service("crater-jobs").items == []


@pytest.fixture
def sleeping(app, new_client, people, syncer, cluster_sim):
    """alice's batch job that runs until stopped: (alice's client, job id)."""
    alice = as_(new_client, people["alice"])
    response = alice.post("/jobs/new/batch", batch_form(people, command="sleep infinity"))
    return alice, int(response.location.rsplit("/", 1)[1])


def test_a_manager_stops_a_members_job_and_its_objects_go(app, new_client, people, sleeping, cluster_sim):
    batch = cluster_sim[2]
    _alice, job_id = sleeping
    carol = as_(new_client, people["carol"])  # the account's manager
    assert carol.post(f"/jobs/{job_id}/stop").status_code == 303
    assert _q(app, lambda: (db.session.get(Job, job_id).state, db.session.get(Job, job_id).reason)) == ("Stopped", "StoppedByAdmin")
    assert _q(app, lambda: db.session.get(Job, job_id).finished_at) is not None
    wait_for(lambda: not batch.list_namespaced_job("crater-jobs").items, what="job deleted in the cluster")


def test_stop_is_confirmed_on_a_plain_page_without_javascript(app, sleeping):
    """The job page's Stop is a link to a confirmation page (htmx's dialog only shortcuts it);
    that page's form stops the job."""
    alice, job_id = sleeping
    page = alice.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert f'href="/jobs/{job_id}/stop"' in page
    confirm = alice.get(f"/jobs/{job_id}/stop")
    body = confirm.get_data(as_text=True)
    assert confirm.status_code == 200 and f'action="/jobs/{job_id}/stop"' in body and 'method="post"' in body
    assert alice.post(f"/jobs/{job_id}/stop").status_code == 303
    assert _q(app, lambda: db.session.get(Job, job_id).state) == "Stopped"
    assert alice.get(f"/jobs/{job_id}/stop").status_code == 409  # nothing left to stop
    deleting = alice.get(f"/jobs/{job_id}/delete").get_data(as_text=True)
    assert f'action="/jobs/{job_id}/delete"' in deleting


def test_an_active_job_cannot_be_deleted(sleeping):
    alice, job_id = sleeping
    assert alice.post(f"/jobs/{job_id}/delete").status_code == 409


def test_a_deleted_job_leaves_the_lists_and_stays_in_the_audit_log(app, sleeping):
    alice, job_id = sleeping
    assert alice.post(f"/jobs/{job_id}/stop").status_code == 303
    assert alice.post(f"/jobs/{job_id}/delete").status_code == 303
    assert f"/jobs/{job_id}\"" not in alice.get("/jobs").get_data(as_text=True)
    assert alice.get(f"/jobs/{job_id}").status_code == 404
    assert _q(app, lambda: db.session.query(AuditEntry).filter_by(action="job.delete").count()) == 1


def test_clone_prefills_the_form_with_a_new_name_and_key(sleeping):
    alice, job_id = sleeping
    clone = alice.get(f"/jobs/{job_id}/clone").get_data(as_text=True)
    assert "训练 ResNet (copy)" in clone and "sleep infinity" in clone and 'value="16"' in clone
    assert 'value="kkkkkkkkkkkkkkkk"' not in clone


def test_a_shared_template_serves_the_accounts_members_and_only_its_owner_deletes_it(app, new_client, people, sleeping):
    alice, job_id = sleeping
    bob, dave = as_(new_client, people["bob"]), as_(new_client, people["dave"])  # same account / another account
    assert alice.post(f"/jobs/{job_id}/template", {"name": "ResNet 模板", "shared": "y"}).status_code == 303
    template_id = _q(app, lambda: db.session.execute(select(JobTemplate.id)).scalar_one())
    assert "ResNet 模板" in bob.get("/templates").get_data(as_text=True)
    assert "sleep infinity" in bob.get(f"/jobs/new/batch?template={template_id}").get_data(as_text=True)
    assert "ResNet 模板" not in dave.get("/templates").get_data(as_text=True)
    assert dave.get(f"/jobs/new/batch?template={template_id}").status_code == 404
    assert bob.post(f"/templates/{template_id}/delete").status_code == 404
    assert alice.post(f"/templates/{template_id}/delete").status_code == 303


@pytest.fixture
def listed(people, make):
    """alice's two ended jobs, bob's ended job in the same account, dave's running job elsewhere."""
    alice, lab, other = people["alice"], people["lab"], people["other"]
    make.job(alice, lab, display_name="alpha run", state="Succeeded")
    make.job(alice, lab, display_name="beta notebook", job_type="jupyter", state="Failed", reason="OOMKilled")
    make.job(people["bob"], lab, display_name="bob's run", state="Succeeded")
    make.job(people["dave"], other, display_name="dave's run", state="Running")
    return people


def test_the_list_scopes_are_mine_my_accounts_and_all(new_client, listed):
    client = as_(new_client, listed["alice"])
    mine = client.get("/jobs").get_data(as_text=True)
    assert "alpha run" in mine and "beta notebook" in mine and "bob&#39;s run" not in mine
    assert client.get("/jobs?scope=all").status_code == 403
    assert client.get("/jobs?scope=account").status_code == 403
    carol = as_(new_client, listed["carol"]).get("/jobs?scope=account").get_data(as_text=True)
    assert "bob&#39;s run" in carol and "alpha run" in carol and "dave" not in carol
    root = as_(new_client, listed["root"])
    assert "dave&#39;s run" in root.get("/jobs?scope=all").get_data(as_text=True)
    assert root.get("/admin/jobs").location.endswith("/jobs?scope=all")


def test_the_list_filters_by_type_state_and_literal_text(new_client, listed):
    client = as_(new_client, listed["alice"])
    assert "beta notebook" not in client.get("/jobs?type=batch").get_data(as_text=True)
    assert "alpha run" not in client.get("/jobs?state=Failed").get_data(as_text=True)
    assert "alpha run" not in client.get("/jobs?q=beta").get_data(as_text=True)
    assert "No jobs match." in client.get("/jobs?q=%25").get_data(as_text=True)  # % is literal, not a wildcard
    assert "alpha run" not in client.get("/jobs?q=a_ph").get_data(as_text=True)  # nor is _


def test_the_list_sorts_by_name_and_newest_first(new_client, listed):
    client = as_(new_client, listed["alice"])
    by_name = client.get("/jobs?sort=name").get_data(as_text=True)
    assert by_name.index("alpha run") < by_name.index("beta notebook")
    newest = client.get("/jobs").get_data(as_text=True)
    assert newest.index("beta notebook") < newest.index("alpha run")


def test_the_list_polls_only_while_a_shown_job_can_change(new_client, listed):
    assert 'hx-trigger="every 3s"' not in as_(new_client, listed["alice"]).get("/jobs").get_data(as_text=True)
    root = as_(new_client, listed["root"])
    assert 'hx-trigger="every 3s"' in root.get("/jobs?scope=all").get_data(as_text=True)  # dave's job runs
    fragment = root.get("/jobs?scope=all&state=Running", headers={"HX-Request": "true", "HX-Target": "jobs-table"})
    body = fragment.get_data(as_text=True)
    assert body.lstrip().startswith('<div id="jobs-table"') and "<html" not in body and "dave&#39;s run" in body


def test_a_pending_job_on_a_model_under_maintenance_says_so_and_promises_no_start(app, new_client, people, make):
    """Every node of its model cordoned (or not ready): words with the admin's reason, no start time."""
    make.node("a1", gpus=8, model=A100, unschedulable=True, cordon_reason="firmware update")
    make.node("a2", gpus=8, model=A100, ready=False)
    make.job(people["bob"], people["lab"], state="Running", gpus=2, gpu_model=A100, started_at=utcnow(),
             time_limit_seconds=3600)
    mine = make.job(people["alice"], people["lab"], state="Pending", gpus=4, gpu_model=A100, reason="Unschedulable",
                    message="0/2 nodes are available: 1 node(s) were unschedulable.")
    page = as_(new_client, people["alice"]).get(f"/jobs/{mine}/status").get_data(as_text=True)
    assert f"Every {A100} node is under maintenance (firmware update); the job starts once one is back." in page
    assert "at the latest" not in page


def test_a_pending_job_explains_its_place_and_estimated_start(app, new_client, people, make):
    alice, lab = people["alice"], people["lab"]
    now = utcnow()

    def nodes():
        db.session.add_all([Node(name="a1", gpu_model=A100, gpus=8, gpus_requested=8, ready=True),
                            Node(name="a2", gpu_model=A100, gpus=8, gpus_requested=6, ready=True),
                            Node(name="r1", gpu_model="RTX-4090", gpus=4, gpus_requested=0, ready=True)])
        db.session.commit()
    _q(app, nodes)
    make.job(people["bob"], lab, state="Running", gpus=8, gpu_model=A100, started_at=now - timedelta(hours=1),
             time_limit_seconds=3 * 3600)
    make.job(people["bob"], lab, state="Running", gpus=6, gpu_model=A100, started_at=now - timedelta(minutes=30),
             time_limit_seconds=3600)
    make.job(people["bob"], lab, state="Pending", gpus=4, gpu_model=A100, reason="Unschedulable")
    mine = make.job(alice, lab, state="Pending", gpus=4, gpu_model=A100, reason="Unschedulable",
                    message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    make.job(alice, lab, state="Pending", gpus=2, gpu_model="RTX-4090")  # another model: not ahead
    page = as_(new_client, alice).get(f"/jobs/{mine}/status").get_data(as_text=True)
    assert "Place in line: 2 of 2 pending jobs" in page
    assert "2 free now, 1 job(s) ahead asking for 4" in page
    # 2 free + 6 freed when the 1-hour job reaches its limit (in 30 min) = 8 >= 4 ahead + 4 mine
    expected = (now + timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M")
    assert f"Estimated start: {expected}" in page
    assert "Insufficient nvidia.com/gpu" in page
    assert 'hx-trigger="every 2s"' in page


def test_home_shows_active_jobs_quota_usage_free_gpus_and_stale_data(app, new_client, people, make):
    alice, lab = people["alice"], people["lab"]
    _q(app, lambda: (db.session.add_all([Node(name="a1", gpu_model=A100, gpus=8, gpus_requested=3, ready=True),
                                         Node(name="a2", gpu_model=A100, gpus=8, gpus_requested=0, ready=True,
                                              unschedulable=True)]), db.session.commit()))
    make.job(alice, lab, display_name="running one", state="Running", gpus=3, gpu_model=A100)
    make.job(alice, lab, display_name="old one", state="Succeeded", gpus=2)
    page = as_(new_client, alice).get("/").get_data(as_text=True)
    assert "running one" in page and "old one" not in page
    assert '<meter min="0" max="8" high="7.2" value="3">' in page
    # a per-model quota shows used of allowed
    _q(app, lambda: (db.session.add(AccountGpuQuota(account_id=lab, gpu_model=A100, gpus=6)), db.session.commit()))
    assert re.search(rf'<span class="chip nowrap">{A100}: 3 of 6</span>', as_(new_client, alice).get("/").get_data(as_text=True))
    assert re.search(rf"<td><a href=\"/nodes\?model={A100}\">{A100}</a></td><td><strong>5</strong></td><td>3</td><td>16</td><td>5</td>", page)
    assert "syncer has not run yet" in page
    _q(app, lambda: (db.session.add(SyncHeartbeat(id=1, holder="x", beat_at=utcnow())), db.session.commit()))
    assert "syncer" not in as_(new_client, alice).get("/").get_data(as_text=True)
    _q(app, lambda: (db.session.execute(text("UPDATE sync_heartbeat SET beat_at = :t"), {"t": utcnow() - timedelta(minutes=5)}),
                     db.session.commit()))
    # 300 s, or a few more when the machine is slow (and MySQL keeps whole seconds)
    assert re.search(r"Cluster data is 30[0-5] s old", as_(new_client, alice).get("/").get_data(as_text=True))


def test_admins_keep_the_image_list(app, new_client, people, make):
    root = as_(new_client, people["root"])
    bad = root.post("/admin/images", {"reference": "Not Valid!", "job_types": "batch"})
    assert bad.status_code == 422 and "image reference" in bad.get_data(as_text=True)
    assert root.post("/admin/images", {"reference": "pytorch/pytorch:2.4", "description": "PyTorch",
                                       "job_types": ["batch", "distributed"]}).status_code == 303
    assert root.post("/admin/images", {"reference": "pytorch/pytorch:2.4", "job_types": "batch"}).status_code == 422
    alice = as_(new_client, people["alice"])
    assert '<option value="pytorch/pytorch:2.4">' in alice.get("/jobs/new/batch").get_data(as_text=True)
    assert '<option value="pytorch/pytorch:2.4">' not in alice.get("/jobs/new/jupyter").get_data(as_text=True)


def test_without_custom_images_only_listed_images_are_accepted(app, new_client, people, make):
    app.config["CUSTOM_IMAGES"] = False
    make.image("pytorch/pytorch:2.4", job_types="batch")
    _q(app, lambda: (db.session.add(Node(name="a1", gpu_model=A100, gpus=8, ready=True)), db.session.commit()))
    response = as_(new_client, people["alice"]).post("/jobs/new/batch", batch_form(people, image="evil/miner:latest"))
    assert response.status_code == 422 and "Choose one of the offered images" in response.get_data(as_text=True)
    assert job_rows(app) == []


@pytest.fixture
def smtp_server():
    """A real SMTP server on loopback (aiosmtpd) that keeps what it receives."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Keep(Message):
        def __init__(self):
            super().__init__()
            self.messages = []

        def handle_message(self, message):
            self.messages.append(message)

    import socket
    with socket.socket() as probe:  # aiosmtpd needs the port up front
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Keep()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller, handler.messages
    finally:
        controller.stop()


@pytest.mark.parametrize("language, subject", [("en", "succeeded"), ("zh", "成功")])
def test_the_owner_gets_a_mail_when_the_job_ends(app, new_client, people, syncer, smtp_server, language, subject):
    controller, inbox = smtp_server
    app.config.update(SMTP_URL=f"smtp://127.0.0.1:{controller.port}", PUBLIC_URL="https://crater.example.edu")
    _q(app, lambda: (db.session.execute(text("UPDATE users SET language = :l WHERE id = :i"),
                                        {"l": language, "i": people["alice"]}), db.session.commit()))
    alice = as_(new_client, people["alice"])
    noisy = alice.post("/jobs/new/batch", batch_form(people, notify="y"))
    quiet = alice.post("/jobs/new/batch", batch_form(people, idempotency_key="quiet-key-0001"))
    noisy_id, quiet_id = (int(r.location.rsplit("/", 1)[1]) for r in (noisy, quiet))
    wait_state(app, noisy_id, "Succeeded")
    wait_state(app, quiet_id, "Succeeded")
    wait_for(lambda: inbox, timeout=10, what="a mail")
    wait_for(lambda: _q(app, lambda: db.session.get(Job, noisy_id).notified_at), what="notified_at")
    assert len(inbox) == 1  # only the job that asked, and only once
    mail = inbox[0]
    from email.header import decode_header, make_header
    title = str(make_header(decode_header(mail["Subject"])))
    assert mail["To"] == "alice@example.edu" and subject in title and f"#{noisy_id}" in title
    assert f"https://crater.example.edu/jobs/{noisy_id}" in mail.get_payload(decode=True).decode()
    assert _q(app, lambda: db.session.get(Job, quiet_id).notified_at) is None


def test_a_status_poll_that_is_up_to_date_gets_204(app, new_client, people, make):
    running = make.job(people["alice"], people["lab"], state="Running", version=3)
    pending = make.job(people["alice"], people["lab"], state="Pending", version=3, gpus=1, gpu_model=A100)
    alice = as_(new_client, people["alice"])
    assert alice.get(f"/jobs/{running}/status?v=3").status_code == 204
    changed = alice.get(f"/jobs/{running}/status?v=2")
    assert changed.status_code == 200 and f"/jobs/{running}/status?v=3" in changed.get_data(as_text=True)
    assert alice.get(f"/jobs/{pending}/status?v=3").status_code == 200  # its place in line may have changed
    assert as_(new_client, people["bob"]).get(f"/jobs/{running}/status?v=3").status_code == 404


def test_the_syncer_bumps_the_version_when_the_job_changes(app, new_client, people, syncer):
    response = as_(new_client, people["alice"]).post("/jobs/new/batch", batch_form(people))
    job_id = int(response.location.rsplit("/", 1)[1])
    versions = []

    def seen():
        job = db.session.get(Job, job_id)
        versions.append(job.version)
        return job.state == "Succeeded" and job.version
    final = wait_for(lambda: _q(app, seen), timeout=20, what="job done")
    assert final >= 3 and versions == sorted(versions)  # pending events, running, succeeded at least


def test_a_distributed_job_through_the_form(app, new_client, people, syncer, cluster_sim):
    sim, core, batch = cluster_sim
    alice = as_(new_client, people["alice"])
    response = alice.post("/jobs/new/distributed", batch_form(people, workers="2", gpus="2", command="torchrun train.py",
                                                              mount_home="", shm_gib="0"))
    assert response.status_code == 303, response.get_data(as_text=True)[:1500]
    job_id = int(response.location.rsplit("/", 1)[1])
    job = batch.read_namespaced_job(f"crater-{job_id}", "crater-jobs")
    assert (job.spec.completion_mode, job.spec.completions, job.spec.parallelism) == ("Indexed", 2, 2)
    assert core.read_namespaced_service(f"crater-{job_id}", "crater-jobs").spec.cluster_ip == "None"
    assert _q(app, lambda: (db.session.get(Job, job_id).gpus, db.session.get(Job, job_id).workers)) == (4, 2)
    wait_state(app, job_id, "Running")
    pods = wait_for(lambda: (lambda p: p if len(p or []) == 2 else None)(_q(app, lambda: db.session.get(Job, job_id).pods)))
    second = sorted(p["name"] for p in pods)[1]
    logs = alice.get(f"/jobs/{job_id}/logs?pod={second}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "live from the cluster" in logs and f'class="current">{second}<' in logs
    # a manager's view of the account's jobs, from the account page
    carol = as_(new_client, people["carol"])
    assert f"/jobs?scope=account&amp;account={people['lab']}" in carol.get(f"/admin/accounts/{people['lab']}").get_data(as_text=True)
    assert "训练 ResNet" in carol.get(f"/jobs?scope=account&account={people['lab']}").get_data(as_text=True)


def test_the_heartbeat_is_read_at_most_every_few_seconds_when_cached(app, new_client, people):
    import time
    app.config["SHORT_CACHE_SECONDS"] = 1
    alice = as_(new_client, people["alice"])
    assert "syncer has not run yet" in alice.get("/").get_data(as_text=True)
    _q(app, lambda: (db.session.add(SyncHeartbeat(id=1, holder="x", beat_at=utcnow())), db.session.commit()))
    assert "syncer has not run yet" in alice.get("/jobs").get_data(as_text=True)  # the cached reading
    time.sleep(1.1)
    assert "syncer" not in alice.get("/jobs").get_data(as_text=True)


def test_a_listed_job_that_changes_is_shown_changed(app, new_client, people, make):
    """List rows are cached by the job's version: any change to a job (always through
    services.job_states, which moves the version) must show on the next list."""
    job = make.job(people["alice"], people["lab"], state="Running", display_name="cached run")
    alice = as_(new_client, people["alice"])
    assert "state-running" in alice.get("/jobs").get_data(as_text=True)

    def fail(s):
        job_states.ended(job, ("Running",), "Failed", "OOMKilled", "")
        s.commit()
    make.query(fail)
    page = alice.get("/jobs").get_data(as_text=True)
    assert "state-failed" in page and "out of memory" in page and "state-running" not in page


def test_a_poll_that_finds_a_new_state_brings_the_rest_of_the_page_along(app, make, new_client, people):
    """The summary, GPU card, time-limit form and history follow the state without a reload: a
    poll that finds a new version sends them out of band."""
    from datetime import datetime, timedelta
    job_id = make.job(people["alice"], people["lab"], state="Running", gpus=1, gpu_model=A100, time_limit_seconds=7200,
                      started_at=datetime.utcnow() - timedelta(minutes=5))
    alice = as_(new_client, people["alice"])
    page = alice.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'id="extend-form"' in page and 'id="job-live"' in page
    version = _q(app, lambda: db.session.get(Job, job_id).version)
    assert alice.get(f"/jobs/{job_id}/status?v={version}").status_code == 204  # nothing new
    with app.app_context():
        job = db.session.get(Job, job_id)
        job.state, job.reason, job.finished_at, job.version = "Stopped", "StoppedByUser", datetime.utcnow(), job.version + 1
        db.session.commit()
    poll = alice.get(f"/jobs/{job_id}/status?v={version}").get_data(as_text=True)
    live = poll[poll.index('id="job-live"') - 5:]
    assert 'hx-swap-oob="true"' in live and 'id="extend-form"' not in live and "ended:" in live
    assert "hx-trigger" not in poll[:poll.index('id="job-live"')]  # and the polling stops
