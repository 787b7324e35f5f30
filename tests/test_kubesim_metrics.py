"""kubesim's DCGM-style /metrics, scraped by a real Prometheus (Debian's package) started on a
free loopback port with a 1 s scrape interval, answering a PromQL query for one pod's GPUs."""
import socket
import subprocess
import urllib.parse

import pytest
import requests

from kubesim_fixtures import require_tool, wait_for

A = "kubesim.crater.io/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prometheus(tmp_path):
    binary = require_tool("prometheus", "CRATER_REQUIRE_PROMETHEUS")
    started = []

    def start(target: str) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          f"scrape_configs:\n  - job_name: dcgm\n    static_configs:\n      - targets: ['{target}']\n")
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(url), timeout=20, what="prometheus ready")
        return url

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


def _ready(url):
    try:
        return requests.get(url + "/-/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_metrics_use_dcgm_names_and_labels(fresh_sim):
    sim, core, _ = fresh_sim()
    core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "busy", "annotations": {A + "gpu-util": "88", A + "run-seconds": "forever"}},
        "spec": {"containers": [{"name": "main", "image": "pytorch", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}})
    wait_for(lambda: core.read_namespaced_pod("busy", "default").status.phase == "Running")
    text = requests.get(sim.url + "/metrics", timeout=5).text
    held = [line for line in text.splitlines() if line.startswith("DCGM_FI_DEV_GPU_UTIL{") and 'pod="busy"' in line]
    assert len(held) == 2 and all(line.endswith(" 88") for line in held)
    assert 'namespace="default"' in held[0] and 'container="main"' in held[0] and 'modelName="NVIDIA A100 SXM4 80GB"' in held[0]
    assert "# TYPE DCGM_FI_DEV_FB_USED gauge" in text
    all_util = [line for line in text.splitlines() if line.startswith("DCGM_FI_DEV_GPU_UTIL{")]
    assert len(all_util) == 2 * 8 + 2 * 4  # every GPU of the demo cluster, held or not


def test_gpus_are_released_when_the_pod_ends(fresh_sim):
    sim, core, _ = fresh_sim()
    core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "short", "annotations": {A + "run-seconds": "1"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}})
    wait_for(lambda: core.read_namespaced_pod("short", "default").status.phase == "Succeeded")
    assert 'pod="short"' not in requests.get(sim.url + "/metrics", timeout=5).text


def test_prometheus_scrapes_a_pods_gpu_utilisation(fresh_sim, prometheus):
    sim, core, _ = fresh_sim()
    core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "trainer", "annotations": {A + "gpu-util": "64", A + "run-seconds": "forever"}},
        "spec": {"containers": [{"name": "main", "image": "pytorch", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]}})
    wait_for(lambda: core.read_namespaced_pod("trainer", "default").status.phase == "Running")
    url = prometheus(f"127.0.0.1:{sim.port}")
    query = 'avg(DCGM_FI_DEV_GPU_UTIL{namespace="default",pod="trainer"})'

    def answer():
        data = requests.get(url + "/api/v1/query?query=" + urllib.parse.quote(query), timeout=2).json()
        return data["data"]["result"] if data.get("status") == "success" else None
    result = wait_for(answer, timeout=20, interval=0.5, what="a scraped sample")
    assert float(result[0]["value"][1]) == 64.0
    count = requests.get(url + "/api/v1/query", params={"query": 'count(DCGM_FI_DEV_GPU_UTIL{pod="trainer"})'}, timeout=2).json()
    assert count["data"]["result"][0]["value"][1] == "4"
