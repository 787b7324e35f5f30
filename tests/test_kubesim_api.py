"""kubesim through the official kubernetes client: every verb, selectors, paging, patches,
resourceVersion conflicts, Status errors, validation errors and garbage collection."""
import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException


def pod(name, labels=None, **spec):
    """A pod no scheduler picks up (no such scheduler), so API tests see exactly what they wrote."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"schedulerName": "api-test", "containers": [{"name": "main", "image": "busybox:1.36"}], **spec}}


def reason(exc: ApiException) -> str:
    return json.loads(exc.body)["reason"]


def test_discovery_and_version(api_client):
    assert client.VersionApi(api_client).get_code().git_version.startswith("v1.32")
    groups = {g.name for g in client.ApisApi(api_client).get_api_versions().groups}
    assert {"batch", "networking.k8s.io", "coordination.k8s.io"} <= groups
    resources = {r.name for r in client.CoreV1Api(api_client).get_api_resources().resources}
    assert {"pods", "pods/log", "pods/status", "nodes", "services", "secrets", "configmaps", "events",
            "persistentvolumeclaims", "namespaces"} <= resources


def test_nodes_of_the_demo_cluster(core):
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert len(nodes) == 6
    a100 = nodes["a100-0"]
    assert a100.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert a100.status.allocatable["nvidia.com/gpu"] == "8"
    assert "nvidia.com/gpu" not in nodes["cpu-0"].status.capacity


def test_create_get_list_delete_pod(core, ns):
    created = core.create_namespaced_pod(ns, pod("p1", {"app": "web"}))
    assert created.metadata.uid and int(created.metadata.resource_version) > 0
    assert created.spec.restart_policy == "Always" and created.status.phase == "Pending"
    assert core.read_namespaced_pod("p1", ns).metadata.uid == created.metadata.uid
    assert [p.metadata.name for p in core.list_namespaced_pod(ns).items] == ["p1"]
    deleted = core.delete_namespaced_pod("p1", ns)
    assert deleted.metadata.name == "p1"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("p1", ns)
    assert err.value.status == 404 and reason(err.value) == "NotFound"


def test_status_errors(core, ns):
    core.create_namespaced_pod(ns, pod("dup"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(ns, pod("dup"))
    assert err.value.status == 409 and reason(err.value) == "AlreadyExists"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("no-such-namespace", pod("x"))
    assert err.value.status == 404 and 'namespaces "no-such-namespace" not found' in json.loads(err.value.body)["message"]
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod(ns, label_selector="a in (b")
    assert err.value.status == 400 and reason(err.value) == "BadRequest"


def test_update_with_stale_resource_version_conflicts(core, ns):
    first = core.create_namespaced_pod(ns, pod("p", {"v": "1"}))
    first.metadata.labels = {"v": "2"}
    core.replace_namespaced_pod("p", ns, first)
    first.metadata.labels = {"v": "3"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_pod("p", ns, first)  # still carries the old resourceVersion
    assert err.value.status == 409 and reason(err.value) == "Conflict"
    assert core.read_namespaced_pod("p", ns).metadata.labels == {"v": "2"}


@pytest.mark.parametrize("selector, expected", [
    ("app=web", ["a", "b"]), ("app==web", ["a", "b"]), ("app!=web", ["c", "d"]), ("tier in (db,cache)", ["c"]),
    ("tier notin (db)", ["a", "b", "d"]), ("tier", ["b", "c"]), ("!tier", ["a", "d"]), ("app=web,tier=front", ["b"]),
])
def test_label_selectors(core, ns, selector, expected):
    for name, labels in [("a", {"app": "web"}), ("b", {"app": "web", "tier": "front"}), ("c", {"app": "db", "tier": "db"}),
                         ("d", {})]:
        core.create_namespaced_pod(ns, pod(name, labels))
    names = [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=selector).items]
    assert names == expected


def test_field_selectors(core, ns):
    core.create_namespaced_pod(ns, pod("on-node", nodeName="cpu-0"))
    core.create_namespaced_pod(ns, pod("elsewhere"))
    assert [p.metadata.name for p in core.list_namespaced_pod(ns, field_selector="spec.nodeName=cpu-0").items] == ["on-node"]
    assert [p.metadata.name for p in core.list_namespaced_pod(ns, field_selector="metadata.name!=on-node").items] == ["elsewhere"]
    assert len(core.list_pod_for_all_namespaces(field_selector=f"metadata.namespace={ns},status.phase=Pending").items) == 2


def test_limit_and_continue(core, ns):
    for n in range(7):
        core.create_namespaced_pod(ns, pod(f"p{n}"))
    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_pod(ns, limit=3, _continue=token)
        pages += 1
        seen += [p.metadata.name for p in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 7 - len(seen)
    assert seen == [f"p{n}" for n in range(7)] and pages == 3


def test_patch_types(core, ns):
    core.create_namespaced_pod(ns, pod("p", {"a": "1"}))
    # strategic merge (a dict body): maps merge, containers merge by name
    patched = core.patch_namespaced_pod("p", ns, {"metadata": {"labels": {"b": "2"}},
                                                  "spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}})
    assert patched.metadata.labels == {"a": "1", "b": "2"} and patched.spec.containers[0].image == "busybox:1.37"
    # JSON patch (a list body)
    patched = core.patch_namespaced_pod("p", ns, [{"op": "remove", "path": "/metadata/labels/a"},
                                                  {"op": "add", "path": "/metadata/labels/c", "value": "3"}])
    assert patched.metadata.labels == {"b": "2", "c": "3"}
    # merge patch: null deletes
    patched = core.patch_namespaced_pod("p", ns, {"metadata": {"labels": {"b": None}}},
                                        _content_type="application/merge-patch+json")
    assert patched.metadata.labels == {"c": "3"}


def test_server_side_apply_creates_and_merges(core, ns):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}}
    core.patch_namespaced_config_map("cfg", ns, body, field_manager="test", _content_type="application/apply-patch+yaml")
    body["data"] = {"b": "2"}
    core.patch_namespaced_config_map("cfg", ns, body, field_manager="test", _content_type="application/apply-patch+yaml")
    assert core.read_namespaced_config_map("cfg", ns).data == {"a": "1", "b": "2"}


def test_validation_errors_list_every_cause(core, ns):
    bad = pod("Bad_Name")
    bad["spec"]["containers"] = [{"name": "c", "image": "x",
                                  "resources": {"requests": {"cpu": "two"}, "limits": {"nvidia.com/gpu": "1"}}},
                                 {"name": "c", "image": ""}]
    bad["metadata"]["labels"] = {"ok": "not valid!"}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(ns, bad)
    status = json.loads(err.value.body)
    assert err.value.status == 422 and status["reason"] == "Invalid"
    fields = {c["field"] for c in status["details"]["causes"]}
    assert {"metadata.name", "metadata.labels", "spec.containers[0].resources.requests[cpu]",
            "spec.containers[1].name", "spec.containers[1].image"} <= fields
    assert core.list_namespaced_pod(ns).items == []


def test_unknown_fields_are_invalid(sim, ns):
    """The official client refuses unknown fields itself, so this one goes over plain HTTP."""
    import requests
    body = pod("p")
    body["spec"]["containers"][0]["bogusField"] = 1
    response = requests.post(f"{sim.url}/api/v1/namespaces/{ns}/pods", json=body, timeout=5,
                             headers={"Authorization": "Bearer kubesim-token"})
    assert response.status_code == 422
    causes = response.json()["details"]["causes"]
    assert {"field": "spec.containers[0].bogusField", "reason": "FieldValueInvalid",
            "message": 'unknown field "spec.containers[0].bogusField"'} in causes


def test_pod_spec_is_immutable_but_image_is_not(core, ns):
    core.create_namespaced_pod(ns, pod("p"))
    core.patch_namespaced_pod("p", ns, {"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}})
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod("p", ns, {"spec": {"restartPolicy": "Never"}})
    assert err.value.status == 422 and "pod updates may not change fields" in json.loads(err.value.body)["message"]


def test_status_subresource_changes_only_status(core, ns):
    core.create_namespaced_pod(ns, pod("p", {"a": "1"}))
    core.patch_namespaced_pod_status("p", ns, {"status": {"phase": "Running"}, "metadata": {"labels": {"a": "2"}}})
    current = core.read_namespaced_pod("p", ns)
    assert current.status.phase == "Running" and current.metadata.labels == {"a": "1"}
    core.patch_namespaced_pod("p", ns, {"status": {"phase": "Failed"}})  # ignored on the main resource
    assert core.read_namespaced_pod("p", ns).status.phase == "Running"


def test_job_defaults_and_immutable_template(batch, ns):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}
    created = batch.create_namespaced_job(ns, job)
    assert (created.spec.completions, created.spec.parallelism, created.spec.backoff_limit) == (1, 1, 6)
    uid = created.metadata.uid
    assert created.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    assert created.spec.template.metadata.labels["job-name"] == "j"
    with pytest.raises(ApiException) as err:
        batch.patch_namespaced_job("j", ns, {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "other"}]}}}})
    assert err.value.status == 422 and "field is immutable" in json.loads(err.value.body)["message"]
    bad = json.loads(json.dumps(job))
    bad["metadata"]["name"] = "always"
    bad["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(ApiException) as err:
        batch.create_namespaced_job(ns, bad)
    assert err.value.status == 422


def test_garbage_collection_follows_owner_references(core, batch, ns):
    job = batch.create_namespaced_job(ns, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "owner"},
                                           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                                          "containers": [{"name": "c", "image": "x"}]}}}})
    ref = {"apiVersion": "batch/v1", "kind": "Job", "name": "owner", "uid": job.metadata.uid, "controller": True}
    for name in ("svc-owned", "kept"):
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "ownerReferences": [ref]}})
    core.patch_namespaced_config_map("kept", ns, {"metadata": {"ownerReferences": None}},
                                     _content_type="application/merge-patch+json")
    batch.delete_namespaced_job("owner", ns, propagation_policy="Background")
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["kept"]


def test_orphan_deletion_keeps_dependents_without_their_owner(core, batch, ns):
    job = batch.create_namespaced_job(ns, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "owner"},
                                           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                                          "containers": [{"name": "c", "image": "x"}]}}}})
    ref = {"apiVersion": "batch/v1", "kind": "Job", "name": "owner", "uid": job.metadata.uid}
    core.create_namespaced_secret(ns, {"metadata": {"name": "s", "ownerReferences": [ref]}, "data": {"k": "dg=="}})
    batch.delete_namespaced_job("owner", ns, propagation_policy="Orphan")
    secret = core.read_namespaced_secret("s", ns)
    assert secret.metadata.owner_references is None


def test_deleting_a_namespace_deletes_its_contents(core, ns):
    core.create_namespaced_pod(ns, pod("p"))
    core.delete_namespace(ns)
    with pytest.raises(ApiException):
        core.read_namespace(ns)
    assert core.list_pod_for_all_namespaces(field_selector=f"metadata.namespace={ns}").items == []


def test_bearer_token_is_required(sim):
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(sim.url + "/api/v1/pods")
    assert err.value.code == 401


RESOURCES = [
    # (api class, create method suffix, body, patch)
    ("CoreV1Api", "namespaced_service", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
                                         "spec": {"clusterIP": "None", "selector": {"app": "x"},
                                                  "ports": [{"name": "rdzv", "port": 29500}]}}, {"metadata": {"labels": {"p": "1"}}}),
    ("CoreV1Api", "namespaced_secret", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
                                        "type": "Opaque", "data": {"token": "c2VjcmV0"}}, {"metadata": {"labels": {"p": "1"}}}),
    ("CoreV1Api", "namespaced_config_map", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
                                            "data": {"a": "1"}}, {"data": {"b": "2"}}),
    ("CoreV1Api", "namespaced_persistent_volume_claim", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "pvc"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}}},
        {"metadata": {"labels": {"p": "1"}}}),
    ("CoreV1Api", "namespaced_event", {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "ev"},
                                       "involvedObject": {"kind": "Pod", "name": "x", "namespace": "default"},
                                       "reason": "Test", "message": "hello", "type": "Normal"}, {"message": "bye"}),
    ("NetworkingV1Api", "namespaced_ingress", {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "ing"},
        "spec": {"rules": [{"http": {"paths": [{"path": "/jupyter/crater-1/", "pathType": "Prefix",
                                                 "backend": {"service": {"name": "svc", "port": {"number": 8888}}}}]}}]}},
        {"metadata": {"annotations": {"p": "1"}}}),
    ("CoordinationV1Api", "namespaced_lease", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "crater-syncer"},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15}}, {"spec": {"holderIdentity": "replica-b"}}),
]


@pytest.mark.parametrize("api_name, suffix, body, change", RESOURCES, ids=[r[1] for r in RESOURCES])
def test_every_verb_on_every_resource(api_client, ns, api_name, suffix, body, change):
    api = getattr(client, api_name)(api_client)
    name = body["metadata"]["name"]
    created = getattr(api, f"create_{suffix}")(ns, body)
    assert created.metadata.name == name and created.metadata.uid
    assert getattr(api, f"read_{suffix}")(name, ns).metadata.uid == created.metadata.uid
    assert [o.metadata.name for o in getattr(api, f"list_{suffix}")(ns).items] == [name]
    patched = getattr(api, f"patch_{suffix}")(name, ns, change)
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    current = getattr(api, f"read_{suffix}")(name, ns)
    replaced = getattr(api, f"replace_{suffix}")(name, ns, current)
    assert replaced.metadata.resource_version == current.metadata.resource_version  # a no-op write
    getattr(api, f"delete_{suffix}")(name, ns)
    with pytest.raises(ApiException) as err:
        getattr(api, f"read_{suffix}")(name, ns)
    assert err.value.status == 404


def test_lease_takeover_conflicts_like_a_real_server(api_client, ns):
    leases = client.CoordinationV1Api(api_client)
    lease = leases.create_namespaced_lease(ns, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                                "metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}})
    lease.spec.holder_identity = "b"
    leases.replace_namespaced_lease("leader", ns, lease)
    lease.spec.holder_identity = "c"  # the same stale copy: the other replica already took over
    with pytest.raises(ApiException) as err:
        leases.replace_namespaced_lease("leader", ns, lease)
    assert err.value.status == 409
    assert leases.read_namespaced_lease("leader", ns).spec.holder_identity == "b"


def test_deletecollection_with_a_selector(core, ns):
    for name, labels in [("a", {"team": "x"}), ("b", {"team": "x"}), ("c", {"team": "y"})]:
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})
    core.delete_collection_namespaced_config_map(ns, label_selector="team=x")
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["c"]


def test_unknown_resources_and_methods_get_status_errors(sim):
    import requests
    headers = {"Authorization": "Bearer kubesim-token"}
    response = requests.get(f"{sim.url}/apis/apps/v1/deployments", headers=headers, timeout=5)
    assert response.status_code == 404 and response.json()["kind"] == "Status"
    response = requests.put(f"{sim.url}/api/v1/namespaces/default/pods", json={}, headers=headers, timeout=5)
    assert response.status_code == 405 and response.json()["reason"] == "MethodNotAllowed"
    response = requests.post(f"{sim.url}/api/v1/namespaces/default/pods", data="{not json", headers=headers, timeout=5)
    assert response.status_code == 400 and response.json()["reason"] == "BadRequest"
