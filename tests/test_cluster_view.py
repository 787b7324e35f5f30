"""The cluster view against kubesim's demo cluster through the syncer: the nodes page and node
detail follow jobs starting and ending; cordon and NotReady are shown; a reservation only the
reserved account's jobs tolerate (checked by where kubesim schedules them); a drain that stops
exactly the previewed jobs and mails their owners; labels an admin sets, seen by kubectl. Drains
with a grace period: the node is cordoned and the owners warned at once, the jobs stop when the
grace ends (time passing is the drain's stop time moved into the past), a cancelled drain stops
nothing, and a maintenance that drains its nodes at its start."""
import email
import re
from datetime import timedelta
from email import policy

import pytest

from conftest import rows_of
from kubesim_fixtures import kubectl, wait_for
from flask import current_app
from portal.cluster.client import Cluster
from portal.cluster.manifests import ClusterSettings
from portal.extensions import db
from portal.models import AuditEntry, Job, Node, NodeDrain, Placement, User, utcnow
from portal.services import jobs
from portal.services.context import Actor
from portal.sync.syncer import SyncSettings, Syncer

A = "kubesim.crater.io/"
A100 = "NVIDIA-A100-SXM4-80GB"


@pytest.fixture
def app_config(fresh_sim, tmp_path, mailbox):
    sim = fresh_sim()[0]
    return {"KUBECONFIG": str(sim.write_kubeconfig(tmp_path / "kc")), "CLUSTER_TIMEOUT": 5.0, "SMTP_URL": mailbox.url,
            "_sim": sim}


@pytest.fixture
def world(app, app_config, make):
    sim = app_config["_sim"]
    people = {"admin": make.user("root", role="admin"), "alice": make.user("alice"), "carol": make.user("carol")}
    people["vision"] = make.account("vision-lab", members={people["alice"]: "member"})
    people["nlp"] = make.account("nlp-lab", members={people["carol"]: "member"})
    cluster = Cluster.connect(app.config["KUBECONFIG"], ClusterSettings(namespace="crater-jobs"))
    syncer = Syncer(app, cluster, settings=SyncSettings(lease_seconds=3, watch_timeout=5, reconcile_seconds=1,
                                                        outbox_seconds=0.3)).start()
    yield dict(people, sim=sim, cluster=cluster, syncer=syncer)
    syncer.stop()
    cluster.close()


def submit(app, world, who, account, gpus=2, model=A100, run="forever"):
    with app.app_context():
        actor = Actor(db.session.get(User, world[who]), "")
        form = jobs.Submission(job_type="batch", account_id=world[account], display_name=f"{who}-train", image="pytorch:2",
                               command="python train.py", gpus=gpus, gpu_model=model,
                               annotations=((A + "run-seconds", run),))
        return jobs.submit_job(actor, form, world["cluster"], jobs.SubmitSettings.from_config(current_app.config)).id


def job_row(app, job_id):
    with app.app_context():
        job = db.session.get(Job, job_id)
        out = (job.state, job.reason, job.message, [p.get("node") for p in job.pods or []])
        db.session.remove()
        return out


def running_on(app, job_id):
    state, _r, _m, nodes = job_row(app, job_id)
    return nodes[0] if state == "Running" and nodes and nodes[0] else None


def node_row(app, name):
    with app.app_context():
        n = db.session.get(Node, name)
        out = None if n is None else dict(state=n.state, used=n.gpus_requested, jobs=n.jobs_count, reason=n.cordon_reason,
                                          reserved=n.reserved_for, labels=dict(n.labels or {}))
        db.session.remove()
        return out


def placements(app, node):
    with app.app_context():
        out = sorted(p.job_id for p in db.session.query(Placement).filter_by(node=node) if p.job_id)
        db.session.remove()
        return out


def gpus_cell(html, node):
    row = re.search(rf'<tr id="node-{re.escape(node)}".*?</tr>', html, re.S).group(0)
    return re.search(r'class="gpus-used">(\d+)</span>', row).group(1), row


