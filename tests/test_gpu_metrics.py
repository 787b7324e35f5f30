"""GPU metrics end to end: a real Prometheus on loopback scrapes kubesim every second, the syncer
samples GPUs and keeps jobs' GPU summaries, pages chart what kubesim was told to produce (the pods'
gpu-util annotations), usage and waste come out of it, and with Prometheus stopped every page
still answers and says "no metrics"."""
import pytest

from conftest import job_of
from kubesim_fixtures import require_tool, wait_for
from flask import current_app
from portal.cluster.client import Cluster
from portal.cluster.manifests import ClusterSettings
from portal.extensions import db
from portal.local_prometheus import LocalPrometheus
from portal.models import GpuDevice, UsageDay, User
from portal.services import jobs
from portal.services.context import Actor
from portal.sync.syncer import SyncSettings, Syncer

A = "kubesim.crater.io/"
A100 = "NVIDIA-A100-SXM4-80GB"


@pytest.fixture
def stack(fresh_sim, tmp_path):
    binary = require_tool("prometheus", "CRATER_REQUIRE_PROMETHEUS")
    sim = fresh_sim(time_scale=1, tick=0.05)[0]
    prometheus = LocalPrometheus([f"127.0.0.1:{sim.port}"], tmp_path / "prom", scrape_interval=1.0, binary=binary).start()
    yield sim, prometheus
    prometheus.stop()


@pytest.fixture
def app_config(stack, tmp_path):
    sim, prometheus = stack
    return {"KUBECONFIG": str(sim.write_kubeconfig(tmp_path / "kc")), "PROMETHEUS_URL": prometheus.url,
            "PROMETHEUS_STEP": 1.0, "PROMETHEUS_TIMEOUT": 3.0, "USAGE_REFRESH_SECONDS": 2.0}


@pytest.fixture
def world(app, make, stack):
    ids = {"admin": make.user("root", role="admin"), "alice": make.user("alice")}
    ids["lab"] = make.account("vision-lab", members={ids["alice"]: "member"})
    cluster = Cluster.connect(app.config["KUBECONFIG"], ClusterSettings(namespace="crater-jobs"))
    syncer = Syncer(app, cluster, settings=SyncSettings(lease_seconds=3, watch_timeout=5, reconcile_seconds=1)).start()
    yield dict(ids, cluster=cluster, syncer=syncer, prometheus=stack[1])
    syncer.stop()
    cluster.close()


def submit(app, world, gpus, util, run):
    with app.app_context():
        actor = Actor(db.session.get(User, world["alice"]), "")
        form = jobs.Submission(job_type="batch", account_id=world["lab"], display_name=f"util-{util}", image="pytorch:2",
                               command="python train.py", gpus=gpus, gpu_model=A100,
                               annotations=((A + "run-seconds", run), (A + "gpu-util", util)))
        return jobs.submit_job(actor, form, world["cluster"], jobs.SubmitSettings.from_config(current_app.config)).id


