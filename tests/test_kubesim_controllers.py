"""The simulated cluster's behaviour: scheduling (GPU fit, taints, cordon, affinity, the
unschedulable message, creation order, retry when capacity frees), the kubelet (pull failures,
exit codes, OOMKilled, graceful deletion, logs) and the Job controller (indexed jobs, deadline,
backoff, suspend, TTL and garbage collection)."""
import pytest
from kubernetes.client.exceptions import ApiException

from kubesim_fixtures import is_gone, wait_for

A = "kubesim.crater.io/"


def gpu_pod(name, gpus, annotations=None, **spec):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {A + "run-seconds": "forever", **(annotations or {})}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "pytorch/pytorch:2.4",
                     "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}], **spec}}


def job(name, run="5", **spec):
    template_annotations = {A + "run-seconds": run}
    template_annotations.update(spec.pop("annotations", {}))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"metadata": {"annotations": template_annotations},
                                  "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36"}]}},
                     **spec}}


def phase(core, name, ns="default"):
    return core.read_namespaced_pod(name, ns).status.phase


def unschedulable_message(core, name, ns="default"):
    conditions = core.read_namespaced_pod(name, ns).status.conditions or []
    return next((c.message for c in conditions if c.type == "PodScheduled" and c.status == "False"), None)


def job_pods(core, job_name, ns="default"):
    return core.list_namespaced_pod(ns, label_selector=f"job-name={job_name}").items


def events(core, name, ns="default"):
    return [(e.reason, e.message) for e in core.list_namespaced_event(ns).items if e.involved_object.name == name]


# ---- scheduler ---------------------------------------------------------------------------------

def test_gpu_pod_lands_on_a_node_with_enough_gpus(fresh_sim):
    _sim, core, _ = fresh_sim()
    core.create_namespaced_pod("default", gpu_pod("eight", 8))
    node = wait_for(lambda: core.read_namespaced_pod("eight", "default").spec.node_name, what="binding")
    assert node.startswith("a100-")
    assert ("Scheduled", f"Successfully assigned default/eight to {node}") in events(core, "eight")


def test_too_many_gpus_is_unschedulable_with_the_schedulers_message(fresh_sim):
    _sim, core, _ = fresh_sim()
    core.create_namespaced_pod("default", gpu_pod("sixteen", 16))
    message = wait_for(lambda: unschedulable_message(core, "sixteen"), what="Unschedulable")
    assert message == "0/6 nodes are available: 6 Insufficient nvidia.com/gpu."
    assert ("FailedScheduling", message) in events(core, "sixteen")
    condition = [c for c in core.read_namespaced_pod("sixteen", "default").status.conditions if c.type == "PodScheduled"][0]
    assert condition.reason == "Unschedulable" and phase(core, "sixteen") == "Pending"


def test_cordoned_nodes_are_counted_in_the_message(fresh_sim):
    _sim, core, _ = fresh_sim()
    for node in ("a100-0", "a100-1"):
        core.patch_node(node, {"spec": {"unschedulable": True}})
    core.create_namespaced_pod("default", gpu_pod("eight", 8))
    message = wait_for(lambda: unschedulable_message(core, "eight"), what="Unschedulable")
    assert message == "0/6 nodes are available: 2 node(s) were unschedulable, 4 Insufficient nvidia.com/gpu."
    core.patch_node("a100-1", {"spec": {"unschedulable": False}})  # uncordon: the pod is retried
    assert wait_for(lambda: core.read_namespaced_pod("eight", "default").spec.node_name) == "a100-1"


def test_taints_keep_pods_off_unless_tolerated(fresh_sim):
    cluster = {"nodePools": [{"name": "tainted", "count": 1, "cpu": 8, "memory": "32Gi",
                              "gpu": {"model": "NVIDIA-H100", "count": 8},
                              "taints": [{"key": "dedicated", "value": "llm", "effect": "NoSchedule"}]}]}
    _sim, core, _ = fresh_sim(cluster)
    core.create_namespaced_pod("default", gpu_pod("plain", 1))
    message = wait_for(lambda: unschedulable_message(core, "plain"))
    assert message == "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: llm}."
    core.create_namespaced_pod("default", gpu_pod("tolerant", 1, tolerations=[
        {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}]))
    assert wait_for(lambda: core.read_namespaced_pod("tolerant", "default").spec.node_name) == "tainted-0"


