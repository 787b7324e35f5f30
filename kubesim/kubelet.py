"""The kubelets of all nodes: pull images, start containers, run them for a simulated time,
terminate them with an exit code, restart them per restartPolicy, stop them gracefully on
deletion, and write logs that look like the real workload's. Pod annotations under
kubesim.crater.io/ shape each workload (see kubesim/README.md)."""
from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, UTC

from . import errors, quantity
from .resources import core
from .store import now_iso

A = "kubesim.crater.io/"
TERMINAL = ("Succeeded", "Failed")
SERVER_HINTS = ("jupyter", "notebook", "lab", "serve", "server", "sleep infinity", "tail -f")


@dataclass
class Workload:
    run_seconds: float | None  # None = until deleted
    exit_code: int = 0
    oom: bool = False
    pull_fails: bool = False
    pull_seconds: float = 1.0
    start_seconds: float = 0.5
    termination_seconds: float = 1.0
    log_profile: str = "training"
    log_lines: list[str] = field(default_factory=list)


def workload_of(pod: dict, default_run_seconds: float) -> Workload:
    annotations = pod["metadata"].get("annotations") or {}
    containers = pod.get("spec", {}).get("containers") or [{}]
    main = containers[0]
    text = " ".join([main.get("image", ""), *(main.get("command") or []), *(main.get("args") or [])]).lower()
    server = any(hint in text for hint in SERVER_HINTS)
    run = annotations.get(A + "run-seconds")
    if run in ("forever", "inf", "-1") or (run is None and server):
        run_seconds = None
    else:
        run_seconds = float(run) if run is not None else default_run_seconds
    memory_use = annotations.get(A + "memory-use")
    limit = (main.get("resources") or {}).get("limits", {}).get("memory")
    oom = annotations.get(A + "oom") == "true" or bool(
        memory_use and limit and quantity.parse(memory_use) > quantity.parse(limit))
    profile = annotations.get(A + "log-profile") or ("jupyter" if "jupyter" in text or "notebook" in text
                                                     else "server" if server else "training")
    return Workload(
        run_seconds=run_seconds, exit_code=int(annotations.get(A + "exit-code", "137" if oom else "0")), oom=oom,
        pull_fails=annotations.get(A + "image-pull") == "fail",
        pull_seconds=float(annotations.get(A + "pull-seconds", "1")),
        start_seconds=float(annotations.get(A + "start-seconds", "0.5")),
        termination_seconds=float(annotations.get(A + "termination-seconds", "1")),
        log_profile=profile, log_lines=(annotations.get(A + "log") or "").splitlines(),
    )


@dataclass
class PodState:
    stage: str  # pulling | backoff | starting | running | finished | stopping
    due: float  # simulated time of the next step
    workload: Workload
    started: float = 0.0
    restarts: int = 0


