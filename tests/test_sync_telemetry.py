"""The syncer's own metrics on a port of its own: they parse with prometheus-client's parser and say
whether this replica leads, what its reflectors did, how long its passes took and how long the
queue and the outbox are."""
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubesim_fixtures import wait_for
from portal.cluster.labels import MANAGED_BY
from test_job_pages import syncer  # noqa: F401  (the fixture: the syncer against this test's kubesim)


@pytest.fixture
def cluster_sim(fresh_sim):
    return fresh_sim()


@pytest.fixture
def app_config(cluster_sim, tmp_path):
    return {"KUBECONFIG": str(cluster_sim[0].write_kubeconfig(tmp_path / "kc"))}


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text)
            for s in f.samples}


def test_the_syncers_metrics(app, make, syncer, cluster_sim):  # noqa: F811
    from portal.sync import telemetry
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, thread = telemetry.serve(syncer, port)
    try:
        wait_for(lambda: scrape(port).get(("crater_sync_leader", ())) == 1.0, timeout=15, what="the lead")
        # Leading comes first; the jobs reflector's first list follows (the fixture waited for nodes only).
        wait_for(lambda: scrape(port).get(("crater_sync_relists_total", (("kind", "jobs"),)), 0) >= 1, timeout=15,
                 what="the jobs listed")
        found = scrape(port)
        assert ("crater_sync_watch_restarts_total", (("kind", "nodes"),)) in found
        assert found[("crater_sync_queued_jobs", ())] == 0 and ("crater_sync_outbox_pending", ()) in found
        user = make.user("alice")
        lab = make.account("vision-lab", gpu_quota=8, members={user: "member"})
        make.job(user, lab, state="Queued", gpus=1, gpu_model="A100")
        assert scrape(port)[("crater_sync_queued_jobs", ())] == 1
        wait_for(lambda: ("crater_sync_pass_seconds", (("pass", "queue-admission"),)) in scrape(port), timeout=15,
                 what="an admission pass")
        assert scrape(port)[("crater_sync_admissions_total", ())] >= 0
        # A job's events reach its row: the write lag is observed (a histogram, in seconds).
        before = scrape(port).get(("crater_sync_write_lag_seconds_count", ()), 0)
        job_id = make.job(user, lab, state="Pending", gpus=0)
        labels = {"crater.io/job-id": str(job_id), "app.kubernetes.io/managed-by": MANAGED_BY}
        cluster_sim[2].create_namespaced_job("crater-jobs", {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"crater-{job_id}", "labels": labels},
            "spec": {"template": {"metadata": {"labels": labels}, "spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "busybox", "command": ["true"]}]}}}})
        wait_for(lambda: scrape(port).get(("crater_sync_write_lag_seconds_count", ()), 0) > before, timeout=15,
                 what="a write observed")
        found = scrape(port)
        assert found[("crater_sync_write_lag_seconds_sum", ())] >= 0 and ("crater_sync_write_lag_seconds_bucket", (("le", "+Inf"),)) in found
        wait_for(lambda: ("crater_sync_policy_actions_total", (("action", "stop"), ("policy", "pending_interactive")))
                 in scrape(port), timeout=15, what="a policy pass")
    finally:
        server.shutdown()
