"""Defaulting, as the API server's defaulters do before validation and storage: pods (restart
policy, DNS policy, pull policy, grace period, phase, QoS), jobs (completions, parallelism,
backoff limit, selector and template labels), services (cluster IP, protocols) and namespaces."""
from __future__ import annotations

import itertools
import threading
import uuid

_ips = itertools.count(10)
_ip_lock = threading.Lock()


def apply(rtype, obj: dict, old: dict | None) -> None:
    fn = DEFAULTERS.get(rtype.plural)
    if fn:
        fn(obj, old)


def pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        image = c.get("image", "")
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        c.setdefault("imagePullPolicy", "Always" if tag in ("", "latest") else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        resources = c.setdefault("resources", {})
        limits = resources.get("limits") or {}
        if limits:
            requests = resources.setdefault("requests", {})
            for name, value in limits.items():
                requests.setdefault(name, value)
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")


def _qos(spec: dict) -> str:
    containers = spec.get("containers") or []
    guaranteed = all(
        all(c.get("resources", {}).get("limits", {}).get(r) and
            c["resources"]["limits"][r] == c.get("resources", {}).get("requests", {}).get(r) for r in ("cpu", "memory"))
        for c in containers)
    if guaranteed and containers:
        return "Guaranteed"
    if any(c.get("resources", {}).get("requests") or c.get("resources", {}).get("limits") for c in containers):
        return "Burstable"
    return "BestEffort"


def _pod(obj, old):
    spec = obj.setdefault("spec", {})
    pod_spec(spec)
    if old is None:
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", _qos(spec))


def _job(obj, old):
    if old is None:
        obj["status"] = {}
    spec = obj.setdefault("spec", {})
    meta = obj.setdefault("metadata", {})
    spec.setdefault("parallelism", 1)
    if spec.get("completionMode") != "Indexed":
        spec.setdefault("completions", 1)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("suspend", False)
    template = spec.setdefault("template", {})
    pod_spec(template.setdefault("spec", {}))
    if old is None and not spec.get("selector"):
        uid = meta.setdefault("uid", str(uuid.uuid4()))
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": meta.get("name", ""),
                       "controller-uid": uid, "job-name": meta.get("name", "")})
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}


def _service(obj, old):
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if old is not None and old.get("spec", {}).get("clusterIP") and "clusterIP" not in spec:
        spec["clusterIP"] = old["spec"]["clusterIP"]
    if "clusterIP" not in spec:
        with _ip_lock:
            n = next(_ips)
        spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
    spec.setdefault("clusterIPs", [spec["clusterIP"]])
    for p in spec.get("ports") or []:
        p.setdefault("protocol", "TCP")
        p.setdefault("targetPort", p.get("port"))


def _namespace(obj, old):
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")
    obj.setdefault("metadata", {}).setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"].get("name", "")


def _secret(obj, old):
    """stringData is write-only: it is merged into data (base64) and never stored."""
    import base64
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
    obj.setdefault("type", "Opaque")


DEFAULTERS = {"pods": _pod, "jobs": _job, "services": _service, "namespaces": _namespace, "secrets": _secret}
