"""The scheduler: binds pending pods to nodes in creation order. Filters as kube-scheduler's
default profile does (unschedulable nodes, taints and tolerations, NotReady nodes, nodeSelector and
required node affinity, and every requested resource against allocatable minus what bound pods
request); scores by least allocated. A pod that fits nowhere stays Pending with PodScheduled=False,
reason Unschedulable and the scheduler's message, plus a FailedScheduling event; it is retried
whenever capacity or nodes change."""
from __future__ import annotations

from collections import Counter, defaultdict

from . import errors, quantity
from .resources import core
from .selectors import Requirement
from .store import now_iso

TERMINAL = ("Succeeded", "Failed")


def pod_requests(pod: dict) -> dict[str, int]:
    """Milli-units per resource: the larger of the containers' sum and any init container."""
    spec = pod.get("spec", {})
    total: dict[str, int] = defaultdict(int)
    for c in spec.get("containers") or []:
        for name, value in (c.get("resources", {}).get("requests") or {}).items():
            total[name] += quantity.milli(value)
    for c in spec.get("initContainers") or []:
        for name, value in (c.get("resources", {}).get("requests") or {}).items():
            total[name] = max(total[name], quantity.milli(value))
    total["pods"] = 1000
    return dict(total)


def _tolerates(tolerations: list, taint: dict) -> bool:
    for t in tolerations or []:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t["key"] == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _node_ready(node: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))


def _affinity_matches(pod: dict, labels: dict) -> bool:
    spec = pod.get("spec", {})
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for term in terms:  # terms are ORed, expressions ANDed
        ok = True
        for expr in term.get("matchExpressions") or []:
            op = expr.get("operator")
            if op in ops:
                ok = Requirement(expr["key"], ops[op], tuple(expr.get("values") or ())).matches(labels)
            elif op in ("Gt", "Lt"):
                try:
                    have, want = int(labels.get(expr["key"], "")), int((expr.get("values") or ["0"])[0])
                    ok = have > want if op == "Gt" else have < want
                except ValueError:
                    ok = False
            if not ok:
                break
        if ok:
            return True
    return False


class Scheduler:
    def __init__(self, store, recorder, clock):
        self.store, self.recorder, self.clock = store, recorder, clock
        self._last_message: dict[str, str] = {}

    def schedule(self) -> int:
        """One pass over all pending pods; returns how many were bound."""
        nodes = self.store.all(core("nodes"))
        pods = self.store.all(core("pods"))
        used: dict[str, Counter] = {n["metadata"]["name"]: Counter() for n in nodes}
        pending = []
        for pod in pods:
            node_name = pod.get("spec", {}).get("nodeName")
            if node_name:
                if pod.get("status", {}).get("phase") not in TERMINAL and node_name in used:
                    used[node_name].update(pod_requests(pod))
            elif not pod["metadata"].get("deletionTimestamp") and pod.get("spec", {}).get("schedulerName",
                                                                                          "default-scheduler") == "default-scheduler":
                pending.append(pod)
        pending.sort(key=lambda p: (p["metadata"].get("creationTimestamp", ""), int(p["metadata"]["resourceVersion"])))
        allocatable = {n["metadata"]["name"]: {k: quantity.milli(v) for k, v in n.get("status", {}).get("allocatable", {}).items()}
                       for n in nodes}
        bound = 0
        for pod in pending:
            node, message = self._place(pod, nodes, allocatable, used)
            if node is None:
                self._unschedulable(pod, message)
                continue
            if self._bind(pod, node):
                used[node].update(pod_requests(pod))
                bound += 1
        return bound

    def _place(self, pod, nodes, allocatable, used):
        requests = pod_requests(pod)
        reasons: Counter = Counter()
        feasible = []
        tolerations = pod.get("spec", {}).get("tolerations") or []
        for node in nodes:
            name = node["metadata"]["name"]
            spec = node.get("spec", {})
            if spec.get("unschedulable") and not _tolerates(tolerations, {"key": "node.kubernetes.io/unschedulable",
                                                                          "effect": "NoSchedule"}):
                reasons["node(s) were unschedulable"] += 1
                continue
            taints = list(spec.get("taints") or [])
            if not _node_ready(node):
                taints.append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
            untolerated = next((t for t in taints if t.get("effect") in ("NoSchedule", "NoExecute")
                                and not _tolerates(tolerations, t)), None)
            if untolerated is not None:
                reasons[f"node(s) had untolerated taint {{{untolerated['key']}: {untolerated.get('value', '')}}}"] += 1
                continue
            if not _affinity_matches(pod, node["metadata"].get("labels") or {}):
                reasons["node(s) didn't match Pod's node affinity/selector"] += 1
                continue
            short = [r for r, amount in requests.items()
                     if amount and used[name][r] + amount > allocatable[name].get(r, 0)]
            if short:
                for r in short:
                    reasons["Too many pods" if r == "pods" else f"Insufficient {r}"] += 1
                continue
            feasible.append(name)
        if not feasible:
            parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
            return None, f"0/{len(nodes)} nodes are available: {', '.join(parts)}."
        def score(name):
            fractions = [used[name][r] / allocatable[name][r] for r in ("cpu", "memory", "nvidia.com/gpu")
                         if allocatable[name].get(r)]
            return (sum(fractions) / len(fractions) if fractions else 0, name)
        return min(feasible, key=score), ""

    def _unschedulable(self, pod: dict, message: str) -> None:
        uid = pod["metadata"]["uid"]
        if self._last_message.get(uid) == message:
            return
        self._last_message[uid] = message
        stamp = now_iso(self.clock())

        def change(p):
            conditions = [c for c in p.setdefault("status", {}).get("conditions", []) if c["type"] != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                               "lastProbeTime": None, "lastTransitionTime": stamp})
            p["status"]["conditions"] = conditions
            p["status"]["phase"] = "Pending"
        try:
            self.store.mutate(core("pods"), pod["metadata"]["namespace"], pod["metadata"]["name"], change, "status")
        except errors.ApiError:
            return
        self.recorder.record(pod, "FailedScheduling", message, "Warning", component="default-scheduler")

    def _bind(self, pod: dict, node: str) -> bool:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        stamp = now_iso(self.clock())
        try:
            with self.store.lock:
                current = self.store.get(core("pods"), ns, name)
                if current["metadata"]["uid"] != pod["metadata"]["uid"] or current["spec"].get("nodeName"):
                    return False
                self.store.mutate(core("pods"), ns, name, lambda p: p["spec"].__setitem__("nodeName", node))

                def scheduled(p):
                    conditions = [c for c in p.setdefault("status", {}).get("conditions", []) if c["type"] != "PodScheduled"]
                    conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                       "lastTransitionTime": stamp})
                    p["status"]["conditions"] = conditions
                bound = self.store.mutate(core("pods"), ns, name, scheduled, "status")
        except errors.ApiError:
            return False
        self._last_message.pop(pod["metadata"]["uid"], None)
        self.recorder.record(bound, "Scheduled", f"Successfully assigned {ns}/{name} to {node}",
                             component="default-scheduler")
        return True
