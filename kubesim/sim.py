"""KubeSim: the simulated cluster as one object. It owns the store, the API server thread, the
faults, the node inventory, pod logs and the garbage collector; tests embed it, and
`python -m kubesim serve` runs it as a process.

    sim = KubeSim(cluster=None).start()      # the demo cluster on a free loopback port
    sim.write_kubeconfig("kubeconfig")       # for the kubernetes client and kubectl
    sim.stop()
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
import zlib
from collections import defaultdict
from datetime import datetime, UTC
from pathlib import Path

import yaml

from . import cluster as clusters, defaults, errors, validation
from .events import Recorder
from .api import Api, Result
from .faults import Faults
from .cluster import GPU_RESOURCE
from .resources import RESOURCES, ResourceType, core, get
from .server import Server, serve_forever_in, wait_until_ready
from .store import Event, Store
import contextlib

SYSTEM_NAMESPACES = ["default", "kube-system", "kube-public", "kube-node-lease"]
MAX_LOG_LINES = 10_000  # per container, like a kubelet's log rotation
PROGRESS_SECONDS = 2.0
DEFAULT_TOKEN = "kubesim-token"


class KubeSim:
    def __init__(self, cluster=None, host: str = "127.0.0.1", port: int = 0, tokens=(DEFAULT_TOKEN,),
                 history: int = 100_000, bookmark_interval: float = 5.0, time_scale: float = 1.0,
                 tls: bool = False, controllers: bool = True, tick: float = 0.05, state_file=None, tls_dir=None,
                 ingress_port: int | None = None):
        self.definition = clusters.load(cluster)
        self.ingress_port, self.ingress = ingress_port, None  # the ingress stand-in (kubesim/ingress.py): None = off
        self.host, self.port, self.tls = host, port, tls or bool(tls_dir)
        self.tls_dir = Path(tls_dir) if tls_dir else None
        self.state_file = Path(state_file) if state_file else None
        self._ca_data = ""
        self.tokens = set(tokens)
        self.time_scale = float(self.definition.get("timeScale", time_scale))
        self._real0 = self._sim0 = time.time()
        self.store = Store(history=history, validator=validation.validate, defaulter=defaults.apply, clock=self.clock)
        self.recorder = Recorder(self.store, self.clock)
        self.default_run_seconds = float(self.definition.get("defaultRunSeconds", 30))
        self.tick = tick
        self.controllers = controllers
        self._stopping = threading.Event()
        self._loop: threading.Thread | None = None
        self.faults = Faults()
        self.api = Api(self.store, sim=self, bookmark_interval=bookmark_interval)
        self.logs: dict[tuple[str, str, str], list[tuple[float, str]]] = defaultdict(list)
        self.progress: dict[tuple[str, str, str], list] = {}  # container -> [pod uid, start, end or None]
        self.restarted: dict[tuple[str, str, str], float] = {}  # container -> when it last restarted
        self._progress_by_uid: dict[str, tuple[str, str, str]] = {}
        self._dependents: dict[str, set] = defaultdict(set)  # owner uid -> {(rtype key, ns, name)}
        self._owners_of: dict[tuple, set] = {}  # (rtype key, ns, name) -> owner uids
        self.gpu_allocations: dict[str, dict[int, tuple]] = {}  # node -> {gpu index: ((ns, pod, uid), container)}
        self.store.listeners.append(self._index_owners)
        self.server: Server | None = None
        self._thread: threading.Thread | None = None
        self._saver: threading.Thread | None = None
        if self.state_file and self.state_file.exists():
            self._load_state()
        self._populate()

    # ---- life cycle ---------------------------------------------------------------------------

    def _populate(self) -> None:
        for name in SYSTEM_NAMESPACES + list(self.definition.get("namespaces", [])):
            if self.store.find(core("namespaces"), "", name) is None:
                self.store.create(core("namespaces"), "", {"metadata": {"name": name},
                                                            "spec": {"finalizers": ["kubernetes"]},
                                                            "status": {"phase": "Active"}})
        for node in clusters.nodes(self.definition):
            if self.store.find(core("nodes"), "", node["metadata"]["name"]) is None:
                self.store.create(core("nodes"), "", node)

    def clock(self) -> float:
        """Simulated time: real time since start, times time_scale, from the real start time (or,
        after a restart from --state, from the simulated time it had then)."""
        return self._sim0 + (time.time() - self._real0) * self.time_scale

    # ---- persistence: a restartable control plane ------------------------------------------

    def save_state(self) -> None:
        """Write every object, the resourceVersion counter, the containers' logs and the simulated
        time to the state file (atomically: a crash mid-write leaves the previous file)."""
        with self.store.lock:
            state = {"store": self.store.snapshot(), "simTime": self.clock(), "realTime": time.time(),
                     "logs": [[list(key), lines] for key, lines in self.logs.items()]}
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(state, separators=(",", ":")))
        os.replace(tmp, self.state_file)
        self._saved_rv = self.store.rv

    def _load_state(self) -> None:
        state = json.loads(self.state_file.read_text())
        self.store.restore(state.get("store") or {})
        # The nodes kept running while the API server was away: simulated time went on.
        self._sim0 = float(state.get("simTime", self._real0)) + (self._real0 - float(state.get("realTime", self._real0))) * self.time_scale
        for key, lines in state.get("logs") or []:
            self.logs[tuple(key)] = [tuple(entry) for entry in lines]
        self._saved_rv = self.store.rv

    def _save_loop(self) -> None:
        while not self._stopping.wait(1.0):
            if self.store.rv != getattr(self, "_saved_rv", -1):
                try:
                    self.save_state()
                except OSError:
                    import traceback
                    traceback.print_exc()

    def tick_seconds_sim(self) -> float:
        return self.tick * self.time_scale

    def _make_controllers(self) -> tuple:
        """Built (and their indexes filled from what the store already holds) before the API
        accepts a request, so no change can slip past them."""
        from .jobs import JobController
        from .kubelet import Kubelet
        from .scheduler import Scheduler
        with self.store.lock:
            made = (JobController(self), Scheduler(self.store, self.recorder, self.clock), Kubelet(self))
            for rtype in RESOURCES:
                for obj in self.store.all(rtype):
                    event = Event(0, int(obj["metadata"]["resourceVersion"]), "ADDED", rtype,
                                  obj["metadata"].get("namespace", ""), obj, b"")
                    for controller in made:
                        controller._on_change(event, obj)
        return made

    def _run_controllers(self, jobs, scheduler, kubelet) -> None:
        while not self._stopping.wait(self.tick):
            try:
                jobs.sync_all()
                scheduler.schedule()
                kubelet.tick()
            except Exception:  # noqa: BLE001  a controller bug must not stop the cluster
                import traceback
                traceback.print_exc()

    def finalize_pod_deletion(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet has stopped the pod's containers: remove the object."""
        with contextlib.suppress(errors.ApiError):
            self.store.delete(core("pods"), namespace, name, precondition_uid=uid)

    def start(self) -> KubeSim:
        controllers = self._make_controllers() if self.controllers else None
        self._controllers = controllers or ()
        context = None
        if self.tls:
            from .tls import server_context
            context, self._ca_data = server_context(self.host, self.tls_dir)
        self.server = Server((self.host, self.port), self.api, self.tokens, self.faults, context)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=serve_forever_in, args=(self.server,), name="kubesim-api", daemon=True)
        self._thread.start()
        wait_until_ready(self.host, self.port)
        if self.ingress_port is not None:
            from .ingress import serve
            self.ingress = serve(self, self.host, self.ingress_port)
            self.ingress_port = self.ingress.server_address[1]
        if self.controllers:
            self._stopping.clear()
            self._loop = threading.Thread(target=self._run_controllers, args=controllers, name="kubesim-controllers",
                                          daemon=True)
            self._loop.start()
        if self.state_file:
            self._stopping.clear()
            self._saver = threading.Thread(target=self._save_loop, name="kubesim-state", daemon=True)
            self._saver.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None:
            self._loop.join(5)
            self._loop = None
        for controller in getattr(self, "_controllers", ()):
            self.store.listeners.remove(controller._on_change)
        self._controllers = ()
        self.store.drop_watches()
        if self.server is not None:
            self.server.shutdown()
            self._thread.join(5)
            self.server = None
        if self.ingress is not None:
            self.ingress.shutdown()
            self.ingress.server_close()
            self.ingress = None
        if self._saver is not None:
            self._saver.join(5)
            self._saver = None
        if self.state_file:
            self.save_state()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def kubeconfig(self) -> dict:
        token = sorted(self.tokens)[0] if self.tokens else ""
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "kubesim",
            "clusters": [{"name": "kubesim", "cluster": {"server": self.url, **(
                {"certificate-authority-data": self._ca_data} if self.tls else {})}}],
            "users": [{"name": "kubesim", "user": {"token": token}}],
            "contexts": [{"name": "kubesim", "context": {"cluster": "kubesim", "user": "kubesim", "namespace": "default"}}],
        }

    def write_kubeconfig(self, path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        path.chmod(0o600)
        return path

    # ---- deletion and garbage collection ------------------------------------------------------

    def _index_owners(self, event, obj) -> None:
        """Keep owner uid -> dependents current as ownerReferences come and go."""
        meta = obj["metadata"]
        key = (event.rtype.key, event.namespace, meta["name"])
        before = self._owners_of.pop(key, set())
        after = set() if event.type == "DELETED" else {r["uid"] for r in meta.get("ownerReferences") or []}
        for uid in before - after:
            self._dependents[uid].discard(key)
            if not self._dependents[uid]:
                del self._dependents[uid]
        for uid in after:
            self._dependents[uid].add(key)
        if after:
            self._owners_of[key] = after

    def dependents_of(self, uid: str) -> list[tuple[ResourceType, str, str]]:
        with self.store.lock:
            return [(get(k), ns, name) for k, ns, name in sorted(self._dependents.get(uid, ()))]

    def delete(self, rtype: ResourceType, namespace: str, name: str, policy: str = "Background",
               grace: int | None = None, precondition_uid: str = "", precondition_rv: str = ""):
        """Delete with the garbage collector's propagation policies: Background (the owner goes,
        then its dependents), Foreground (dependents first, then the owner), Orphan (dependents
        lose their ownerReference and stay). Returns (object, gone)."""
        with self.store.lock:
            obj = self.store.get(rtype, namespace, name)
            uid = obj["metadata"]["uid"]
            if rtype.plural == "namespaces":
                return self._delete_namespace(obj)
            if policy == "Orphan":
                for drtype, dns, dname in self.dependents_of(uid):
                    self.store.mutate(drtype, dns, dname, lambda o: _drop_owner(o, uid))
            elif policy == "Foreground":
                self._delete_dependents(uid, "Foreground")
            if rtype.plural == "pods" and self._needs_graceful_stop(obj, grace):
                seconds = grace if grace is not None else obj["spec"].get("terminationGracePeriodSeconds", 30)
                return self.store.delete(rtype, namespace, name, precondition_uid, precondition_rv, grace=max(1, seconds))
            result = self.store.delete(rtype, namespace, name, precondition_uid, precondition_rv)
            if policy == "Background":
                self._delete_dependents(uid, "Background")
            return result

    def _needs_graceful_stop(self, pod: dict, grace: int | None) -> bool:
        """A pod whose containers may be running goes through the kubelet (Terminating first)."""
        return (self.controllers and grace != 0 and bool(pod.get("spec", {}).get("nodeName"))
                and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"))

    def _delete_dependents(self, uid: str, policy: str) -> None:
        for drtype, dns, dname in self.dependents_of(uid):
            try:
                self.delete(drtype, dns, dname, policy=policy)
            except errors.ApiError as exc:
                if exc.code != 404:
                    raise

    def _delete_namespace(self, ns_obj: dict):
        name = ns_obj["metadata"]["name"]
        if name in SYSTEM_NAMESPACES:
            raise errors.ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted')
        rns = core("namespaces")
        self.store.mutate(rns, "", name, lambda o: o.setdefault("status", {}).update(phase="Terminating"))
        for rtype in (r for r in RESOURCES if r.namespaced):
            for obj in list(self.store.list(rtype, name)[0]):
                with contextlib.suppress(errors.ApiError):
                    self.store.delete(rtype, name, obj["metadata"]["name"])
        return self.store.delete(rns, "", name)

    # ---- logs ---------------------------------------------------------------------------------

    def append_log(self, namespace: str, pod: str, container: str, line: str, at: float | None = None) -> None:
        with self.store.lock:
            lines = self.logs[(namespace, pod, container)]
            lines.append((at if at is not None else self.clock(), line))
            if len(lines) > MAX_LOG_LINES:
                del lines[: len(lines) - MAX_LOG_LINES]

    def start_progress(self, uid: str, namespace: str, pod: str, container: str, at: float) -> None:
        """A training container prints a progress line every PROGRESS_SECONDS from `at` on; the
        lines are computed when read, so running pods cost nothing until someone looks."""
        with self.store.lock:
            self.progress[(namespace, pod, container)] = [uid, at, None]
            self._progress_by_uid[uid] = (namespace, pod, container)

    def end_progress(self, uid: str, at: float | None = None) -> None:
        with self.store.lock:
            key = self._progress_by_uid.pop(uid, None)
            if key is not None and key in self.progress:
                self.progress[key][2] = at if at is not None else self.clock()

    def _progress_lines(self, key, since: float | None, tail: int | None) -> list[tuple[float, str]]:
        entry = self.progress.get(key)
        if entry is None:
            return []
        uid, start, end = entry
        last = int(((end if end is not None else self.clock()) - start) // PROGRESS_SECONDS)
        first = 1
        if since is not None:
            first = max(first, math.ceil((since - start) / PROGRESS_SECONDS))
        first = max(first, last - min(tail if tail is not None else MAX_LOG_LINES, MAX_LOG_LINES) + 1)
        seed = zlib.crc32(uid.encode())
        lines = []
        for k in range(first, last + 1):
            jitter = (zlib.crc32(b"%d:%d" % (seed, k)) % 1000) / 1000
            loss = 2.3 * math.exp(-k / 25) + 0.05 + jitter * 0.02
            lines.append((start + k * PROGRESS_SECONDS, f"epoch {1 + k // 50} step {k * 20} loss {loss:.4f} "
                                                         f"lr 0.001 throughput {900 + int(jitter * 80)} samples/s"))
        return lines

    def pod_log(self, namespace: str, name: str, query: dict) -> Result:
        pod = self.store.get(core("pods"), namespace, name)
        container = container_of(pod, query.get("container") or "")
        statuses = {s["name"]: s for s in pod.get("status", {}).get("containerStatuses", [])}
        state = statuses.get(container, {}).get("state", {})
        if "waiting" in state or not statuses:
            reason = state.get("waiting", {}).get("reason", "ContainerCreating")
            raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        since = self.clock() - int(query["sinceSeconds"]) if query.get("sinceSeconds") else None
        tail = int(query["tailLines"]) if query.get("tailLines") else None
        timestamps = query.get("timestamps") in ("1", "true")
        key = (namespace, name, container)
        restarted_at = self.restarted.get(key) if statuses.get(container, {}).get("restartCount") else None
        if query.get("previous") in ("1", "true"):
            if restarted_at is None:
                raise errors.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
            lines = [e for e in self._lines(key, since, None) if e[0] <= restarted_at]
        else:
            lines = [e for e in self._lines(key, since, tail) if restarted_at is None or e[0] > restarted_at]
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        text = _format(lines, timestamps)
        if query.get("follow") in ("1", "true"):
            return Result(stream=self._follow(pod["metadata"]["uid"], key, text, lines, timestamps),
                          content_type="text/plain")
        return Result(text=text)

    def _lines(self, key, since, tail) -> list[tuple[float, str]]:
        with self.store.lock:
            lines = list(self.logs.get(key, ())) + self._progress_lines(key, since, tail)
        lines.sort(key=lambda entry: entry[0])
        return [e for e in lines if since is None or e[0] >= since]

    def _follow(self, uid, key, first_text, first_lines, timestamps):
        """Stream the log as it grows, until the container ends or the pod goes."""
        if first_text:
            yield first_text.encode()
        last = first_lines[-1][0] if first_lines else -1.0
        seen = {line for ts, line in first_lines if ts == last}
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            time.sleep(0.1)
            fresh = [e for e in self._lines(key, last, None) if e[0] > last or (e[0] == last and e[1] not in seen)]
            if fresh:
                if fresh[-1][0] != last:
                    seen = set()
                last = fresh[-1][0]
                seen |= {line for ts, line in fresh if ts == last}
                yield _format(fresh, timestamps).encode()
            pod = self.store.find(core("pods"), key[0], key[1])
            if pod is None or pod["metadata"]["uid"] != uid or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return

    # ---- faults and the control endpoint ------------------------------------------------------

    def finish_pods(self, namespace: str, label_selector: str = "", exit_code: int | None = None) -> list[str]:
        """End the running containers of the pods that match now (their commands return); the
        names of the pods that were ended."""
        from .selectors import index_terms, matcher
        match = matcher(label_selector, None)
        kubelet = next((c for c in self._controllers if c.__class__.__name__ == "Kubelet"), None)
        ended = []
        for pod in self.store.list(core("pods"), namespace, match=match, label_terms=index_terms(label_selector))[0]:
            if kubelet is not None and kubelet.finish_now(pod["metadata"]["uid"], exit_code):
                ended.append(pod["metadata"]["name"])
        return ended

    def set_node_ready(self, name: str, ready: bool) -> None:
        def change(node):
            node["status"]["conditions"] = clusters.ready_conditions(ready, _rfc3339(time.time()))
        self.store.mutate(core("nodes"), "", name, change, subresource="status")

    def control(self, method: str, path: str, query: dict, body) -> dict:
        """POST /kubesim/faults {"errorCode": 503, "errorRate": 1, "errorCount": -1, "delay": 0.2,
        "pathPrefix": "/apis/batch", "methods": ["POST"], "reset": false, "resetAfter": false,
        "garbage": false} (or {"rules": [...]} for several at once; DELETE clears); POST /kubesim/drop-watches; POST /kubesim/expire;
        POST /kubesim/nodes/NAME/ready {"ready": false}; GET /kubesim/faults."""
        body = body or {}
        if path == "/kubesim/faults":
            if method == "POST":
                from .faults import Rule
                rules = body.get("rules") if isinstance(body.get("rules"), list) else [body]
                self.faults.replace([Rule.from_json(r) for r in rules])
            elif method == "DELETE":
                self.faults.clear()
            return self.faults.describe()
        if path == "/kubesim/finish" and method == "POST":
            code = body.get("exitCode")
            return {"finished": self.finish_pods(body.get("namespace", "default"), body.get("labelSelector", ""),
                                                 None if code is None else int(code))}
        if path == "/kubesim/drop-watches" and method == "POST":
            self.store.drop_watches()
            return {"dropped": True}
        if path == "/kubesim/expire" and method == "POST":
            self.store.expire_history()
            return {"compactedResourceVersion": self.store.compacted_rv}
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[1] == "nodes" and parts[3] == "ready" and method == "POST":
            self.set_node_ready(parts[2], bool(body.get("ready", True)))
            return {"node": parts[2], "ready": bool(body.get("ready", True))}
        raise errors.ApiError(404, "NotFound", f"no control endpoint {method} {path}")

    # ---- GPUs: device assignment (the device plugin's job) and DCGM metrics -------------------

    def allocate_gpus(self, pod: dict) -> None:
        """Give a starting pod its GPU devices on its node (lowest free indices)."""
        node = pod["spec"]["nodeName"]
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"])
        with self.store.lock:
            taken = self.gpu_allocations.setdefault(node, {})
            if any(holder[0] == key for holder in taken.values()):
                return
            node_obj = self.store.find(core("nodes"), "", node)
            count = int((node_obj or {}).get("status", {}).get("capacity", {}).get(GPU_RESOURCE, "0") or 0)
            free = [i for i in range(count) if i not in taken]
            for c in pod["spec"]["containers"]:
                want = int((c.get("resources", {}).get("limits") or {}).get(GPU_RESOURCE, 0) or 0)
                for index in free[:want]:
                    taken[index] = (key, c["name"])
                free = free[want:]

    def release_gpus(self, pod: dict) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"])
        with self.store.lock:
            taken = self.gpu_allocations.get(pod.get("spec", {}).get("nodeName") or "", {})
            for index in [i for i, holder in taken.items() if holder[0] == key]:
                del taken[index]

    def metrics_text(self) -> str:
        from . import metrics
        from .kubelet import workload_of
        with self.store.lock:
            allocations = {node: dict(taken) for node, taken in self.gpu_allocations.items()}
            nodes = self.store.all(core("nodes"))
        pods, busy = {}, {}
        for taken in allocations.values():
            for key, _container in taken.values():
                pod = self.store.find(core("pods"), key[0], key[1])
                if pod is not None and pod["metadata"]["uid"] == key[2]:
                    pods[key] = pod
                    busy[key] = workload_of(pod, self.default_run_seconds).log_profile == "training"
        return metrics.render(nodes, allocations, pods, busy)


def container_of(pod: dict, asked: str) -> str:
    """The container a pods/log or pods/exec request means: the one asked for, or the pod's only
    one; the API server's 400s otherwise."""
    name = pod["metadata"]["name"]
    containers = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
    if not asked:
        if len(containers) != 1:
            raise errors.bad_request(f"a container name must be specified for pod {name}, "
                                     f"choose one of: [{' '.join(containers)}]")
        return containers[0]
    if asked not in containers:
        raise errors.bad_request(f"container {asked} is not valid for pod {name}")
    return asked


def _drop_owner(obj: dict, uid: str) -> None:
    refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
    if refs:
        obj["metadata"]["ownerReferences"] = refs
    else:
        obj["metadata"].pop("ownerReferences", None)


def _format(lines, timestamps: bool) -> str:
    return "".join((_rfc3339(ts) + " " if timestamps else "") + line + "\n" for ts, line in lines)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

