"""kubectl (an independent client) against kubesim: discovery, get across kinds and namespaces,
apply, describe, delete, and get -w."""
import re
import time

from kubesim_fixtures import kubectl, kubectl_watch

JOB = """
apiVersion: batch/v1
kind: Job
metadata:
  name: hello
  namespace: default
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: main
          image: busybox:1.36
          command: ["echo", "hi"]
"""


def test_get_nodes_pods_jobs_in_all_namespaces(kubectl_env):
    _sim, env = kubectl_env
    out = kubectl(env, "get", "nodes,pods,jobs", "-A").stdout
    assert "node/a100-0" in out and "Ready" in out and "v1.32.0-kubesim" in out


def test_apply_describe_delete_a_job(kubectl_env):
    _sim, env = kubectl_env
    assert "job.batch/hello created" in kubectl(env, "apply", "-f", "-", input_text=JOB).stdout
    assert "job.batch/hello unchanged" in kubectl(env, "apply", "-f", "-", input_text=JOB).stdout
    described = kubectl(env, "describe", "job", "hello").stdout
    assert re.search(r"Backoff Limit:\s+0", described) and "busybox:1.36" in described
    assert "job.batch \"hello\" deleted" in kubectl(env, "delete", "job", "hello").stdout
    assert "NotFound" in kubectl(env, "get", "job", "hello", check=False).stderr


def test_apply_rejects_unknown_fields(kubectl_env):
    _sim, env = kubectl_env
    result = kubectl(env, "apply", "-f", "-", input_text=JOB.replace("backoffLimit: 0", "backoffLimit: 0\n  bogus: 1"),
                     check=False)
    assert result.returncode != 0 and "bogus" in result.stderr


def test_describe_pod(kubectl_env):
    sim, env = kubectl_env
    kubectl(env, "run", "describe-me", "--image=busybox:1.36", "--restart=Never", "--labels=app=demo")
    out = kubectl(env, "describe", "pod", "describe-me").stdout
    assert "Name:" in out and "describe-me" in out and "app=demo" in out and "busybox:1.36" in out


def test_get_watch_sees_a_new_pod(kubectl_env):
    sim, env = kubectl_env
    with kubectl_watch(env, ["get", "pods", "-w", "--request-timeout=10s"],
                       lambda line: line.startswith("watched")) as (lines, arrived):
        time.sleep(1.0)
        kubectl(env, "run", "watched", "--image=busybox:1.36", "--restart=Never")
        assert arrived.wait(8), lines


def test_logs_and_watching_a_pod_become_running(kubectl_env):
    sim, env = kubectl_env
    kubectl(env, "run", "runner", "--image=busybox:1.36", "--restart=Never",
            "--annotations=kubesim.crater.io/log=hello from runner", "--annotations=kubesim.crater.io/run-seconds=forever")
    with kubectl_watch(env, ["get", "pod", "runner", "-w", "--request-timeout=20s"],
                       lambda line: " Running " in line) as (lines, running):
        assert running.wait(15), lines
    rows = [line for line in lines if line.startswith("runner")]
    assert " Running " not in rows[0] and " Running " in rows[-1]  # seen changing, not just listed
    assert "hello from runner" in kubectl(env, "logs", "runner").stdout


def test_an_idle_watch_over_tls_stays_open(kubectl_env):
    """Watches check every second whether their client left; over TLS that check must not end them."""
    sim, env = kubectl_env
    with kubectl_watch(env, ["get", "configmaps", "-w", "--request-timeout=20s"],
                       lambda line: line.startswith("late")) as (lines, seen):
        time.sleep(3)  # idle well past the one-second check
        kubectl(env, "apply", "-f", "-", input_text="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late\ndata:\n  a: '1'\n")
        assert seen.wait(10), lines
