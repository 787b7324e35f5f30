"""The syncer's own metrics on a port of its own: they parse with prometheus-client's parser and say
whether this replica leads, what its reflectors did, how long its passes took and how long the
queue and the outbox are."""
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubesim_fixtures import wait_for
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


def test_the_syncers_metrics(app, make, syncer):  # noqa: F811
    from portal.sync import telemetry
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, thread = telemetry.serve(syncer, port)
    try:
        wait_for(lambda: scrape(port).get(("crater_sync_leader", ())) == 1.0, timeout=15, what="the lead")
        found = scrape(port)
        assert found[("crater_sync_relists_total", (("kind", "jobs"),))] >= 1
        assert ("crater_sync_watch_restarts_total", (("kind", "nodes"),)) in found
        assert found[("crater_sync_queued_jobs", ())] == 0 and ("crater_sync_outbox_pending", ()) in found
        user = make.user("alice")
        lab = make.account("vision-lab", gpu_quota=8, members={user: "member"})
        make.job(user, lab, state="Queued", gpus=1, gpu_model="A100")
        assert scrape(port)[("crater_sync_queued_jobs", ())] == 1
        wait_for(lambda: ("crater_sync_pass_seconds", (("pass", "queue-admission"),)) in scrape(port), timeout=15,
                 what="an admission pass")
        assert scrape(port)[("crater_sync_admissions_total", ())] >= 0
    finally:
        server.shutdown()
