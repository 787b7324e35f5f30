"""Server-side printing (meta.k8s.io/v1 Table), which kubectl asks for on `get`: the columns a
real API server prints for pods, nodes, jobs, namespaces, services and events; Name and Age for
the rest."""
from __future__ import annotations

import time
from datetime import datetime, UTC


def _epoch(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _age(ts: str | None, now: float | None = None) -> str:
    if not ts:
        return "<unknown>"
    seconds = int((now or time.time()) - _epoch(ts))
    seconds = max(0, seconds)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _pod_status(pod: dict) -> str:
    meta, status = pod["metadata"], pod.get("status", {})
    if meta.get("deletionTimestamp"):
        return "Terminating"
    reason = status.get("reason") or status.get("phase") or "Pending"
    for cs in status.get("containerStatuses", []):
        state = cs.get("state", {})
        if "waiting" in state and state["waiting"].get("reason"):
            return state["waiting"]["reason"]
        if "terminated" in state:
            term = state["terminated"]
            reason = term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}")
    if status.get("phase") == "Running" and reason == "Completed":
        return "Running"
    return reason


def _pod_row(pod: dict) -> list:
    statuses = pod.get("status", {}).get("containerStatuses", [])
    total = len(pod.get("spec", {}).get("containers", []))
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(s.get("restartCount", 0) for s in statuses)
    return [pod["metadata"]["name"], f"{ready}/{total}", _pod_status(pod), restarts,
            _age(pod["metadata"].get("creationTimestamp")), pod.get("status", {}).get("podIP") or "<none>",
            pod.get("spec", {}).get("nodeName") or "<none>"]


def _node_row(node: dict) -> list:
    ready = next((c for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})
    status = "Ready" if ready.get("status") == "True" else "NotReady"
    if node.get("spec", {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    return [node["metadata"]["name"], status, "<none>", _age(node["metadata"].get("creationTimestamp")),
            node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")]


def _job_row(job: dict) -> list:
    status = job.get("status", {})
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    state = ("Complete" if conditions.get("Complete") == "True" else "Failed" if conditions.get("Failed") == "True"
             else "Suspended" if job.get("spec", {}).get("suspend") else "Running")
    completions = job.get("spec", {}).get("completions", 1)
    duration = ""
    if status.get("startTime"):
        end = _epoch(status["completionTime"]) if status.get("completionTime") else None
        duration = _age(status["startTime"], end)
    return [job["metadata"]["name"], state, f"{status.get('succeeded', 0)}/{completions}", duration,
            _age(job["metadata"].get("creationTimestamp"))]


def _event_row(ev: dict) -> list:
    obj = ev.get("involvedObject", {})
    return [_age(ev.get("lastTimestamp") or ev["metadata"].get("creationTimestamp")), ev.get("type", ""),
            ev.get("reason", ""), f"{obj.get('kind', '').lower()}/{obj.get('name', '')}", ev.get("message", "")]


def _service_row(svc: dict) -> list:
    spec = svc.get("spec", {})
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports", [])) or "<none>"
    return [svc["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP", "None"), "<none>", ports,
            _age(svc["metadata"].get("creationTimestamp"))]


COLUMNS = {
    "pods": (["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"], [0, 0, 0, 0, 0, 1, 1], _pod_row),
    "nodes": (["Name", "Status", "Roles", "Age", "Version"], [0] * 5, _node_row),
    "jobs": (["Name", "Status", "Completions", "Duration", "Age"], [0] * 5, _job_row),
    "events": (["Last Seen", "Type", "Reason", "Object", "Message"], [0] * 5, _event_row),
    "services": (["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"], [0] * 6, _service_row),
    "namespaces": (["Name", "Status", "Age"], [0] * 3,
                   lambda o: [o["metadata"]["name"], o.get("status", {}).get("phase", "Active"),
                              _age(o["metadata"].get("creationTimestamp"))]),
}


def _default_row(obj: dict) -> list:
    return [obj["metadata"]["name"], _age(obj["metadata"].get("creationTimestamp"))]


def table(rtype, items: list[dict], list_meta: dict) -> dict:
    names, priorities, row = COLUMNS.get(rtype.plural, (["Name", "Age"], [0, 0], _default_row))
    columns = [{"name": n, "type": "integer" if n == "Restarts" else "string",
                **({"format": "name"} if n == "Name" else {}), "description": n, "priority": p}
               for n, p in zip(names, priorities)]
    rows = [{"cells": row(obj), "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                             "metadata": obj["metadata"]}} for obj in items]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
            "columnDefinitions": columns, "rows": rows}
