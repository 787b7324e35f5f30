"""Every cluster call is bounded and every failure becomes ClusterError: the API refusing
connections, hung (a listening socket that never answers), resetting, answering garbage, 5xx and
429; a watch on a hung API ends within its read timeout too."""
import socket
import time

import pytest

from portal.cluster.client import Cluster, ClusterError
from portal.cluster.manifests import ClusterSettings, JobRequest

TIMEOUT = (0.5, 1.0)


def cluster_at(tmp_path, server: str) -> Cluster:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
current-context: c
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
""")
    return Cluster.connect(str(path), ClusterSettings(namespace="crater-jobs"), timeout=TIMEOUT)


@pytest.fixture
def hung(tmp_path):
    """A server that accepts connections (the kernel does) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield cluster_at(tmp_path, f"http://127.0.0.1:{sock.getsockname()[1]}")
    sock.close()


@pytest.fixture
def refusing(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return cluster_at(tmp_path, f"http://127.0.0.1:{port}")


REQUEST = JobRequest(job_id=1, job_type="batch", username="u", account="a", display_name="x", image="busybox:1",
                     command="true")
CALLS = {
    "create": lambda c: c.create_job(REQUEST), "delete": lambda c: c.delete_job(1), "log": lambda c: c.log("p"),
    "objects": lambda c: c.job_objects(1), "token": lambda c: c.jupyter_token(1), "list": lambda c: c.list("jobs"),
    "lease": lambda c: c.read_lease("l"), "watch": lambda c: list(c.watch("jobs", "1", timeout_seconds=1)),
}


def timed_error(call, cluster) -> tuple[ClusterError, float]:
    started = time.monotonic()
    with pytest.raises(ClusterError) as caught:
        call(cluster)
    return caught.value, time.monotonic() - started


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_refused_connection_is_a_cluster_error_at_once(refusing, name):
    error, took = timed_error(CALLS[name], refusing)
    assert "connection refused" in error.message and error.retryable and not error.answered and took < 1


@pytest.mark.parametrize("name", sorted(set(CALLS) - {"watch"}))
def test_a_hung_api_is_a_cluster_error_within_the_read_timeout(hung, name):
    error, took = timed_error(CALLS[name], hung)
    assert "did not answer in time" in error.message and took < TIMEOUT[1] * 2 + 0.5


def test_a_watch_on_a_hung_api_ends_within_its_read_timeout(hung):
    error, took = timed_error(lambda c: list(c.watch("jobs", "1", timeout_seconds=1)), hung)
    assert "did not answer in time" in error.message and took < 1 + 10 + 1  # server timeout + slack


@pytest.mark.parametrize("fault, words", [
    ({"reset": True}, "cannot be reached"), ({"garbage": True}, "cannot read"),
    ({"error_code": 503}, "injected fault (503)"), ({"error_code": 429}, "injected fault (429)"),
    ({"error_code": 500}, "injected fault (500)")])
def test_sick_answers_are_cluster_errors(fresh_sim, tmp_path, fault, words):
    sim = fresh_sim()[0]
    cluster = Cluster.connect(str(sim.write_kubeconfig(tmp_path / "kc")), ClusterSettings(namespace="crater-jobs"),
                              timeout=TIMEOUT)
    sim.faults.set(**fault)
    for name, call in CALLS.items():
        if name == "log" and "garbage" in fault:
            continue  # any text is a log
        error, took = timed_error(call, cluster)
        assert words in error.message and error.retryable, (name, error.message)
        assert took < TIMEOUT[1] * 2 + 0.5