def _conditions(ready: bool, stamp: str, scheduled: dict | None) -> list[dict]:
    status = "True" if ready else "False"
    result = [{"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": stamp},
              {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
              {"type": "Ready", "status": status, "lastTransitionTime": stamp},
              {"type": "ContainersReady", "status": status, "lastTransitionTime": stamp}]
    if scheduled:
        result.append(scheduled)
    return result


class Kubelet:
    """Works from a queue of due times, fed by store changes (a pod bound to a node, a pod being
    deleted) and by its own steps, so a tick costs only the pods that have something to do."""

    def __init__(self, sim):
        self.sim, self.store, self.recorder, self.clock = sim, sim.store, sim.recorder, sim.clock
        self.states: dict[str, PodState] = {}
        self._keys: dict[str, tuple[str, str]] = {}  # uid -> (namespace, name) of bound pods
        self._deleting: set[str] = set()
        self._queue: list = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._ips = 1
        self.store.listeners.append(self._on_change)

    def _push(self, due: float, uid: str) -> None:
        with self._lock:
            heapq.heappush(self._queue, (due, next(self._seq), uid))

    def _on_change(self, event, obj) -> None:
        if event.rtype.plural != "pods":
            return
        meta = obj["metadata"]
        uid = meta["uid"]
        if event.type == "DELETED":
            self._keys.pop(uid, None)
            self._deleting.discard(uid)
            return
        if not obj.get("spec", {}).get("nodeName"):
            return
        if uid not in self._keys:
            self._keys[uid] = (meta["namespace"], meta["name"])
            self._push(0, uid)
        if meta.get("deletionTimestamp") and uid not in self._deleting:
            self._deleting.add(uid)
            self._push(0, uid)

    def tick(self, budget: float = 0.1) -> None:
        """Everything that is due, for at most `budget` seconds; the rest stays queued."""
        now = self.clock()
        started = time.monotonic()
        while time.monotonic() - started < budget:
            with self._lock:
                if not self._queue or self._queue[0][0] > now:
                    break
                _due, _seq, uid = heapq.heappop(self._queue)
            key = self._keys.get(uid)
            pod = self.store.find(core("pods"), *key) if key else None
            if pod is None or pod["metadata"]["uid"] != uid:
                self._forget(uid)
                continue
            state = self.states.get(uid)
            try:
                if pod["metadata"].get("deletionTimestamp"):
                    self._stop(pod, state, now)
                elif pod.get("status", {}).get("phase") in TERMINAL:
                    self._forget(uid)
                elif state is None:
                    self._admit(pod, now)
                elif now >= state.due:
                    self._advance(pod, state, now)
                else:
                    continue
            except errors.ApiError:
                self._push(now + self.sim.tick_seconds_sim(), uid)  # changed under us: look again soon
                continue
            state = self.states.get(uid)
            if state is not None and state.due != math.inf:
                self._push(state.due, uid)

    def finish_now(self, uid: str, exit_code: int | None = None) -> bool:
        """End a running container now (as if its command returned), with its workload's exit code
        or `exit_code`. False when the pod has no running container here."""
        state = self.states.get(uid)
        if state is None or state.stage != "running":
            return False
        if exit_code is not None:
            state.workload.exit_code = exit_code
        state.due = self.clock()
        self._push(state.due, uid)
        return True

    def _forget(self, uid: str) -> None:
        state = self.states.pop(uid, None)
        if state is not None:
            self.sim.end_progress(uid)

    # ---- steps ---------------------------------------------------------------------------------

    def _admit(self, pod, now):
        workload = workload_of(pod, self.sim.default_run_seconds)
        since = _running_since(pod)
        if since is not None:  # the control plane restarted: the container kept running on its node
            state = self.states[pod["metadata"]["uid"]] = PodState("running", math.inf, workload, started=since)
            restarts = sum(c.get("restartCount", 0) for c in pod.get("status", {}).get("containerStatuses", []))
            state.restarts = restarts
            if workload.run_seconds is not None:
                state.due = since + workload.run_seconds
            self.sim.allocate_gpus(pod)
            self._start_progress(pod, state, since)
            return
        self.states[pod["metadata"]["uid"]] = PodState("pulling", now + workload.pull_seconds, workload)
        image = pod["spec"]["containers"][0]["image"]
        self._event(pod, "Pulling", f'Pulling image "{image}"')
        self._set_waiting(pod, "ContainerCreating", "", now)

    def _advance(self, pod, state, now):
        image = pod["spec"]["containers"][0]["image"]
        if state.stage in ("pulling", "backoff"):
            if state.workload.pull_fails:
                reason = "ErrImagePull" if state.stage == "pulling" else "ImagePullBackOff"
                message = (f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull and '
                           f'unpack image "{image}": not found')
                self._event(pod, "Failed", message if reason == "ErrImagePull" else f"Error: {reason}", "Warning")
                if reason == "ImagePullBackOff":
                    self._event(pod, "BackOff", f'Back-off pulling image "{image}"')
                self._set_waiting(pod, reason, message if reason == "ErrImagePull" else f'Back-off pulling image "{image}"', now)
                state.stage, state.due = "backoff", now + 10 * self.sim.tick_seconds_sim()
                return
            self._event(pod, "Pulled", f'Successfully pulled image "{image}" in {state.workload.pull_seconds:.3f}s')
            state.stage, state.due = "starting", now + state.workload.start_seconds
            return
        if state.stage == "starting":
            name = pod["spec"]["containers"][0]["name"]
            self.sim.allocate_gpus(pod)
            self._event(pod, "Created", f"Created container {name}")
            self._event(pod, "Started", f"Started container {name}")
            self._set_running(pod, state, now)
            state.stage, state.started = "running", now
            state.due = now + state.workload.run_seconds if state.workload.run_seconds is not None else math.inf
            self._startup_logs(pod, state, now)
            return
        if state.stage == "running" and now >= state.due:
            self._finish(pod, state, now)

    def _finish(self, pod, state, now):
        w = state.workload
        self.sim.end_progress(pod["metadata"]["uid"], state.due)
        code = w.exit_code
        reason = "OOMKilled" if w.oom else ("Completed" if code == 0 else "Error")
        policy = pod["spec"].get("restartPolicy", "Always")
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if code == 0 and not w.oom:
            self._log(pod, now, self._final_line(w))
        elif w.oom:
            self._log(pod, now, "Killed")
        else:
            self._log(pod, now, f"Error: process exited with status {code}")
        terminated = {"exitCode": code, "reason": reason, "startedAt": now_iso(state.started), "finishedAt": now_iso(now),
                      "containerID": self._cid(pod)}
        if restart:
            state.restarts += 1
            with self.store.lock:
                self.sim.restarted[(pod["metadata"]["namespace"], pod["metadata"]["name"], pod["spec"]["containers"][0]["name"])] = now
            self._event(pod, "BackOff", "Back-off restarting failed container", "Warning") if code else None
            self._update_status(pod, lambda s: self._container(s, pod, running_since=now, restarts=state.restarts,
                                                                  last=terminated, ready=True))
            state.started, state.stage = now, "running"
            state.due = now + w.run_seconds if w.run_seconds is not None else math.inf
            self._start_progress(pod, state, now)
            return
        phase = "Succeeded" if code == 0 and not w.oom else "Failed"
        state.stage = "finished"
        self.sim.release_gpus(pod)

        def done(s):
            self._container(s, pod, terminated=terminated, restarts=state.restarts, ready=False)
            s["phase"] = phase
            s["conditions"] = _conditions(False, now_iso(now), _scheduled(s))
        self._update_status(pod, done)

    def _stop(self, pod, state, now):
        uid = pod["metadata"]["uid"]
        if state is None or state.stage != "stopping":
            grace = pod["metadata"].get("deletionGracePeriodSeconds", pod["spec"].get("terminationGracePeriodSeconds", 30))
            delay = min(float(grace), (state.workload.termination_seconds if state else 1.0))
            if pod.get("status", {}).get("phase") not in TERMINAL and state is not None and state.stage in ("running", "starting"):
                self._event(pod, "Killing", f"Stopping container {pod['spec']['containers'][0]['name']}")
            if state is None:
                state = PodState("stopping", now + delay, workload_of(pod, self.sim.default_run_seconds))
                self.states[uid] = state
            else:
                state.stage, state.due = "stopping", now + delay
            return
        if now < state.due:
            return
        self.states.pop(uid, None)
        self.sim.release_gpus(pod)
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if pod.get("status", {}).get("phase") not in TERMINAL:
            self._update_status(pod, lambda s: self._container(
                s, pod, terminated={"exitCode": 143, "reason": "Error", "startedAt": now_iso(state.started or now),
                                    "finishedAt": now_iso(now), "containerID": self._cid(pod)}, ready=False))
        self.sim.finalize_pod_deletion(ns, name, pod["metadata"]["uid"])

    # ---- status helpers -------------------------------------------------------------------------

    def _update_status(self, pod, change):
        self.store.mutate(core("pods"), pod["metadata"]["namespace"], pod["metadata"]["name"],
                          lambda p: change(p.setdefault("status", {})), "status")

    def _cid(self, pod) -> str:
        return "containerd://" + pod["metadata"]["uid"].replace("-", "")

    def _container(self, status, pod, running_since=None, terminated=None, waiting=None, restarts=0, last=None, ready=False):
        statuses = []
        for c in pod["spec"]["containers"]:
            entry = {"name": c["name"], "image": c["image"], "imageID": f"docker.io/library/{c['image']}@sha256:kubesim",
                     "containerID": self._cid(pod), "restartCount": restarts, "ready": ready, "started": running_since is not None}
            if running_since is not None:
                entry["state"] = {"running": {"startedAt": now_iso(running_since)}}
            elif terminated is not None:
                entry["state"] = {"terminated": terminated}
            else:
                entry["state"] = {"waiting": waiting or {"reason": "ContainerCreating"}}
            if last:
                entry["lastState"] = {"terminated": last}
            statuses.append(entry)
        status["containerStatuses"] = statuses

    def _set_waiting(self, pod, reason, message, now):
        def change(s):
            waiting = {"reason": reason, **({"message": message} if message else {})}
            self._container(s, pod, waiting=waiting)
            s["phase"] = "Pending"
            s["hostIP"] = self._host_ip(pod)
            s.setdefault("startTime", now_iso(now))
            s["conditions"] = _conditions(False, now_iso(now), _scheduled(s))
        self._update_status(pod, change)

    def _set_running(self, pod, state, now):
        def change(s):
            self._container(s, pod, running_since=now, restarts=state.restarts, ready=True)
            s["phase"] = "Running"
            s["hostIP"] = self._host_ip(pod)
            if not s.get("podIP"):
                self._ips += 1
                s["podIP"] = f"10.244.{self._ips // 250}.{self._ips % 250 + 2}"
                s["podIPs"] = [{"ip": s["podIP"]}]
            s.setdefault("startTime", now_iso(now))
            s["conditions"] = _conditions(True, now_iso(now), _scheduled(s))
        self._update_status(pod, change)

    def _host_ip(self, pod) -> str:
        node = self.store.find(core("nodes"), "", pod["spec"]["nodeName"])
        addresses = (node or {}).get("status", {}).get("addresses", [])
        return next((a["address"] for a in addresses if a["type"] == "InternalIP"), "")

    def _event(self, pod, reason, message, type_="Normal"):
        self.recorder.record(pod, reason, message, type_, component="kubelet", host=pod["spec"].get("nodeName", ""))

    # ---- logs -------------------------------------------------------------------------------------

    def _log(self, pod, at, line):
        self.sim.append_log(pod["metadata"]["namespace"], pod["metadata"]["name"], pod["spec"]["containers"][0]["name"],
                            line, at)

    def _startup_logs(self, pod, state, now):
        w = state.workload
        if w.log_lines:
            for line in w.log_lines:
                self._log(pod, now, line)
            return
        if w.log_profile == "jupyter":
            base = (pod["metadata"].get("annotations") or {}).get(A + "base-url", "/")
            for line in (
                "[I 2026-01-01 00:00:00.000 ServerApp] jupyter_lsp | extension was successfully linked.",
                "[I 2026-01-01 00:00:00.010 ServerApp] jupyterlab | extension was successfully linked.",
                "[I 2026-01-01 00:00:00.120 ServerApp] Writing Jupyter server cookie secret to /root/.local/share/jupyter/runtime/jupyter_cookie_secret",
                "[I 2026-01-01 00:00:00.450 ServerApp] jupyterlab | extension was successfully loaded.",
                "[I 2026-01-01 00:00:00.452 ServerApp] Serving notebooks from local directory: /home/jovyan",
                "[I 2026-01-01 00:00:00.452 ServerApp] Jupyter Server 2.14.2 is running at:",
                f"[I 2026-01-01 00:00:00.452 ServerApp] http://{pod['metadata']['name']}:8888{base}lab",
                "[I 2026-01-01 00:00:00.452 ServerApp] Use Control-C to stop this server and shut down all kernels (twice to skip confirmation).",
            ):
                self._log(pod, now, line)
        elif w.log_profile == "training":
            gpus = sum(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0) or 0) for c in pod["spec"]["containers"])
            self._log(pod, now, f"Using device: {'cuda' if gpus else 'cpu'} ({gpus} GPU{'s' if gpus != 1 else ''})")
            self._log(pod, now, "Loading dataset ... done (50000 training samples, 10000 validation samples)")
            self._log(pod, now, "Starting training: epochs=10, batch_size=256, lr=0.001")
            self._start_progress(pod, state, now)
        else:
            self._log(pod, now, "server started, listening on :8080")

    def _start_progress(self, pod, state, now):
        """Training prints a step line every 2 s; the lines are computed when the log is read."""
        if state.workload.log_profile == "training" and not state.workload.log_lines:
            self.sim.start_progress(pod["metadata"]["uid"], pod["metadata"]["namespace"], pod["metadata"]["name"],
                                    pod["spec"]["containers"][0]["name"], now)

    @staticmethod
    def _final_line(w: Workload) -> str:
        if w.log_profile == "training":
            return "Training finished. Saved checkpoint to /workspace/checkpoints/final.pt"
        return "done"


def _running_since(pod: dict) -> float | None:
    """When the pod's first container started running, if it is running (as the API says)."""
    for status in pod.get("status", {}).get("containerStatuses", []):
        started = (status.get("state", {}).get("running") or {}).get("startedAt")
        if started:
            try:
                return datetime.strptime(started[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
            except ValueError:
                return None
    return None


def _scheduled(status: dict) -> dict | None:
    return next((c for c in status.get("conditions", []) if c["type"] == "PodScheduled"), None)
