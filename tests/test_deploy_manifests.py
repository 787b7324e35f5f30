"""The deployment manifests under deploy/k8s pass the official Kubernetes schemas (strict: no
unknown fields), and what they grant stays narrow: no privileged containers, the web and syncer
service accounts may only touch the jobs namespace (plus reading nodes and pods)."""
from pathlib import Path

import pytest
import yaml

from kubesim.validation import schema_validator

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
DOCS = [(path.name, n, doc) for path in sorted(DEPLOY.glob("*.yaml"))
        for n, doc in enumerate(yaml.safe_load_all(path.read_text())) if doc]


@pytest.mark.parametrize("name, n, doc", DOCS, ids=[f"{name}#{n}" for name, n, _ in DOCS])
def test_manifest_passes_the_strict_schema(name, n, doc):
    errors = [e.message for e in schema_validator(doc["kind"], doc["apiVersion"]).iter_errors(doc)]
    assert errors == []


def test_workloads_run_unprivileged_and_rbac_is_narrow():
    kinds = {}
    for _, _, doc in DOCS:
        kinds.setdefault(doc["kind"], []).append(doc)
    for deployment in kinds["Deployment"]:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert not any(k in pod for k in ("hostNetwork", "hostPID", "hostIPC"))
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {d["spec"]["template"]["spec"].get("serviceAccountName") for d in kinds["Deployment"]} == {"crater-web", "crater-syncer"}
    for role in kinds["Role"]:
        assert role["metadata"]["namespace"] == "crater-jobs"
        assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in role["rules"])
    cluster_roles = {r["metadata"]["name"]: r["rules"] for r in kinds["ClusterRole"]}
    assert cluster_roles == {  # cluster-wide: the syncer reads nodes and pods, the web process patches nodes
        "crater-syncer-inventory": [{"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list", "watch"]}],
        "crater-web-nodes": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]}