@pytest.mark.serial  # measured GPU-seconds against the wall clock: Prometheus must scrape on time
def test_charts_devices_summaries_and_waste_follow_what_the_gpus_did(app, world, new_client):
    busy = submit(app, world, 2, "64", "10")
    idle = submit(app, world, 1, "idle", "10")
    wait_for(lambda: job_of(app, busy).state == "Running" and job_of(app, idle).state == "Running", timeout=20)
    alice = new_client().login(world["alice"])

    def busy_chart():
        data = alice.get(f"/jobs/{busy}/gpu.json").get_json()
        if not data["available"]:
            return None
        util = data["charts"][0]["series"]
        values = [v for s in util for v in s["values"] if v is not None]
        memory = [v for s in data["charts"][1]["series"] for v in s["values"] if v]  # the peak of every 4 s
        return data if len(util) == 2 and len(values) >= 4 and memory else None
    data = wait_for(busy_chart, timeout=20, interval=0.5, what="chart data")
    assert {v for s in data["charts"][0]["series"] for v in s["values"] if v is not None} == {64.0}
    assert data["charts"][1]["unit"] == "MiB" and any(v for s in data["charts"][1]["series"] for v in s["values"] if v)
    # the syncer's GPU devices: which job holds which GPU, at what utilisation
    node = job_of(app, busy).pods[0]["node"]
    # the node's charts name each GPU once, in index order, whichever pods held it
    for chart in alice.get(f"/nodes/{node}/gpu.json").get_json()["charts"]:
        labels = [s["label"] for s in chart["series"]]
        assert len(labels) == len(set(labels)) and labels == sorted(labels, key=lambda x: int(x.split()[-1])), labels

    def held():
        with app.app_context():
            rows = [(d.job_id, d.util) for d in db.session.query(GpuDevice).filter_by(node=node) if d.job_id]
            db.session.remove()
            return rows if len([r for r in rows if r[0] == busy]) == 2 else None
    assert sorted(wait_for(held, timeout=15, what="GPU devices")) .count((busy, 64.0)) == 2
    detail = alice.get(f"/nodes/{node}").get_data(as_text=True)
    assert "64 %" in detail and f"/jobs/{busy}" in detail
    # once they end: the kept summaries
    for job_id in (busy, idle):
        wait_for(lambda job_id=job_id: job_of(app, job_id).usage_state == "final", timeout=40, interval=0.5, what="final usage")
    b, i = job_of(app, busy), job_of(app, idle)
    seconds = (b.finished_at - b.started_at).total_seconds()
    assert (b.gpu_util_mean, b.gpu_util_peak) == (64.0, 64.0) and b.gpu_memory_peak_mib > 0
    assert b.gpu_seconds == 2 * seconds  # allocated: from the job's times, exactly

    def measured(job_id):
        with app.app_context():
            return sum(r.measured_gpu_seconds for r in db.session.query(UsageDay).filter_by(job_id=job_id))
    # used: 64 % of every measured GPU-second (the running time with samples: all but the pull and
    # the first scrape)
    assert 0.5 * b.gpu_seconds <= measured(busy) <= b.gpu_seconds
    assert abs(b.gpu_seconds_used - 0.64 * measured(busy)) < 1e-6 and b.gpu_seconds_idle == 0
    assert i.gpu_util_mean == 0 and i.gpu_seconds_used == 0 and i.gpu_seconds_idle == measured(idle) > 0
    page = alice.get(f"/jobs/{busy}").get_data(as_text=True)
    assert "Mean utilisation" in page and "64.0 %" in page
    report = alice.get("/usage").get_data(as_text=True)
    assert 'data-key="alice"' in report and f"{(b.gpu_seconds + i.gpu_seconds) / 3600:.1f}" in report


def test_without_prometheus_pages_answer_and_say_no_metrics(app, world, new_client):
    job_id = submit(app, world, 1, "50", "forever")
    wait_for(lambda: job_of(app, job_id).state == "Running", timeout=20)
    world["prometheus"].stop()
    alice = new_client().login(world["alice"])
    data = alice.get(f"/jobs/{job_id}/gpu.json").get_json()
    assert data["available"] is False and "No metrics" in data["message"] and "Prometheus" in data["message"]
    node = job_of(app, job_id).pods[0]["node"]
    for url in ("/", "/nodes", f"/nodes/{node}", f"/jobs/{job_id}", "/usage", f"/nodes/{node}/gpu.json", "/nodes/-/gpu.json"):
        assert alice.get(url).status_code == 200, url
    assert alice.get(f"/nodes/{node}/gpu.json").get_json()["available"] is False
    # the syncer notices: nodes say "no metrics" instead of a stale number
    wait_for(lambda: "no metrics" in alice.get("/nodes").get_data(as_text=True), timeout=15, what="no metrics shown")
    assert world["syncer"].healthy()


def test_a_hung_prometheus_costs_one_timeout_and_says_so(app, world, new_client):
    """Prometheus stopped mid-flight (SIGSTOP: it accepts connections and never answers): chart data
    answers "no metrics" within the configured timeout, pages that do not chart still answer."""
    import os
    import signal
    import time
    app.config["PROMETHEUS_TIMEOUT"] = 1.0
    job_id = submit(app, world, 1, "50", "forever")
    wait_for(lambda: job_of(app, job_id).state == "Running", timeout=20)
    proc = world["prometheus"].proc
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        alice = new_client().login(world["alice"])
        t = time.monotonic()
        data = alice.get(f"/jobs/{job_id}/gpu.json").get_json()
        assert time.monotonic() - t < 5 and data["available"] is False and "did not answer" in data["message"]
        assert alice.get("/nodes").status_code == 200 and alice.get(f"/jobs/{job_id}").status_code == 200
    finally:
        os.kill(proc.pid, signal.SIGCONT)