def test_node_selector_and_affinity_choose_the_gpu_model(fresh_sim):
    _sim, core, _ = fresh_sim()
    core.create_namespaced_pod("default", gpu_pod("by-selector", 1, nodeSelector={"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090"}))
    core.create_namespaced_pod("default", gpu_pod("by-affinity", 1, affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A100-SXM4-80GB"]}]}]}}}))
    core.create_namespaced_pod("default", gpu_pod("nowhere", 1, nodeSelector={"nvidia.com/gpu.product": "TPU"}))
    assert wait_for(lambda: core.read_namespaced_pod("by-selector", "default").spec.node_name).startswith("rtx4090-")
    assert wait_for(lambda: core.read_namespaced_pod("by-affinity", "default").spec.node_name).startswith("a100-")
    assert wait_for(lambda: unschedulable_message(core, "nowhere")) == (
        "0/6 nodes are available: 6 node(s) didn't match Pod's node affinity/selector.")


def test_not_ready_nodes_get_no_pods(fresh_sim):
    sim, core, _ = fresh_sim()
    for node in ("a100-0", "a100-1"):
        sim.set_node_ready(node, False)
    core.create_namespaced_pod("default", gpu_pod("waits", 8))
    message = wait_for(lambda: unschedulable_message(core, "waits"))
    assert "2 node(s) had untolerated taint {node.kubernetes.io/not-ready: }" in message
    sim.set_node_ready("a100-0", True)
    assert wait_for(lambda: core.read_namespaced_pod("waits", "default").spec.node_name) == "a100-0"


def test_pending_pods_start_in_creation_order_when_capacity_frees(fresh_sim):
    _sim, core, _ = fresh_sim()
    for name in ("fill-0", "fill-1"):
        core.create_namespaced_pod("default", gpu_pod(name, 8))
    wait_for(lambda: all(core.read_namespaced_pod(n, "default").spec.node_name for n in ("fill-0", "fill-1")))
    core.create_namespaced_pod("default", gpu_pod("first", 8))
    core.create_namespaced_pod("default", gpu_pod("second", 8))
    wait_for(lambda: unschedulable_message(core, "second"))
    core.delete_namespaced_pod("fill-0", "default")
    wait_for(lambda: core.read_namespaced_pod("first", "default").spec.node_name, what="first bound")
    assert core.read_namespaced_pod("second", "default").spec.node_name is None


# ---- kubelet ---------------------------------------------------------------------------------

def test_pod_runs_and_succeeds_with_logs(fresh_sim):
    _sim, core, _ = fresh_sim()
    pod = gpu_pod("train", 1, {A + "run-seconds": "10"})
    core.create_namespaced_pod("default", pod)
    wait_for(lambda: phase(core, "train") == "Running", what="Running")
    status = core.read_namespaced_pod("train", "default").status
    assert status.container_statuses[0].ready and status.pod_ip and status.start_time
    wait_for(lambda: phase(core, "train") == "Succeeded", what="Succeeded")
    term = core.read_namespaced_pod("train", "default").status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (0, "Completed")
    log = core.read_namespaced_pod_log("train", "default")
    assert "Using device: cuda (1 GPU)" in log and " loss " in log and log.rstrip().endswith("final.pt")
    assert core.read_namespaced_pod_log("train", "default", tail_lines=1).count("\n") == 1
    stamped = core.read_namespaced_pod_log("train", "default", tail_lines=1, timestamps=True)
    assert stamped[:4].isdigit() and "T" in stamped.split(" ")[0]
    reasons = [r for r, _m in events(core, "train")]
    assert {"Scheduled", "Pulling", "Pulled", "Created", "Started"} <= set(reasons)


def test_exit_code_and_oom(fresh_sim):
    _sim, core, _ = fresh_sim()
    core.create_namespaced_pod("default", gpu_pod("fails", 1, {A + "run-seconds": "2", A + "exit-code": "3"}))
    core.create_namespaced_pod("default", gpu_pod("oom", 1, {A + "run-seconds": "2", A + "oom": "true"}))
    wait_for(lambda: phase(core, "fails") == "Failed" and phase(core, "oom") == "Failed")
    fails = core.read_namespaced_pod("fails", "default").status.container_statuses[0].state.terminated
    oom = core.read_namespaced_pod("oom", "default").status.container_statuses[0].state.terminated
    assert (fails.exit_code, fails.reason) == (3, "Error")
    assert (oom.exit_code, oom.reason) == (137, "OOMKilled")


def test_missing_image_backs_off(fresh_sim):
    _sim, core, _ = fresh_sim()
    core.create_namespaced_pod("default", gpu_pod("nope", 1, {A + "image-pull": "fail"}))
    waiting = lambda: (core.read_namespaced_pod("nope", "default").status.container_statuses or [None])[0]  # noqa: E731
    wait_for(lambda: waiting() and waiting().state.waiting and waiting().state.waiting.reason == "ImagePullBackOff")
    assert phase(core, "nope") == "Pending"
    assert any(r == "Failed" and "not found" in m for r, m in events(core, "nope"))
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("nope", "default")
    assert err.value.status == 400 and "is waiting to start: ImagePullBackOff" in err.value.body


def test_restart_policy_on_failure_restarts(fresh_sim):
    _sim, core, _ = fresh_sim()
    core.create_namespaced_pod("default", gpu_pod("flaky", 1, {A + "run-seconds": "1", A + "exit-code": "1"},
                                                  restartPolicy="OnFailure"))
    wait_for(lambda: (core.read_namespaced_pod("flaky", "default").status.container_statuses or [None])[0]
             and core.read_namespaced_pod("flaky", "default").status.container_statuses[0].restart_count >= 2)
    status = core.read_namespaced_pod("flaky", "default").status
    assert status.phase == "Running" and status.container_statuses[0].last_state.terminated.exit_code == 1


def test_deleting_a_running_pod_terminates_it_gracefully(fresh_sim):
    _sim, core, _ = fresh_sim()
    core.create_namespaced_pod("default", gpu_pod("server", 1, {A + "termination-seconds": "10"}))
    wait_for(lambda: phase(core, "server") == "Running")
    deleted = core.delete_namespaced_pod("server", "default")
    assert deleted.metadata.deletion_timestamp is not None  # Terminating, not gone yet
    assert core.read_namespaced_pod("server", "default").metadata.deletion_timestamp is not None
    assert ("Killing", "Stopping container main") in wait_for(lambda: events(core, "server") if any(
        r == "Killing" for r, _ in events(core, "server")) else None)
    wait_for(lambda: is_gone(lambda: core.read_namespaced_pod("server", "default")), what="pod removed")


def test_multi_container_logs_need_a_container_name(fresh_sim):
    _sim, core, _ = fresh_sim()
    pod = gpu_pod("two", 0)
    pod["spec"]["containers"].append({"name": "sidecar", "image": "busybox:1.36"})
    core.create_namespaced_pod("default", pod)
    wait_for(lambda: phase(core, "two") == "Running")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("two", "default")
    assert err.value.status == 400 and "a container name must be specified for pod two, choose one of: [main sidecar]" in err.value.body
    core.read_namespaced_pod_log("two", "default", container="main")


def test_jupyter_pods_run_until_deleted_and_log_like_jupyterlab(fresh_sim):
    _sim, core, _ = fresh_sim()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lab"},
           "spec": {"containers": [{"name": "lab", "image": "quay.io/jupyter/pytorch-notebook:latest",
                                    "command": ["start-notebook.py"]}]}}
    core.create_namespaced_pod("default", pod)
    wait_for(lambda: phase(core, "lab") == "Running")
    log = core.read_namespaced_pod_log("lab", "default")
    assert "Jupyter Server" in log and "is running at" in log


# ---- jobs ---------------------------------------------------------------------------------------

def test_job_runs_its_pods_to_completion(fresh_sim):
    _sim, core, batch = fresh_sim()
    batch.create_namespaced_job("default", job("two-of-them", completions=2, parallelism=1))
    wait_for(lambda: (batch.read_namespaced_job("two-of-them", "default").status.succeeded or 0) == 2, timeout=15)
    status = batch.read_namespaced_job("two-of-them", "default").status
    assert [c.type for c in status.conditions] == ["SuccessCriteriaMet", "Complete"]
    assert status.start_time and status.completion_time and not status.active
    reasons = [r for r, _m in events(core, "two-of-them")]
    assert reasons.count("SuccessfulCreate") == 2 and "Completed" in reasons


def test_indexed_job_wires_indexes_hostnames_and_env(fresh_sim):
    _sim, core, batch = fresh_sim()
    spec = job("dist", completionMode="Indexed", completions=3, parallelism=3)
    spec["spec"]["template"]["spec"]["subdomain"] = "dist-workers"
    batch.create_namespaced_job("default", spec)
    pods = wait_for(lambda: (lambda ps: ps if len(ps) == 3 else None)(job_pods(core, "dist")))
    indexes = sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1", "2"]
    for p in pods:
        i = p.metadata.annotations["batch.kubernetes.io/job-completion-index"]
        assert p.spec.hostname == f"dist-{i}" and p.spec.subdomain == "dist-workers"
        assert p.metadata.labels["batch.kubernetes.io/job-completion-index"] == i
        env = {e.name: e for e in p.spec.containers[0].env}
        assert "job-completion-index" in env["JOB_COMPLETION_INDEX"].value_from.field_ref.field_path
    wait_for(lambda: batch.read_namespaced_job("dist", "default").status.completed_indexes == "0-2", timeout=15)


def test_active_deadline_fails_the_job_and_stops_its_pods(fresh_sim):
    _sim, core, batch = fresh_sim()
    batch.create_namespaced_job("default", job("slow", run="forever", activeDeadlineSeconds=4))
    wait_for(lambda: any(c.type == "Failed" for c in batch.read_namespaced_job("slow", "default").status.conditions or []),
             timeout=15)
    failed = [c for c in batch.read_namespaced_job("slow", "default").status.conditions if c.type == "Failed"][0]
    assert failed.reason == "DeadlineExceeded"
    assert ("DeadlineExceeded", "Job was active longer than specified deadline") in events(core, "slow")
    wait_for(lambda: not job_pods(core, "slow"), what="pods stopped")


def test_backoff_limit_fails_the_job(fresh_sim):
    _sim, core, batch = fresh_sim()
    batch.create_namespaced_job("default", job("crashy", run="1", backoffLimit=1, annotations={A + "exit-code": "2"}))
    wait_for(lambda: any(c.type == "Failed" for c in batch.read_namespaced_job("crashy", "default").status.conditions or []),
             timeout=15)
    status = batch.read_namespaced_job("crashy", "default").status
    assert status.failed == 2 and [c.reason for c in status.conditions if c.type == "Failed"] == ["BackoffLimitExceeded"]


def test_suspended_job_creates_no_pods_until_resumed(fresh_sim):
    _sim, core, batch = fresh_sim()
    batch.create_namespaced_job("default", job("later", suspend=True))
    wait_for(lambda: any(c.type == "Suspended" for c in batch.read_namespaced_job("later", "default").status.conditions or []))
    assert job_pods(core, "later") == []
    batch.patch_namespaced_job("later", "default", {"spec": {"suspend": False}})
    wait_for(lambda: job_pods(core, "later"), what="pods after resume")


def test_ttl_after_finished_deletes_the_job_and_its_pods(fresh_sim):
    _sim, core, batch = fresh_sim()
    batch.create_namespaced_job("default", job("short-lived", run="1", ttlSecondsAfterFinished=2))
    wait_for(lambda: is_gone(lambda: batch.read_namespaced_job("short-lived", "default")), timeout=15,
             what="job deleted by TTL")
    wait_for(lambda: not job_pods(core, "short-lived"), what="pods collected")


def test_deleting_a_job_in_the_foreground_removes_pods_first(fresh_sim):
    _sim, core, batch = fresh_sim()
    batch.create_namespaced_job("default", job("fg", run="forever"))
    wait_for(lambda: job_pods(core, "fg"))
    batch.delete_namespaced_job("fg", "default", propagation_policy="Foreground")
    wait_for(lambda: not job_pods(core, "fg"), what="pods gone")


def test_follow_streams_new_lines_until_the_container_ends(fresh_sim):
    sim, core, _ = fresh_sim()
    core.create_namespaced_pod("default", gpu_pod("follow", 1, {A + "run-seconds": "60"}))
    wait_for(lambda: phase(core, "follow") == "Running")
    import time
    t0 = time.monotonic()
    resp = core.read_namespaced_pod_log("follow", "default", follow=True, _preload_content=False)
    text = resp.read().decode()  # ends when the container does (60 simulated s = 3 real s)
    assert time.monotonic() - t0 > 1.5
    steps = [line for line in text.splitlines() if " loss " in line]
    assert len(steps) >= 25 and text.rstrip().endswith("final.pt")


def test_previous_logs_after_a_restart(fresh_sim):
    _sim, core, _ = fresh_sim()
    pod = gpu_pod("again", 1, {A + "run-seconds": "2", A + "exit-code": "1", A + "log": "attempt"},
                  restartPolicy="OnFailure")
    core.create_namespaced_pod("default", pod)
    with pytest.raises(ApiException):
        wait_for(lambda: phase(core, "again") == "Running")
        core.read_namespaced_pod_log("again", "default", previous=True)  # no restart yet
    wait_for(lambda: (core.read_namespaced_pod("again", "default").status.container_statuses or [None])[0]
             and core.read_namespaced_pod("again", "default").status.container_statuses[0].restart_count >= 1)
    previous = core.read_namespaced_pod_log("again", "default", previous=True)
    assert "attempt" in previous and "exited with status 1" in previous
