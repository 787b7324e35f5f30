"""The kustomize deployment under deploy/k8s: the base and the example overlay render with
`kubectl kustomize`, every object passes the official Kubernetes schemas (strict: no unknown
fields), and what the objects say holds together: pods run unprivileged with probes and limits,
the RBAC stays narrow, selectors and references find their objects, the NetworkPolicy admits
only the monitoring namespace to the metrics ports, and the Secret template cannot start the
portal unedited."""
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from kubesim.validation import schema_validator
from kubesim_fixtures import require_tool
from portal.config import check_config, load_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "k8s"
TREES = ("base", "overlays/example")


def render(tree: str) -> list[dict]:
    kubectl = require_tool("kubectl", "CRATER_REQUIRE_KUBECTL")
    done = subprocess.run([kubectl, "kustomize", str(DEPLOY / tree)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=TREES)
def objects(request):
    return render(request.param)


def by_kind(objects) -> dict[str, dict[str, dict]]:
    kinds: dict[str, dict[str, dict]] = {}
    for doc in objects:
        kinds.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    return kinds


def pod_specs(kinds):
    for kind in ("Deployment", "Job"):
        for name, doc in kinds.get(kind, {}).items():
            yield name, doc["spec"]["template"]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_object_passes_the_strict_schema(objects):
    failures = {}
    for doc in objects:
        errors = [e.message for e in schema_validator(doc["kind"], doc["apiVersion"]).iter_errors(doc)]
        if errors:
            failures[f"{doc['kind']}/{doc['metadata']['name']}"] = errors
    assert failures == {}
    assert {d["kind"] for d in objects} >= {"Namespace", "ConfigMap", "ServiceAccount", "Role", "RoleBinding",
                                            "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "Job",
                                            "Ingress", "NetworkPolicy", "PodDisruptionBudget"}


def test_pods_run_unprivileged_with_limits_and_probes(objects):
    kinds = by_kind(objects)
    for name, template in pod_specs(kinds):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 1000, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert not any("hostPath" in v for v in pod.get("volumes", [])), name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc.get("privileged"), name
            assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"], name
    for deployment in ("crater-web", "crater-live"):
        web = kinds["Deployment"][deployment]["spec"]
        container = web["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert web["strategy"]["rollingUpdate"]["maxUnavailable"] == 0  # upgrades: a new pod ready before an old one goes
    syncer = kinds["Deployment"]["crater-syncer"]["spec"]
    assert syncer["replicas"] == 2 and "livenessProbe" in syncer["template"]["spec"]["containers"][0]
    # A service account token only where the pod talks to the cluster API.
    assert {n: t["spec"].get("serviceAccountName") for n, t in pod_specs(kinds)} == {
        "crater-web": "crater-web", "crater-live": "crater-web", "crater-syncer": "crater-syncer", "crater-migrate": None}
    assert kinds["Job"]["crater-migrate"]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_rbac_is_narrow(objects):
    kinds = by_kind(objects)
    for role in kinds["Role"].values():
        assert role["metadata"]["namespace"] == "crater-jobs"
        assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in role["rules"])
    assert {n: r["rules"] for n, r in kinds["ClusterRole"].items()} == {
        # cluster-wide: the syncer reads nodes and pods, the web process patches nodes
        "crater-syncer-inventory": [{"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list", "watch"]}],
        "crater-web-nodes": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]}
    def allowed(role, group, resource, verb):
        return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
                   for r in kinds["Role"][role]["rules"])
    # ... and wide enough for what each process calls: the web's submissions, extensions and
    # terminals; the admitter's creates, suspends and resumes of jobs admitted from the queue.
    for role, group, resource, verb in (("crater-web", "batch", "jobs", "create"), ("crater-web", "batch", "jobs", "patch"),
                                        ("crater-web", "", "pods/exec", "create"), ("crater-web", "", "pods/exec", "get"),
                                        ("crater-syncer", "batch", "jobs", "create"), ("crater-syncer", "batch", "jobs", "patch"),
                                        ("crater-syncer", "", "secrets", "create"), ("crater-syncer", "", "services", "create"),
                                        ("crater-syncer", "networking.k8s.io", "ingresses", "create")):
        assert allowed(role, group, resource, verb), (role, resource, verb)
    for binding in [*kinds["RoleBinding"].values(), *kinds["ClusterRoleBinding"].values()]:
        role_kind = binding["roleRef"]["kind"]
        assert binding["roleRef"]["name"] in kinds[role_kind]
        for subject in binding["subjects"]:
            assert subject["name"] in kinds["ServiceAccount"]
            assert subject["namespace"] == kinds["ServiceAccount"][subject["name"]]["metadata"]["namespace"]


