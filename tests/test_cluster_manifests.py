"""The portal's cluster code (portal/cluster) against kubesim through the real client: every
manifest passes kubesim's strict validation, objects are owned by the Job, creation is
idempotent, pods never get host access or privileges, and the status mapping explains waits and
failures."""
import base64
import json

import pytest

from kubesim_fixtures import is_gone, wait_for
from portal.cluster.client import Cluster, ClusterError
from portal.cluster.manifests import ClusterSettings, JobRequest, Mount, build, name_of
from portal.cluster.status import from_cluster

A = "kubesim.crater.io/"
SETTINGS = ClusterSettings(namespace="crater-jobs", shared_claim="crater-shared", ingress_host="crater.example.edu")


def request(job_id, job_type="batch", **kw):
    base = dict(job_id=job_id, job_type=job_type, username="alice", account="vision-lab", display_name="训练 ResNet",
                image="pytorch/pytorch:2.4", command="python train.py --epochs 3", gpus=1,
                gpu_model="NVIDIA-A100-SXM4-80GB", cpu="4", memory="16Gi", shm="8Gi", working_dir="/workspace",
                time_limit_seconds=3600, mounts=(Mount("users/alice", "/home/alice"), Mount("accounts/vision-lab", "/shared", True)),
                env=(("EPOCHS", "3"),))
    base.update(kw)
    return JobRequest(**base)


@pytest.fixture
def cluster(fresh_sim, tmp_path):
    sim, core, _ = fresh_sim()
    path = sim.write_kubeconfig(tmp_path / "portal-kubeconfig")
    c = Cluster.connect(str(path), SETTINGS)
    yield sim, c
    c.api.close()


def test_every_job_type_is_accepted_by_strict_validation(cluster):
    _sim, c = cluster
    for job_id, job_type in ((1, "batch"), (2, "jupyter"), (3, "distributed")):
        c.create_job(request(job_id, job_type, workers=2), token="t0ken")
    kinds = {
        "Job": [j.metadata.name for j in c.batch.list_namespaced_job("crater-jobs").items],
        "Service": [s.metadata.name for s in c.core.list_namespaced_service("crater-jobs").items],
        "Ingress": [i.metadata.name for i in c.networking.list_namespaced_ingress("crater-jobs").items],
        "Secret": [s.metadata.name for s in c.core.list_namespaced_secret("crater-jobs").items],
    }
    assert kinds == {"Job": ["crater-1", "crater-2", "crater-3"], "Service": ["crater-2", "crater-3"],
                     "Ingress": ["crater-2"], "Secret": ["crater-2"]}


def test_labels_annotations_and_owner_references(cluster):
    _sim, c = cluster
    uid = c.create_job(request(7, "jupyter"), token="secret-token")
    job = c.batch.read_namespaced_job("crater-7", "crater-jobs")
    assert job.metadata.labels == {"app.kubernetes.io/managed-by": "crater-portal", "crater.io/job-id": "7",
                                   "crater.io/user": "alice", "crater.io/account": "vision-lab", "crater.io/type": "jupyter",
                                   "crater.io/class": "guaranteed"}
    assert job.metadata.annotations["crater.io/display-name"] == "训练 ResNet"
    for obj in (c.core.read_namespaced_secret("crater-7", "crater-jobs"), c.core.read_namespaced_service("crater-7", "crater-jobs"),
                c.networking.read_namespaced_ingress("crater-7", "crater-jobs")):
        assert [(r.kind, r.uid, r.controller) for r in obj.metadata.owner_references] == [("Job", uid, True)]
    secret = c.core.read_namespaced_secret("crater-7", "crater-jobs")
    assert base64.b64decode(secret.data["token"]).decode() == "secret-token"
    manifest = json.dumps(build(request(7, "jupyter"), SETTINGS, "secret-token")["Job"])
    assert "secret-token" not in manifest  # the token reaches the pod only through the Secret
    path = c.networking.read_namespaced_ingress("crater-7", "crater-jobs").spec.rules[0].http.paths[0].path
    assert path == "/jupyter/crater-7/"
    assert "--ServerApp.base_url=/jupyter/crater-7/" in job.spec.template.spec.containers[0].command


def test_creating_twice_is_safe(cluster):
    _sim, c = cluster
    first = c.create_job(request(9, "jupyter"), token="t")
    assert c.create_job(request(9, "jupyter"), token="t") == first
    assert len(c.core.list_namespaced_service("crater-jobs").items) == 1


