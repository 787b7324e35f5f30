"""The scheduler: binds pending pods to nodes in creation order. Filters as kube-scheduler's
default profile does (unschedulable nodes, taints and tolerations, NotReady nodes, nodeSelector and
required node affinity, and every requested resource against allocatable minus what bound pods
request); scores by least allocated. A pod that fits nowhere stays Pending with PodScheduled=False,
reason Unschedulable and the scheduler's message, plus a FailedScheduling event; it is retried
whenever capacity or nodes change."""
from __future__ import annotations

import json
import time
from collections import Counter, defaultdict

from . import errors, quantity
from .resources import core
from .selectors import Requirement
from .store import now_iso

TERMINAL = ("Succeeded", "Failed")
FEASIBLE_NODES_TO_SCORE = 100  # kube-scheduler's minimum of nodes to score before choosing


def _shape(pod: dict) -> str:
    """What decides where a pod fits: its requests and its placement constraints."""
    spec = pod.get("spec", {})
    return json.dumps([pod_requests(pod), spec.get("tolerations"), spec.get("nodeSelector"), spec.get("affinity")],
                      sort_keys=True)


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
    """Keeps, from store changes, the pending pods and what bound pods request per node; a pass
    runs only when something that could change a decision happened (a new pending pod, capacity
    freed, a node changed)."""

    def __init__(self, store, recorder, clock):
        self.store, self.recorder, self.clock = store, recorder, clock
        self._last_message: dict[str, str] = {}
        self._pending: dict[str, tuple] = {}  # uid -> (creationTimestamp, seq, namespace, name)
        self._used: dict[str, Counter] = defaultdict(Counter)
        self._held: dict[str, tuple[str, dict]] = {}  # uid -> (node, requests)
        self._allocatable: dict[str, tuple[str, dict]] = {}  # node -> (resourceVersion, milli-units)
        self._dirty = True
        self._order = 0
        # Pods of a shape that fitted nowhere fit nowhere until capacity frees or a node changes:
        # their message is reused instead of scanning every node again for each of them.
        self._no_fit: dict[str, str] = {}
        self._next_start = 0  # kube-scheduler's round-robin start over the node list
        store.listeners.append(self._on_change)

    def _on_change(self, event, obj) -> None:
        kind = event.rtype.plural
        if kind == "nodes":
            self._dirty = True
            self._no_fit.clear()
            return
        if kind != "pods":
            return
        meta, spec = obj["metadata"], obj.get("spec", {})
        uid = meta["uid"]
        alive = event.type != "DELETED" and obj.get("status", {}).get("phase") not in TERMINAL
        node = spec.get("nodeName")
        if node and alive:
            if uid not in self._held:
                requests = pod_requests(obj)
                self._held[uid] = (node, requests)
                self._used[node].update(requests)
        elif uid in self._held:
            held_node, requests = self._held.pop(uid)
            self._used[held_node].subtract(requests)
            self._dirty = True  # capacity freed
            self._no_fit.clear()
        if not node and alive and not meta.get("deletionTimestamp") and \
                spec.get("schedulerName", "default-scheduler") == "default-scheduler":
            if uid not in self._pending:
                self._order += 1
                self._pending[uid] = (meta.get("creationTimestamp", ""), self._order, meta["namespace"], meta["name"])
                self._dirty = True
        else:
            self._pending.pop(uid, None)
            if event.type == "DELETED":
                self._last_message.pop(uid, None)

    def schedule(self, budget: float = 0.1) -> int:
        """Pending pods in creation order, for at most `budget` seconds (the API keeps answering
        while thousands wait); returns how many were bound. The next tick goes on."""
        if not self._dirty:
            return 0
        self._dirty = False
        started = time.monotonic()
        with self.store.lock:
            pending = sorted(self._pending.items(), key=lambda item: item[1][:2])
        if not pending:
            return 0
        nodes = self.store.all(core("nodes"))
        allocatable = {}
        for n in nodes:
            name, rv = n["metadata"]["name"], n["metadata"]["resourceVersion"]
            cached = self._allocatable.get(name)
            if cached is None or cached[0] != rv:
                cached = (rv, {k: quantity.milli(v) for k, v in n.get("status", {}).get("allocatable", {}).items()})
                self._allocatable[name] = cached
            allocatable[name] = cached[1]
        view = [(n["metadata"]["name"], bool(n.get("spec", {}).get("unschedulable")),
                 list(n.get("spec", {}).get("taints") or []) + ([] if _node_ready(n) else
                                                               [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]),
                 n["metadata"].get("labels") or {}) for n in nodes]
        bound = 0
        for uid, (_ts, _order, ns, name) in pending:
            if time.monotonic() - started > budget:
                self._dirty = True  # more to do next tick
                break
            pod = self.store.find(core("pods"), ns, name)
            if pod is None or pod["metadata"]["uid"] != uid or pod.get("spec", {}).get("nodeName"):
                continue
            shape = _shape(pod)
            message = self._no_fit.get(shape)
            node = None
            if message is None:
                node, message = self._place(pod, view, allocatable, self._used)
            if node is None:
                self._no_fit[shape] = message
                self._unschedulable(pod, message)
                continue
            if self._bind(pod, node):
                bound += 1
        return bound

    def _place(self, pod, view, allocatable, used):
        """view: (name, unschedulable, taints incl. not-ready, labels) per node, built once a pass."""
        requests = [(r, amount) for r, amount in pod_requests(pod).items() if amount]
        reasons: Counter = Counter()
        tolerations = pod.get("spec", {}).get("tolerations") or []
        cordon_ok = _tolerates(tolerations, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
        spec = pod.get("spec", {})
        constrained = bool(spec.get("nodeSelector") or (spec.get("affinity") or {}).get("nodeAffinity"))
        best, best_score, feasible = None, None, 0
        start = self._next_start % len(view) if view else 0
        for position in range(len(view)):
            name, unschedulable, taints, labels = view[(start + position) % len(view)]
            if unschedulable and not cordon_ok:
                reasons["node(s) were unschedulable"] += 1
                continue
            if taints:
                untolerated = next((t for t in taints if t.get("effect") in ("NoSchedule", "NoExecute")
                                    and not _tolerates(tolerations, t)), None)
                if untolerated is not None:
                    reasons[f"node(s) had untolerated taint {{{untolerated['key']}: {untolerated.get('value', '')}}}"] += 1
                    continue
            if constrained and not _affinity_matches(pod, labels):
                reasons["node(s) didn't match Pod's node affinity/selector"] += 1
                continue
            have, capacity = used.get(name) or Counter(), allocatable[name]
            short = [r for r, amount in requests if have[r] + amount > capacity.get(r, 0)]
            if short:
                for r in short:
                    reasons["Too many pods" if r == "pods" else f"Insufficient {r}"] += 1
                continue
            fractions = [have[r] / capacity[r] for r in ("cpu", "memory", "nvidia.com/gpu") if capacity.get(r)]
            score = (sum(fractions) / len(fractions) if fractions else 0, name)
            if best_score is None or score < best_score:
                best, best_score = name, score
            feasible += 1
            if feasible >= FEASIBLE_NODES_TO_SCORE:  # like kube-scheduler: enough to choose well
                self._next_start = start + position + 1
                break
        if best is None:
            parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
            return None, f"0/{len(view)} nodes are available: {', '.join(parts)}."
        return best, ""

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

                def bind(p):  # the binding and its condition in one write
                    p["spec"]["nodeName"] = node
                    conditions = [c for c in p.setdefault("status", {}).get("conditions", []) if c["type"] != "PodScheduled"]
                    conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                       "lastTransitionTime": stamp})
                    p["status"]["conditions"] = conditions
                bound = self.store.mutate(core("pods"), ns, name, bind, "*")
        except errors.ApiError:
            return False
        self._last_message.pop(pod["metadata"]["uid"], None)
        self.recorder.record(bound, "Scheduled", f"Successfully assigned {ns}/{name} to {node}",
                             component="default-scheduler")
        return True
