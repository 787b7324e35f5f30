"""kubesim fixtures: a simulated cluster on loopback, the official kubernetes client configured
through an ordinary kubeconfig, and kubectl (HTTPS, since kubectl sends tokens only over TLS)."""
import contextlib
import os
import shutil
import subprocess
import threading

import pytest
from kubernetes import client, config

from kubesim import KubeSim


def _api(sim, tmp_path_factory):
    path = sim.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")
    return config.new_client_from_config(config_file=str(path)), path


@pytest.fixture(scope="module")
def sim():
    with KubeSim(bookmark_interval=0.2) as s:
        yield s


@pytest.fixture(scope="module")
def api_client(sim, tmp_path_factory):
    api, _ = _api(sim, tmp_path_factory)
    yield api
    api.close()


@pytest.fixture
def core(api_client):
    return client.CoreV1Api(api_client)


@pytest.fixture
def batch(api_client):
    return client.BatchV1Api(api_client)


@pytest.fixture
def ns(core, request):
    """A fresh namespace per test, so tests never see each other's objects."""
    import uuid
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name


def require_tool(name: str, flag: str) -> str:
    """The tool's path; a skip when it is missing, or a failure when `flag`=1 (as in CI)."""
    binary = shutil.which(name)
    if not binary:
        if os.environ.get(flag, "") not in ("", "0"):
            pytest.fail(f"{name} is not installed ({flag}=1 forbids skipping)")
        pytest.skip(f"{name} is not installed")
    return binary


@pytest.fixture(scope="module")
def kubectl_env(tmp_path_factory):
    """kubectl against an HTTPS kubesim; CRATER_REQUIRE_KUBECTL=1 makes a missing kubectl fail."""
    require_tool("kubectl", "CRATER_REQUIRE_KUBECTL")
    with KubeSim(tls=True) as s:
        path = s.write_kubeconfig(tmp_path_factory.mktemp("kubectl") / "kubeconfig")
        yield s, {**os.environ, "KUBECONFIG": str(path)}


def kubectl(env, *args, input_text=None, check=True, timeout=30):
    result = subprocess.run(["kubectl", *args], env=env, input=input_text, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll until `predicate()` returns a truthy value (the cluster runs on its own threads)."""
    import time as _time
    deadline = _time.monotonic() + timeout
    while _time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        _time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def fresh_sim(tmp_path):
    """A cluster of its own (capacity tests must not share nodes), running 20x faster."""
    started = []

    def make(cluster=None, **kw):
        kw.setdefault("time_scale", 20)
        kw.setdefault("tick", 0.02)
        s = KubeSim(cluster=cluster, **kw).start()
        started.append(s)
        api, _ = _api_from(s, tmp_path / f"kubeconfig-{len(started)}")
        return s, client.CoreV1Api(api), client.BatchV1Api(api)

    yield make
    for s in started:
        s.stop()


def _api_from(sim, path):
    path = sim.write_kubeconfig(path)
    return config.new_client_from_config(config_file=str(path)), path


def is_gone(read) -> bool:
    """True when `read()` answers 404 (the object was deleted)."""
    from kubernetes.client.exceptions import ApiException
    try:
        read()
    except ApiException as exc:
        return exc.status == 404
    return False


@contextlib.contextmanager
def kubectl_watch(env, args, until):
    """`kubectl get ... -w` in the background: yields (lines so far, event set once `until(line)`),
    and kills kubectl on the way out."""
    proc = subprocess.Popen(["kubectl", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield stream_lines(proc, until)
    finally:
        proc.kill()
        proc.wait()


def stream_lines(proc, until):
    """Collect a process's output lines on a thread; the event is set once `until(line)` holds."""
    lines, seen = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if until(line):
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    return lines, seen