def test_nodes_page_and_detail_follow_a_job_starting_and_ending(app, world, new_client):
    wait_for(lambda: node_row(app, "a100-0"), timeout=10, what="the node inventory")
    job_id = submit(app, world, "alice", "vision")
    node = wait_for(lambda: running_on(app, job_id), timeout=15, what="job running")
    wait_for(lambda: placements(app, node) == [job_id], timeout=10, what="placement")
    alice = new_client().login(world["alice"])
    page = alice.get("/nodes").get_data(as_text=True)
    used, row = gpus_cell(page, node)
    assert used == "2" and "Ready" in row
    summary = re.search(rf'<tr data-model="{A100}">.*?</tr>', page, re.S).group(0)
    assert re.search(r'class="used">2<', summary) and re.search(r'class="free"><strong>14<', summary)
    detail = alice.get(f"/nodes/{node}").get_data(as_text=True)
    assert f'data-job="{job_id}"' in detail and "alice" in detail and "vision-lab" in detail
    assert f'/jobs/{job_id}"' in detail  # her own job: a link with its name
    carol = new_client().login(world["carol"])
    other = carol.get(f"/nodes/{node}").get_data(as_text=True)
    assert f'data-job="{job_id}"' in other and "alice-train" not in other  # another's job name hidden by default
    # filters and sorting: only nodes with 8 free GPUs -> the other A100 node, not this one
    free8 = alice.get("/nodes?free=8&model=" + A100).get_data(as_text=True)
    assert f'id="node-{node}"' not in free8 and free8.count('<tr id="node-') == 1
    with app.app_context():
        jobs.stop_job(Actor(db.session.get(User, world["alice"]), ""), job_id, world["cluster"])
    wait_for(lambda: placements(app, node) == [] and node_row(app, node)["used"] == 0, timeout=15, what="released")
    assert gpus_cell(alice.get("/nodes").get_data(as_text=True), node)[0] == "0"


def test_cordon_with_a_reason_and_not_ready_are_shown(app, world, new_client):
    wait_for(lambda: node_row(app, "a100-0"), timeout=10, what="the node inventory")
    admin = new_client().login(world["admin"])
    response = admin.post("/nodes/a100-0/cordon", {"reason": "GPU 3 ECC errors"})
    assert response.status_code == 303
    core = world["cluster"].read_node("a100-0")
    assert core["spec"]["unschedulable"] is True
    assert core["metadata"]["annotations"]["crater.io/cordon-reason"] == "GPU 3 ECC errors"
    alice = new_client().login(world["alice"])
    wait_for(lambda: node_row(app, "a100-0")["state"] == "Cordoned", timeout=5, what="cordoned")
    page = alice.get("/nodes").get_data(as_text=True)
    _used, row = gpus_cell(page, "a100-0")
    assert "Cordoned" in row and "GPU 3 ECC errors" in row
    # a job for A100s now lands on the other node
    job_id = submit(app, world, "alice", "vision")
    assert wait_for(lambda: running_on(app, job_id), timeout=15) == "a100-1"
    world["sim"].set_node_ready("rtx4090-0", False)
    wait_for(lambda: node_row(app, "rtx4090-0")["state"] == "NotReady", timeout=10, what="NotReady")
    assert "NotReady" in gpus_cell(alice.get("/nodes?state=NotReady").get_data(as_text=True), "rtx4090-0")[1]
    assert admin.post("/nodes/a100-0/uncordon", {"reason": "replaced"}).status_code == 303
    wait_for(lambda: node_row(app, "a100-0")["state"] == "Ready" and not node_row(app, "a100-0")["reason"], timeout=10)
    assert "crater.io/cordon-reason" not in (world["cluster"].read_node("a100-0")["metadata"].get("annotations") or {})
    with app.app_context():
        from portal.models import AuditEntry
        actions = [(e.action, (e.detail or {}).get("reason")) for e in db.session.query(AuditEntry).order_by(AuditEntry.id)
                   if e.action.startswith("node.")]
    assert actions == [("node.cordon", "GPU 3 ECC errors"), ("node.uncordon", "replaced")]


