"""The README's first command: `crater demo` starts the portal with kubesim's demo cluster and the
syncer, so a newcomer can sign in, submit a job and watch it run. Run as a real process (here with
kubesim 10x faster and its own instance folder)."""
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from kubesim_fixtures import wait_for
from process_stack import child_pids

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        taken = False
        for other in (port + 1, port + 2):  # the demo also takes port + 1 (its SSO) and port + 2 (kubesim's ingress)
            with socket.socket() as s:
                taken = taken or s.connect_ex(("127.0.0.1", other)) == 0
        if not taken:
            return port


@pytest.fixture
def demo(tmp_path):
    port = free_port()
    env = dict(os.environ, CRATER_DEMO_INSTANCE=str(tmp_path / "instance"), CRATER_DEMO_TIME_SCALE="10",
               PYTHONUNBUFFERED="1")
    env.pop("CRATER_DATABASE_URL", None)
    crater = Path(sys.executable).parent / "crater"
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen([str(crater), "demo", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://localhost:{port}"
    try:
        wait_for(lambda: _up(base) or proc.poll() is not None, timeout=60, interval=0.3, what="the demo")
        assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
        yield base, tmp_path / "instance", tmp_path / "demo.log"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _up(base):
    try:
        return requests.get(base + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_the_demo_runs_a_job_on_its_simulated_cluster(demo):
    base, instance, log = demo
    output = log.read_text()
    assert "Crater demo is running" in output and "kubesim" in output
    s = requests.Session()
    token = CSRF.search(s.get(base + "/login", timeout=5).text).group(1)
    password = (instance / "demo-admin-password").read_text().strip()
    signed_in = s.post(base + "/login", data={"csrf_token": token, "username": "admin", "password": password}, timeout=5)
    assert signed_in.url == base + "/"
    form = wait_for(lambda: (lambda page: page if "NVIDIA-A100-SXM4-80GB" in page else None)(
        s.get(base + "/jobs/new/batch", timeout=5).text), timeout=20, what="GPU models from the syncer")
    assert "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime" in form  # the demo's image list
    account = re.search(r'<select[^>]*id="account_id"[^>]*>\s*<option[^>]*value="(\d+)"', form).group(1)
    key = re.search(r'name="idempotency_key" type="hidden" value="([^"]+)"', form).group(1)
    submitted = s.post(base + "/jobs/new/batch", timeout=10, data={
        "csrf_token": CSRF.search(form).group(1), "idempotency_key": key, "display_name": "第一个作业",
        "account_id": account, "image": "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime", "command": "python train.py",
        "command_mode": "shell", "gpu_model": "NVIDIA-A100-SXM4-80GB", "gpus": "1", "cpu": "4", "memory_gib": "16",
        "time_limit_hours": "1"})
    assert re.search(r"/jobs/\d+$", submitted.url), submitted.text[:2000]
    start = time.monotonic()
    wait_for(lambda: "state-succeeded" in s.get(submitted.url, timeout=5).text, timeout=30, interval=0.5,
             what="the job to succeed")
    assert time.monotonic() - start < 30
    assert "Finished successfully." in s.get(submitted.url, timeout=5).text
    # GPU metrics: the demo's own Prometheus scrapes kubesim, so the home page's chart has data
    import shutil
    if shutil.which("prometheus") or os.environ.get("CRATER_REQUIRE_PROMETHEUS"):
        assert "GPU metrics: Prometheus at" in log.read_text()
        wait_for(lambda: s.get(base + "/nodes/-/gpu.json", timeout=5).json()["available"], timeout=30, interval=1,
                 what="cluster GPU chart data")
    else:
        assert "GPU metrics: off" in log.read_text()

    # A notebook, opened through kubesim's ingress stand-in behind the portal's sign-in, and a
    # terminal page for it.
    form = s.get(base + "/jobs/new/jupyter", timeout=5).text
    notebook = s.post(base + "/jobs/new/jupyter", timeout=10, data={
        "csrf_token": CSRF.search(form).group(1), "display_name": "notebook", "account_id": account,
        "idempotency_key": re.search(r'name="idempotency_key" type="hidden" value="([^"]+)"', form).group(1),
        "image": re.search(r'<option value="([^"]*notebook[^"]*)"', form).group(1), "gpus": "0", "cpu": "1",
        "memory_gib": "2", "time_limit_hours": "1"})
    wait_for(lambda: 'id="open-jupyter"' in s.get(notebook.url, timeout=5).text, timeout=30, interval=0.5,
             what="the notebook running")
    lab = s.get(notebook.url + "/jupyter", timeout=10)
    assert lab.status_code == 200 and "JupyterLab" in lab.text and "token" not in lab.url
    assert s.get(notebook.url + "/terminal", timeout=10).status_code == 200


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_kill_stops_the_demo_and_everything_it_started(tmp_path):
    """SIGTERM (a plain `kill`) stops the demo as Ctrl+C does: its Prometheus (where it runs) and
    every other process it started are gone, and it exits cleanly."""
    port = free_port()
    env = dict(os.environ, CRATER_DEMO_INSTANCE=str(tmp_path / "instance"), CRATER_DEMO_TIME_SCALE="10")
    env.pop("CRATER_DATABASE_URL", None)
    with (tmp_path / "demo.log").open("w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "crater"), "demo", "--port", str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _up(f"http://localhost:{port}") or proc.poll() is not None, timeout=60, interval=0.3,
                     what="the demo")
            children = child_pids(proc.pid)
            proc.send_signal(15)
            assert proc.wait(20) == 0, (tmp_path / "demo.log").read_text()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    wait_for(lambda: not [c for c in children if _alive(c)], timeout=10, what="the demo's processes gone")