def test_selectors_and_references_find_their_objects(objects):
    kinds = by_kind(objects)
    namespaces = set(kinds["Namespace"])
    for doc in objects:
        namespace = doc["metadata"].get("namespace")
        assert namespace is None or namespace in namespaces, doc["metadata"]["name"]
    pods = {name: t["metadata"]["labels"] for name, t in pod_specs(kinds)}
    for deployment in kinds["Deployment"].values():
        assert selects(deployment["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    for kind in ("Service", "PodDisruptionBudget"):
        for name, doc in kinds[kind].items():
            selector = doc["spec"]["selector"].get("matchLabels", doc["spec"]["selector"])
            assert [p for p, labels in pods.items() if selects(selector, labels)], f"{kind}/{name} selects no pod"
    for name, template in pod_specs(kinds):
        for container in template["spec"]["containers"]:
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                action = container.get(probe, {}).get("httpGet") or container.get(probe, {}).get("tcpSocket")
                assert action is None or action["port"] in ports, (name, probe)
            for ref in container.get("envFrom", []):
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in kinds["ConfigMap"]
    for service in kinds["Service"].values():
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert any(target in {p["name"] for p in c.get("ports", [])} for n, t in pod_specs(kinds)
                       if selects(service["spec"]["selector"], t["metadata"]["labels"]) for c in t["spec"]["containers"])
    paths = {p["path"]: p["backend"]["service"] for p in kinds["Ingress"]["crater-web"]["spec"]["rules"][0]["http"]["paths"]}
    for backend in paths.values():
        assert backend["port"]["name"] in {p["name"] for p in kinds["Service"][backend["name"]]["spec"]["ports"]}
    # pages to crater-web, the long requests to crater-live's threads, as the app's own routes spell them
    classes = {name: {e["name"]: e.get("value") for c in t["spec"]["containers"] for e in c.get("env", [])}
               .get("CRATER_WEB_WORKER_CLASS") for name, t in pod_specs(kinds)}
    assert classes["crater-live"] == "gthread" and classes["crater-web"] in ("gthread", "sync")
    assert paths["/"]["name"] == "crater-web"
    live = [p for p, backend in paths.items() if backend["name"] == "crater-live"]
    for url in ("/jobs/12/terminal/ws", "/jobs/12/logs/follow", "/files/users/bob/data.bin", "/dav/users/bob/x"):
        assert any(re.fullmatch(p, url) or url.startswith(p + "/") for p in live), url
    assert not any(re.fullmatch(p, url) or url.startswith(p + "/") for p in live
                   for url in ("/jobs/12", "/jobs/12/logs", "/jobs/12/status", "/", "/nodes"))


def test_network_policy_admits_only_the_ingress_controller_and_monitoring(objects):
    kinds = by_kind(objects)
    policies = [p for p in kinds["NetworkPolicy"].values() if p["metadata"]["namespace"] == "crater"]
    assert any(p["spec"]["podSelector"] == {} and p["spec"].get("ingress") is None for p in policies)  # default deny

    def admitted(pod_labels: dict, port: str) -> set[str]:
        sources = set()
        for policy in policies:
            if not selects(policy["spec"]["podSelector"].get("matchLabels", {}), pod_labels):
                continue
            for rule in policy["spec"].get("ingress", []):
                if any(p["port"] == port for p in rule.get("ports", [])):
                    for peer in rule["from"]:
                        assert set(peer) == {"namespaceSelector"}, "only whole namespaces, named"
                        sources.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
        return sources

    pods = {name: t["metadata"]["labels"] for name, t in pod_specs(kinds)}
    assert admitted(pods["crater-syncer"], "metrics") == {"monitoring"}
    assert admitted(pods["crater-web"], "http") == {"ingress-nginx", "monitoring"}
    assert admitted(pods["crater-live"], "http") == {"ingress-nginx", "monitoring"}
    assert admitted(pods["crater-migrate"], "http") == set()


def test_the_configmap_names_only_settings_the_portal_reads(objects):
    readers = (ROOT / "portal" / "config.py", ROOT / "deploy" / "gunicorn.conf.py")
    known = {name for path in readers for name in re.findall(r'"(CRATER_[A-Z0-9_]+)"', path.read_text())}
    data = by_kind(objects)["ConfigMap"]["crater-portal"]["data"]
    assert set(data) - known == set()
    cfg = load_config({**data, "CRATER_SECRET_KEY": "k" * 40, "CRATER_OIDC_CLIENT_SECRET": "s",
                       "CRATER_DATABASE_URL": "mysql+pymysql://u:p@db/crater"})
    assert check_config(cfg) == []  # a production configuration as it stands


def test_the_web_pods_see_the_shared_storage_where_the_portal_looks_for_it(objects):
    """The files page, transfers and WebDAV run in crater-web and crater-live: both mount a claim
    at CRATER_STORAGE_ROOT; the syncer and the migration, which never touch it, do not."""
    kinds = by_kind(objects)
    root = kinds["ConfigMap"]["crater-portal"]["data"]["CRATER_STORAGE_ROOT"]
    for name, template in pod_specs(kinds):
        pod = template["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        if name in ("crater-web", "crater-live"):
            assert claims.get(mounts.get(root)) == "crater-storage", name
            assert pod["securityContext"]["runAsGroup"] == 100, name  # the group the notebook images' jobs run in
        else:
            assert root not in mounts and not claims, name


def test_the_overlay_sets_the_image_and_the_secret_template_cannot_start_unedited():
    kinds = by_kind(render("overlays/example"))
    images = {c["image"] for _, t in pod_specs(kinds) for c in t["spec"]["containers"]}
    assert images == {"registry.example.edu/crater/crater-portal:2026.12.0"}
    assert kinds["Deployment"]["crater-web"]["spec"]["replicas"] == 3
    secret = kinds["Secret"]["crater-portal"]["stringData"]
    for _, template in pod_specs(kinds):
        assert {"secretRef": {"name": "crater-portal"}} in template["spec"]["containers"][0]["envFrom"]
    problems = "; ".join(check_config(load_config({**kinds["ConfigMap"]["crater-portal"]["data"], **secret})))
    for name in secret:
        assert f"{name} still holds" in problems