def test_a_reserved_node_takes_only_its_accounts_jobs(app, world, new_client):
    wait_for(lambda: node_row(app, "a100-1"), timeout=10, what="the node inventory")
    admin = new_client().login(world["admin"])
    assert admin.post("/nodes/a100-1/cordon", {"reason": "keep the test on one node"}).status_code == 303
    assert admin.post("/nodes/a100-0/reserve", {"account": str(world["nlp"]), "reason": "ACL deadline"}).status_code == 303
    taints = world["cluster"].read_node("a100-0")["spec"]["taints"]
    assert {"key": "crater.io/reserved-for", "value": "nlp-lab", "effect": "NoSchedule"} in taints
    wait_for(lambda: node_row(app, "a100-0")["reserved"] == "nlp-lab", timeout=10, what="reservation seen")
    outsider = submit(app, world, "alice", "vision")
    insider = submit(app, world, "carol", "nlp")
    assert wait_for(lambda: running_on(app, insider), timeout=15) == "a100-0"
    # The admitter counts the reserved node as not free for other accounts: the outsider waits in
    # its queue for the cluster, instead of a pod the scheduler cannot place.
    assert job_row(app, outsider)[0] == "Queued"
    with app.app_context():
        blocker = db.session.get(Job, outsider).queue_blocker
        db.session.remove()
    assert blocker["kind"] == "capacity" and blocker["ask"] == 2
    page = new_client().login(world["alice"]).get("/nodes").get_data(as_text=True)
    assert "reserved for nlp-lab" in gpus_cell(page, "a100-0")[1]
    # The admin's reason, on the list and the node's page, for everyone (kept on the Node by the syncer).
    assert world["cluster"].read_node("a100-0")["metadata"]["annotations"]["crater.io/reserve-reason"] == "ACL deadline"
    assert "ACL deadline" in page and "ACL deadline" in new_client().login(world["alice"]).get("/nodes/a100-0").get_data(as_text=True)
    assert admin.post("/nodes/a100-0/release", {"reason": "deadline passed"}).status_code == 303
    assert "ACL deadline" not in new_client().login(world["alice"]).get("/nodes").get_data(as_text=True)
    assert wait_for(lambda: running_on(app, outsider), timeout=20) == "a100-0"  # the taint is gone


def test_a_drain_stops_exactly_the_previewed_jobs_and_mails_their_owners(app, world, new_client, mailbox):
    wait_for(lambda: node_row(app, "a100-1"), timeout=10, what="the node inventory")
    admin = new_client().login(world["admin"])
    assert admin.post("/nodes/a100-1/cordon", {"reason": "everything on a100-0"}).status_code == 303
    first, second = submit(app, world, "alice", "vision"), submit(app, world, "carol", "nlp")
    elsewhere = submit(app, world, "alice", "vision", gpus=1, model="NVIDIA-GeForce-RTX-4090")
    for job_id in (first, second):
        assert wait_for(lambda job_id=job_id: running_on(app, job_id), timeout=15) == "a100-0"
    wait_for(lambda: running_on(app, elsewhere), timeout=15)
    wait_for(lambda: placements(app, "a100-0") == sorted([first, second]), timeout=10, what="placements")
    preview = admin.get("/nodes/a100-0/drain").get_data(as_text=True)
    previewed = sorted(int(i) for i in re.findall(r'name="job" value="(\d+)"', preview))
    assert previewed == sorted([first, second]) and "alice" in preview and "nlp-lab" in preview
    # a job that lands on the node after the preview is not stopped by this drain
    assert admin.post("/nodes/a100-1/uncordon", {"reason": "x"}).status_code == 303
    response = admin.post("/nodes/a100-0/drain", {"reason": "PSU replacement", "job": [str(i) for i in previewed]})
    assert response.status_code == 303
    for job_id in (first, second):
        state, reason, message, _n = job_row(app, job_id)
        assert (state, reason) == ("Stopped", "Evicted") and "PSU replacement" in message and "a100-0" in message
    assert job_row(app, elsewhere)[0] == "Running"
    assert world["cluster"].read_node("a100-0")["spec"]["unschedulable"] is True
    wait_for(lambda: len(mailbox.messages) >= 2, timeout=15, what="two mails")
    import email
    from email import policy
    texts = "\n".join(f"{m['To']}\n{m.get_content()}" for m in
                      (email.message_from_string(raw, policy=policy.default) for raw in mailbox.messages))
    assert "alice@example.edu" in texts and "carol@example.edu" in texts and "PSU replacement" in texts
    assert len(mailbox.messages) == 2
    # their notices say an administrator stopped them, not a policy
    with app.app_context():
        from portal.models import Notification
        kinds = {n.kind for n in db.session.query(Notification).filter(Notification.job_id.in_([first, second]))}
    assert "job_stopped_admin" in kinds and "job_stopped_policy" not in kinds
    page = new_client().login(world["alice"]).get("/notifications").get_data(as_text=True)
    assert "stopped by a manager or administrator" in page and "stopped by a policy" not in page


