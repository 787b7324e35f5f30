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


GPU_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: shell
  namespace: default
  annotations:
    kubesim.crater.io/run-seconds: forever
    kubesim.crater.io/gpu-util: "87"
spec:
  restartPolicy: Never
  containers:
    - name: main
      image: pytorch/pytorch:2.4
      command: ["sleep", "infinity"]
      env:
        - {name: GREETING, value: hello from the pod}
      resources:
        limits: {nvidia.com/gpu: 2}
"""


def test_exec_runs_a_real_process_with_the_containers_environment_and_its_gpus(kubectl_env, tmp_path):
    """kubectl exec over the websocket protocol: stdout, stderr, the exit code, stdin (v5's close
    of stdin), the container's environment and no more of kubesim's, a scratch folder per pod,
    and a nvidia-smi that prints the pod's simulated GPUs."""
    from kubesim_fixtures import wait_for
    _sim, env = kubectl_env
    kubectl(env, "apply", "-f", "-", input_text=GPU_POD)
    wait_for(lambda: "Running" in kubectl(env, "get", "pod", "shell").stdout, timeout=20, what="the pod running")
    out = kubectl(env, "exec", "shell", "--", "sh", "-c", 'echo "$GREETING"; echo oops >&2; pwd; exit 3', check=False)
    assert out.returncode == 3, out.stderr
    assert out.stdout.splitlines()[0] == "hello from the pod" and out.stdout.splitlines()[1].endswith("/default/shell")
    assert "oops" in out.stderr
    assert kubectl(env, "exec", "-i", "shell", "--", "cat", input_text="line one\nline two\n").stdout == "line one\nline two\n"
    seen = kubectl(env, "exec", "shell", "--", "env").stdout
    assert "KUBECONFIG" not in seen and "PYTEST_CURRENT_TEST" not in seen and "HOSTNAME=shell" in seen
    smi = kubectl(env, "exec", "shell", "--", "nvidia-smi").stdout
    assert "kubesim" in smi and smi.count("87%") == 2 and "A100" in smi
    missing = kubectl(env, "exec", "shell", "--", "no-such-tool", check=False)
    assert missing.returncode != 0 and "no-such-tool" in missing.stderr
    wrong = kubectl(env, "exec", "shell", "-c", "sidecar", "--", "true", check=False)
    assert wrong.returncode != 0 and "sidecar" in wrong.stderr
    kubectl(env, "delete", "pod", "shell", "--wait=false")
