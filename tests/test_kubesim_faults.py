"""Faults for the portal's reliability tests, through the Python API and the HTTP control
endpoint of `python -m kubesim serve`: API errors, delays, dropped watches, expired
resourceVersions, NotReady nodes."""
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException


TOKEN = {"Authorization": "Bearer kubesim-token"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """kubesim as its own process, the way the demo and a developer run it."""
    folder = tmp_path_factory.mktemp("served")
    kubeconfig = folder / "kubeconfig"
    proc = subprocess.Popen([sys.executable, "-m", "kubesim", "serve", "--port", "0", "--kubeconfig", str(kubeconfig),
                             "--time-scale", "20"], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    line = proc.stdout.readline()
    assert line.startswith("kubesim serving http://127.0.0.1:"), line
    url = line.split()[2].rstrip(",")
    api = config.new_client_from_config(config_file=str(kubeconfig))
    yield url, client.CoreV1Api(api)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def control(url, path, body=None, method="POST"):
    response = requests.request(method, url + "/kubesim/" + path, json=body or {}, headers=TOKEN, timeout=5)
    response.raise_for_status()
    return response.json()


def test_injected_errors_then_recovery(served):
    url, core = served
    control(url, "faults", {"errorCode": 503, "errorCount": 2})
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.list_namespace()
        assert err.value.status == 503
    assert core.list_namespace().items  # the third request goes through
    control(url, "faults", {"errorCode": 500, "errorRate": 1.0, "pathPrefix": "/apis/batch"})
    core.list_namespace()  # other paths are not affected
    with pytest.raises(ApiException) as err:
        client.BatchV1Api(core.api_client).list_job_for_all_namespaces()
    assert err.value.status == 500
    control(url, "faults", method="DELETE")
    client.BatchV1Api(core.api_client).list_job_for_all_namespaces()


def test_delayed_answers(served):
    url, core = served
    control(url, "faults", {"delay": 0.3})
    t0 = time.monotonic()
    core.list_namespace()
    assert time.monotonic() - t0 >= 0.3
    control(url, "faults", method="DELETE")


def test_the_control_endpoint_needs_the_token(served):
    url, _core = served
    assert requests.post(url + "/kubesim/faults", json={"errorCode": 503}, timeout=5).status_code == 401


def test_expire_and_drop_watches_over_http(served):
    url, core = served
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    resp = core.list_namespaced_config_map("default", watch=True, resource_version=rv, timeout_seconds=30,
                                           _preload_content=False)
    time.sleep(0.2)
    t0 = time.monotonic()
    control(url, "drop-watches")
    resp.read()
    assert time.monotonic() - t0 < 5
    control(url, "expire")
    from kubernetes import watch
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1))
    assert err.value.status == 410


def test_node_not_ready_over_http(served):
    url, core = served
    control(url, "nodes/cpu-0/ready", {"ready": False})
    ready = [c for c in core.read_node("cpu-0").status.conditions if c.type == "Ready"][0]
    assert ready.status == "Unknown" and ready.reason == "NodeStatusUnknown"
    control(url, "nodes/cpu-0/ready", {"ready": True})
    assert [c for c in core.read_node("cpu-0").status.conditions if c.type == "Ready"][0].status == "True"


def test_python_api_faults(fresh_sim):
    sim, core, _ = fresh_sim()
    sim.faults.set(error_code=503, error_count=1)
    with pytest.raises(ApiException) as err:
        core.list_node()
    assert err.value.status == 503
    assert len(core.list_node().items) == 6