@pytest.fixture
def tls_app(kubectl_env, schema, tmp_path):
    from conftest import base_config, wipe
    from portal import create_app
    sim, env = kubectl_env
    app = create_app(base_config(schema, KUBECONFIG=env["KUBECONFIG"]))
    wipe(app)
    yield app, sim, env
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_labels_set_in_the_portal_are_what_kubectl_shows(tls_app):
    from conftest import Client, Factory
    app, sim, env = tls_app
    make = Factory(app)
    admin = Client(app).login(make.user("root", role="admin"))
    make.node("a100-0", labels={"kubernetes.io/hostname": "a100-0"})
    assert admin.post("/nodes/a100-0/labels", {"key": "lab.example.edu/rack", "value": "r7"}).status_code == 303
    shown = kubectl(env, "get", "node", "a100-0", "-o", "jsonpath={.metadata.labels}").stdout
    assert '"lab.example.edu/rack":"r7"' in shown
    assert admin.post("/nodes/a100-0/labels", {"key": "nvidia.com/gpu.product", "value": "x"}).status_code == 422
    assert admin.post("/nodes/a100-0/labels", {"key": "bad key!", "value": "x"}).status_code == 422
    assert admin.post("/nodes/a100-0/cordon", {"reason": "rack move"}).status_code == 303
    assert "SchedulingDisabled" in kubectl(env, "get", "node", "a100-0").stdout
    assert admin.post("/nodes/a100-0/labels/remove", {"key": "lab.example.edu/rack"}).status_code == 303
    shown = kubectl(env, "get", "node", "a100-0", "-o", "jsonpath={.metadata.labels}").stdout
    assert "lab.example.edu/rack" not in shown


# ---- drains with a grace period, through kubesim and the syncer ----------------------------------

def _drains(app):
    return rows_of(app, NodeDrain)


def _when(dt):
    return dt.strftime("%Y-%m-%dT%H:%M")


def _mails(mailbox):
    return [email.message_from_string(raw, policy=policy.default) for raw in mailbox.messages]


def _two_jobs_on_a100_0(app, world, new_client):
    wait_for(lambda: node_row(app, "a100-1"), timeout=10, what="the node inventory")
    admin = new_client().login(world["admin"])
    assert admin.post("/nodes/a100-1/cordon", {"reason": "everything on a100-0"}).status_code == 303
    first, second = submit(app, world, "alice", "vision"), submit(app, world, "carol", "nlp")
    for job_id in (first, second):
        assert wait_for(lambda job_id=job_id: running_on(app, job_id), timeout=15) == "a100-0"
    wait_for(lambda: placements(app, "a100-0") == sorted([first, second]), timeout=10, what="placements")
    return admin, first, second


def _pass_the_time(app, drain_id):
    """The grace ends: the drain's stop time is moved into the past (what the clock would do)."""
    with app.app_context():
        db.session.query(NodeDrain).filter_by(id=drain_id).update({"stop_at": utcnow() - timedelta(seconds=1)})
        db.session.commit()


def test_a_drain_with_a_grace_period_warns_at_once_and_stops_the_jobs_when_it_ends(app, world, new_client, mailbox):
    admin, first, second = _two_jobs_on_a100_0(app, world, new_client)
    preview = admin.get("/nodes/a100-0/drain").get_data(as_text=True)
    assert 'name="grace"' in preview
    response = admin.post("/nodes/a100-0/drain", {"reason": "PSU swap", "grace": "30", "job": [str(first), str(second)]})
    assert response.status_code == 303
    assert world["cluster"].read_node("a100-0")["spec"]["unschedulable"] is True
    [drain] = _drains(app)
    assert drain.state == "scheduled" and sorted(drain.job_ids) == sorted([first, second])
    assert timedelta(minutes=29) < drain.stop_at - drain.warned_at <= timedelta(minutes=30)
    assert job_row(app, first)[0] == job_row(app, second)[0] == "Running"
    # the owners are told now, with the time, on the job page, the notifications and by mail
    alice = new_client().login(world["alice"])
    page = alice.get(f"/jobs/{first}").get_data(as_text=True)
    assert 'id="drain-warning"' in page and drain.stop_at.strftime("%Y-%m-%d %H:%M") in page and "PSU swap" in page
    assert "node is drained" in alice.get("/notifications").get_data(as_text=True)
    wait_for(lambda: len(mailbox.messages) >= 2, timeout=15, what="two warnings")
    warned = {m["To"]: m for m in _mails(mailbox)}
    assert set(warned) == {"alice@example.edu", "carol@example.edu"}
    assert "will be stopped at" in warned["alice@example.edu"]["Subject"]
    assert "checkpoint" in warned["alice@example.edu"].get_content()
    node_page = admin.get("/nodes/a100-0").get_data(as_text=True)
    assert 'id="scheduled-drain"' in node_page and "2 jobs stop at" in node_page
    # a second scheduled drain of the same node is refused; the syncer leaves the jobs alone meanwhile
    again = admin.post("/nodes/a100-0/drain", {"reason": "again", "grace": "5", "job": [str(first)]})
    assert again.status_code == 409 and "already scheduled" in again.get_data(as_text=True)
    _pass_the_time(app, drain.id)
    for job_id in (first, second):
        wait_for(lambda job_id=job_id: job_row(app, job_id)[0] == "Stopped", timeout=15, what="stopped at the end")
        state, reason, message, _n = job_row(app, job_id)
        assert reason == "Evicted" and "PSU swap" in message
    # the drain is recorded done after its jobs are stopped (their stops commit one by one)
    drain = wait_for(lambda: (lambda d: d if d.state == "done" else None)(_drains(app)[0]), timeout=15, what="the drain done")
    assert sorted(drain.stopped) == sorted([first, second])
    actions = [e.action for e in rows_of(app, AuditEntry) if e.action.startswith("node.drain")]
    assert actions == ["node.drain_scheduled", "node.drain"]


