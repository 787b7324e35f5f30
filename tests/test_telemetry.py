"""The portal's own metrics at /metrics: they parse with prometheus-client's own text parser, the
counters move with the requests and submissions they count, and only loopback (or the holder of
CRATER_METRICS_TOKEN) may read them."""
from flask import current_app
import pytest
from prometheus_client.parser import text_string_to_metric_families


def samples(response) -> dict:
    assert response.status_code == 200 and response.mimetype == "text/plain"
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_parse_and_the_counters_move(app, client, make):
    before = samples(client.get("/metrics"))
    for _ in range(3):
        client.get("/healthz")
    client.get("/no/such/page")
    alice = make.user("alice")
    make.account("vision-lab", gpu_quota=8, members={alice: "member"})
    client.login(alice)
    client.post("/jobs/new/batch", {"display_name": ""})  # the form refuses it
    after = samples(client.get("/metrics"))
    key = {"route": "/healthz", "method": "GET", "status": "200"}
    assert value(after, "crater_http_requests_total", **key) - value(before, "crater_http_requests_total", **key) == 3
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(after, "crater_http_requests_total", **unmatched) > value(before, "crater_http_requests_total", **unmatched)
    assert value(after, "crater_http_request_duration_seconds_count", route="/healthz") >= 3
    assert value(after, "crater_db_statement_duration_seconds_count") > value(before, "crater_db_statement_duration_seconds_count")
    assert value(after, "crater_http_requests_in_flight") >= 1  # this very request
    assert not any("/no/such/page" in str(labels) for _name, labels in after)  # labels are rules, not paths


def test_submissions_are_counted_by_outcome(app, make):
    from portal.extensions import db
    from portal.models import User
    from portal.services import jobs
    from portal.services.context import Actor
    from portal.services.errors import ValidationFailed
    from portal.telemetry import SUBMISSIONS
    alice = make.user("alice")
    lab = make.account("vision-lab", gpu_quota=8, members={alice: "member"})
    def invalid():
        return sum(s.value for f in SUBMISSIONS.collect() for s in f.samples
                   if s.name.endswith("_total") and s.labels["outcome"] == "invalid" and s.labels["reason"])
    before = invalid()
    with app.app_context():
        with pytest.raises(ValidationFailed):
            jobs.submit_job(Actor(db.session.get(User, alice)), jobs.Submission(
                job_type="batch", account_id=lab, display_name="", image=""), cluster=None, settings=jobs.SubmitSettings.from_config(current_app.config))
        db.session.remove()
    assert invalid() == before + 1  # with the first field the rules refused
    refused = SUBMISSIONS.labels("batch", "refused", "gpus")._value.get()
    from portal.services.scheduling.admission import QuotaExceeded
    make.job(alice, lab, state="Running", gpus=8)
    with app.app_context():
        with pytest.raises(QuotaExceeded):
            jobs.submit_job(Actor(db.session.get(User, alice)), jobs.Submission(
                job_type="batch", account_id=lab, display_name="big", image="pytorch/pytorch:2.4", command="true", gpus=1,
                queue_if_full=False), cluster=None, settings=jobs.SubmitSettings.from_config(current_app.config))
        db.session.remove()
    assert SUBMISSIONS.labels("batch", "refused", "gpus")._value.get() == refused + 1


def test_only_loopback_reads_the_metrics_without_a_token(client):
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 404


@pytest.mark.parametrize("app_config", [{"METRICS_TOKEN": "s3cret-metrics-token"}])
def test_with_a_token_the_metrics_need_it_from_anywhere(client, app_config):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"},
                    environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert ok.status_code == 200 and "crater_http_requests_total" in ok.get_data(as_text=True)


def test_every_gunicorn_worker_counts_in_multiprocess_mode(tmp_path):
    """Two gunicorn workers with PROMETHEUS_MULTIPROC_DIR: /metrics, whichever worker answers it,
    counts the requests both workers answered."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "prom").mkdir()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"), CRATER_ENV="development",
               CRATER_DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3", CRATER_WEB_WORKERS="2",
               CRATER_BIND=f"127.0.0.1:{port}")
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "app:app"], cwd=root,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline and web.poll() is None, "gunicorn did not start"
                time.sleep(0.2)
        key = ("crater_http_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200")))

        def counted():
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            return {(s.name, tuple(sorted(s.labels.items()))): s.value
                    for f in text_string_to_metric_families(text) for s in f.samples}[key]
        before = counted()  # the start-up probes (one may have timed out here and still been answered)
        for _ in range(40):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).read()
        files = {p.name for p in (tmp_path / "prom").iterdir()}
        assert len({name.rsplit("_", 1)[-1] for name in files if name.startswith("counter_")}) == 2  # two workers wrote
        for _ in range(4):
            assert counted() == before + 40
    finally:
        web.terminate()
        web.wait(20)