def test_pods_never_get_host_access_or_privileges(cluster):
    _sim, c = cluster
    c.create_job(request(11, "distributed", workers=2))
    spec = c.api.sanitize_for_serialization(c.batch.read_namespaced_job("crater-11", "crater-jobs").spec.template.spec)
    assert spec["automountServiceAccountToken"] is False
    assert not any(k in spec for k in ("hostNetwork", "hostPID", "hostIPC", "serviceAccountName"))
    assert all("hostPath" not in v for v in spec.get("volumes", []))
    container = spec["containers"][0]
    assert container["securityContext"] == {"privileged": False, "allowPrivilegeEscalation": False}
    assert all("hostPort" not in p for p in container.get("ports", []))
    sources = {v["name"]: sorted(k for k in v if k != "name") for v in spec["volumes"]}
    assert sources == {"shared": ["persistentVolumeClaim"], "dshm": ["emptyDir"]}


def test_distributed_job_wires_torchrun(cluster):
    _sim, c = cluster
    c.create_job(request(12, "distributed", workers=3, gpus=2, annotations=((A + "run-seconds", "forever"),)))
    pods = wait_for(lambda: (lambda ps: ps if len(ps) == 3 else None)(c.job_objects(12)[1]))
    env = {e["name"]: e for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"] == "crater-12-0.crater-12.crater-jobs.svc"
    assert env["WORLD_SIZE"]["value"] == "3" and env["NPROC_PER_NODE"]["value"] == "2"
    assert "job-completion-index" in env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert sorted(p["spec"]["hostname"] for p in pods) == ["crater-12-0", "crater-12-1", "crater-12-2"]
    assert all(p["spec"]["subdomain"] == "crater-12" for p in pods)
    service = c.core.read_namespaced_service("crater-12", "crater-jobs")
    assert service.spec.cluster_ip == "None"
    status = wait_for(lambda: (lambda s: s if s.state == "Running" else None)(from_cluster(*c.job_objects(12))))
    assert len(status.pods) == 3 and all(p.node.startswith("a100-") for p in status.pods)


@pytest.mark.parametrize("annotations, state, reason", [
    ({A + "run-seconds": "2"}, "Succeeded", "Completed"),
    ({A + "run-seconds": "2", A + "exit-code": "3"}, "Failed", "ExitCode"),
    ({A + "run-seconds": "2", A + "oom": "true"}, "Failed", "OOMKilled"),
])
def test_status_explains_how_a_job_ended(cluster, annotations, state, reason):
    _sim, c = cluster
    c.create_job(request(20, annotations=tuple(annotations.items())))
    status = wait_for(lambda: (lambda s: s if s.state in ("Succeeded", "Failed") else None)(from_cluster(*c.job_objects(20))),
                      timeout=15)
    assert (status.state, status.reason) == (state, reason)
    if reason == "ExitCode":
        assert status.exit_code == 3 and "exited with code 3" in status.message


def test_status_explains_waiting_and_the_time_limit(cluster):
    _sim, c = cluster
    c.create_job(request(30, gpus=16))
    waiting = wait_for(lambda: (lambda s: s if s.reason == "Unschedulable" else None)(from_cluster(*c.job_objects(30))))
    assert waiting.state == "Pending" and "Insufficient nvidia.com/gpu" in waiting.message
    c.create_job(request(31, annotations=((A + "image-pull", "fail"),)))
    pulling = wait_for(lambda: (lambda s: s if s.reason == "ImagePullBackOff" else None)(from_cluster(*c.job_objects(31))))
    assert pulling.state == "Pending"
    c.create_job(request(32, time_limit_seconds=3, annotations=((A + "run-seconds", "forever"),)))
    ended = wait_for(lambda: (lambda s: s if s.state == "Failed" else None)(from_cluster(*c.job_objects(32))), timeout=15)
    assert ended.reason == "DeadlineExceeded" and "time limit" in ended.message


def test_delete_removes_everything_and_a_missing_job_is_lost(cluster):
    _sim, c = cluster
    c.create_job(request(40, "jupyter"), token="t")
    c.delete_job(40)
    c.delete_job(40)  # again: already gone is fine
    wait_for(lambda: is_gone(lambda: c.core.read_namespaced_service("crater-40", "crater-jobs")))
    assert is_gone(lambda: c.core.read_namespaced_secret("crater-40", "crater-jobs"))
    assert from_cluster(*c.job_objects(40)).state == "Lost"


def test_api_failures_become_cluster_errors(cluster):
    sim, c = cluster
    sim.faults.set(error_code=503)
    with pytest.raises(ClusterError) as err:
        c.create_job(request(50))
    assert err.value.retryable and err.value.status == 503
    sim.faults.clear()
    bad = request(51, image="")
    with pytest.raises(ClusterError) as err:
        c.create_job(bad)
    assert err.value.status == 422 and not err.value.retryable and "image" in err.value.message
    assert name_of(51) not in [j.metadata.name for j in c.batch.list_namespaced_job("crater-jobs").items]