def test_a_cancelled_drain_stops_nothing_and_the_node_stays_cordoned(app, world, new_client):
    admin, first, second = _two_jobs_on_a100_0(app, world, new_client)
    assert admin.post("/nodes/a100-0/drain", {"reason": "maybe", "grace": "10", "job": [str(first)]}).status_code == 303
    [drain] = _drains(app)
    assert drain.job_ids == [first]  # only the previewed one is warned
    assert admin.post(f"/nodes/a100-1/drains/{drain.id}/cancel", {}).status_code == 404  # not that node's
    assert admin.post(f"/nodes/a100-0/drains/{drain.id}/cancel", {}).status_code == 303
    _pass_the_time(app, drain.id)
    with app.app_context():
        from portal.services import maintenance
        assert maintenance.run_due(world["cluster"], utcnow()) == {"warned": [], "done": []}
    assert job_row(app, first)[0] == "Running" and _drains(app)[0].state == "cancelled"
    assert world["cluster"].read_node("a100-0")["spec"]["unschedulable"] is True
    assert admin.post(f"/nodes/a100-0/drains/{drain.id}/cancel", {}).status_code == 409


def test_a_maintenance_that_drains_its_node_warns_ahead_then_stops_at_its_start(app, world, new_client, mailbox):
    wait_for(lambda: node_row(app, "a100-1"), timeout=10, what="the node inventory")
    admin = new_client().login(world["admin"])
    job_id = submit(app, world, "alice", "vision")
    node = wait_for(lambda: running_on(app, job_id), timeout=15, what="running")
    start = utcnow() + timedelta(minutes=20)
    response = admin.post("/admin/maintenance", {"message": "Firmware update", "starts": _when(start),
                                                 "ends": _when(start + timedelta(hours=1)), "nodes": [node],
                                                 "drain": "1", "drain_grace": "60"})
    assert response.status_code == 303
    # the warning is due (an hour before a start 20 minutes away): the syncer cordons and warns
    wait_for(lambda: _drains(app)[0].warned_at is not None, timeout=15, what="warned")
    assert world["cluster"].read_node(node)["spec"]["unschedulable"] is True
    assert _drains(app)[0].job_ids == [job_id]
    page = new_client().login(world["alice"]).get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'id="drain-warning"' in page and "Firmware update" in page
    wait_for(lambda: len(mailbox.messages) >= 2, timeout=15, what="the announcement and the warning")
    assert {m["To"] for m in _mails(mailbox)} == {"alice@example.edu"}
    subjects = [m["Subject"] for m in _mails(mailbox)]
    assert any("Maintenance from" in s for s in subjects) and any("will be stopped" in s for s in subjects)
    assert job_row(app, job_id)[0] == "Running"
    _pass_the_time(app, _drains(app)[0].id)
    wait_for(lambda: job_row(app, job_id)[0] == "Stopped", timeout=15, what="stopped at the start")
    assert re.search("Firmware update", job_row(app, job_id)[2])
    with app.app_context():
        assert db.session.get(Job, job_id).reason == "Evicted"
