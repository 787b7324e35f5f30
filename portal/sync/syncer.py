"""The syncer (`crater sync`): watches the portal's Jobs and Pods and writes each job's state,
reason, exit code and times into the database.

- One replica works: it holds a coordination.k8s.io/v1 Lease and renews it; the others wait and
  take over when it stops renewing.
- Watches resume from their resourceVersion; a 410 Gone relists; API failures back off (1 s
  doubling up to 30 s). A relist recomputes every job, so a final state reached while the syncer
  was down is recorded when it comes back (the Job object is kept ttlSecondsAfterFinished).
- Final database states (Succeeded, Failed, Stopped, Lost) are never overwritten. A job whose
  Job object is gone while the database still calls it active becomes Lost after LOST_GRACE
  seconds (a portal-initiated stop commits Stopped within that time).
- A heartbeat row says when the syncer last worked, so pages can warn that data is stale.
- It also watches all Nodes and all Pods (any namespace: other workloads hold GPUs too) and keeps
  the node inventory table: allocatable, requested, GPU model, readiness, cordon, taints.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity
from sqlalchemy import select, update

from ..cluster.client import Cluster
from ..cluster.manifests import MANAGED_BY
from ..cluster.status import from_cluster
from ..extensions import db
from ..models import ACTIVE_STATES, Job, JobEvent, Node, SyncHeartbeat, utcnow
from ..services import notify

log = logging.getLogger("crater.sync")
LEASE_NAME = "crater-syncer"
FINAL = ("Succeeded", "Failed", "Stopped", "Lost")
LOST_GRACE = 5.0
SUBMIT_GRACE = 120.0  # seconds a job may stay Submitting without cluster objects
MAX_BACKOFF = 30.0
KEEP_EVENTS = 50  # per job
KEEP_LOG_LINES = 200  # per pod, kept in the DB when a job ends


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    return datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=None)


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Syncer:
    def __init__(self, app, cluster: Cluster, identity: str = "", lease_seconds: int = 15,
                 watch_timeout: int = 300):
        self.app, self.cluster = app, cluster
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease_seconds, self.watch_timeout = lease_seconds, watch_timeout
        self.stop_event = threading.Event()
        self.leading = threading.Event()
        self._lock = threading.Lock()
        self._jobs: dict[int, dict] = {}
        self._pods: dict[int, dict[str, dict]] = {}
        self._missing: dict[int, float] = {}
        self._dirty: set[int] = set()
        self._nodes: dict[str, dict] = {}
        self._pod_usage: dict[tuple[str, str], tuple[str, int, int, int]] = {}  # pod -> (node, gpus, cpu m, mem MiB)
        self._dirty_nodes: set[str] = set()
        self._events: dict[str, dict] = {}  # Event uid -> event, waiting to be written
        self._wake = threading.Event()
        self._to_notify: set[int] = set()

    # ---- life cycle -----------------------------------------------------------------------

    def start(self) -> "Syncer":
        self._threads = [threading.Thread(target=self._lease_loop, name="sync-lease", daemon=True),
                         threading.Thread(target=self._watch_loop, args=("jobs",), name="sync-jobs", daemon=True),
                         threading.Thread(target=self._watch_loop, args=("pods",), name="sync-pods", daemon=True),
                         threading.Thread(target=self._watch_loop, args=("nodes",), name="sync-nodes", daemon=True),
                         threading.Thread(target=self._watch_loop, args=("allpods",), name="sync-allpods", daemon=True),
                         threading.Thread(target=self._watch_loop, args=("events",), name="sync-events", daemon=True),
                         threading.Thread(target=self._write_loop, name="sync-writer", daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop working and hand the lease back. Watch threads may still be blocked in a read
        until their timeout; they only touch memory and end at the next event or timeout."""
        self.stop_event.set()
        self._wake.set()
        for t in getattr(self, "_threads", []):
            if t.name in ("sync-lease", "sync-writer"):
                t.join(10)
        if self.leading.is_set():
            self._release()

    # ---- the lease ------------------------------------------------------------------------

    def _lease_loop(self) -> None:
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                if self._acquire_or_renew():
                    if not self.leading.is_set():
                        log.info("syncer %s leads", self.identity)
                        self.leading.set()
                    self._heartbeat()
                elif self.leading.is_set():
                    log.warning("syncer %s lost the lease", self.identity)
                    self.leading.clear()
                backoff = 1.0
                self.stop_event.wait(self.lease_seconds / 3)
            except (ApiException, OSError) as exc:
                log.warning("lease: %s", exc)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _acquire_or_renew(self) -> bool:
        leases, ns = self.cluster.coordination, self.cluster.settings.namespace
        now = _now_iso()
        try:
            lease = leases.read_namespaced_lease(LEASE_NAME, ns)
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                leases.create_namespaced_lease(ns, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                                    "metadata": {"name": LEASE_NAME},
                                                    "spec": {"holderIdentity": self.identity, "acquireTime": now,
                                                             "renewTime": now, "leaseDurationSeconds": self.lease_seconds}})
                return True
            except ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
        spec = lease.spec
        held_by_other = spec.holder_identity and spec.holder_identity != self.identity
        if held_by_other and spec.renew_time is not None:
            renewed = spec.renew_time.timestamp() if hasattr(spec.renew_time, "timestamp") else 0
            if time.time() - renewed < (spec.lease_duration_seconds or self.lease_seconds):
                return False
        body = self.cluster.api.sanitize_for_serialization(lease)
        body["spec"].update({"holderIdentity": self.identity, "renewTime": now,
                             "leaseDurationSeconds": self.lease_seconds})
        if held_by_other or not spec.holder_identity:
            body["spec"]["acquireTime"] = now
        try:
            leases.replace_namespaced_lease(LEASE_NAME, ns, body)  # carries resourceVersion: a race gives 409
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def _release(self) -> None:
        try:
            leases, ns = self.cluster.coordination, self.cluster.settings.namespace
            lease = leases.read_namespaced_lease(LEASE_NAME, ns)
            if lease.spec.holder_identity == self.identity:
                body = self.cluster.api.sanitize_for_serialization(lease)
                body["spec"]["holderIdentity"] = ""
                leases.replace_namespaced_lease(LEASE_NAME, ns, body)
        except (ApiException, OSError):
            pass
        self.leading.clear()

    def _heartbeat(self) -> None:
        with self.app.app_context():
            row = db.session.get(SyncHeartbeat, 1)
            if row is None:
                row = SyncHeartbeat(id=1)
                db.session.add(row)
            row.holder, row.beat_at = self.identity, datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
            db.session.commit()
            db.session.remove()

    # ---- watching -------------------------------------------------------------------------

    def _watch_loop(self, kind: str) -> None:
        backoff = 1.0
        while not self.stop_event.is_set():
            if not self.leading.wait(0.5):
                continue
            try:
                rv = self._relist(kind)
                backoff = 1.0
                while not self.stop_event.is_set() and self.leading.is_set():
                    rv = self._watch(kind, rv)
            except ApiException as exc:
                if exc.status == 410:
                    log.info("%s watch expired; relisting", kind)
                    continue
                log.warning("%s watch failed (%s); retrying in %.0f s", kind, exc.status, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception as exc:  # noqa: BLE001  connection errors and the like: back off, relist
                log.warning("%s watch failed (%s); retrying in %.0f s", kind, exc, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _list_call(self, kind: str):
        """(list function, its arguments) for a kind of watch."""
        ns, managed = self.cluster.settings.namespace, {"label_selector": f"app.kubernetes.io/managed-by={MANAGED_BY}"}
        return {"jobs": (self.cluster.batch.list_namespaced_job, (ns,), managed),
                "pods": (self.cluster.core.list_namespaced_pod, (ns,), managed),
                "nodes": (self.cluster.core.list_node, (), {}),
                "events": (self.cluster.core.list_namespaced_event, (ns,), {}),
                "allpods": (self.cluster.core.list_pod_for_all_namespaces, (), {})}[kind]

    def _relist(self, kind: str) -> str:
        fn, args, kwargs = self._list_call(kind)
        result = fn(*args, **kwargs)
        sanitize = self.cluster.api.sanitize_for_serialization
        objects = [sanitize(o) for o in result.items]
        with self._lock:
            if kind == "jobs":
                self._jobs = {_job_id(obj): obj for obj in objects}
            elif kind == "pods":
                self._pods = {}
                for obj in objects:
                    self._pods.setdefault(_job_id(obj), {})[obj["metadata"]["name"]] = obj
            elif kind == "nodes":
                self._dirty_nodes |= set(self._nodes) | {o["metadata"]["name"] for o in objects}
                self._nodes = {o["metadata"]["name"]: o for o in objects}
            elif kind == "events":
                self._events.update({o["metadata"]["uid"]: o for o in objects if _event_job_id(o)})
            else:
                self._dirty_nodes |= {usage[0] for usage in self._pod_usage.values()}
                self._pod_usage = {}
                for obj in objects:
                    self._account_pod("ADDED", obj)
            if kind in ("jobs", "pods"):
                self._dirty |= {_job_id(o) for o in objects}
                self._dirty.add(-1)  # a full sweep: active jobs without objects may be lost
        self._wake.set()
        return result.metadata.resource_version

    def _account_pod(self, event_type: str, pod: dict) -> None:
        """Track what a pod holds on its node (nothing once it has ended)."""
        key = (pod["metadata"].get("namespace", ""), pod["metadata"]["name"])
        before = self._pod_usage.pop(key, None)
        if before:
            self._dirty_nodes.add(before[0])
        node = pod.get("spec", {}).get("nodeName")
        if event_type == "DELETED" or not node or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return
        gpus = cpu = mem = 0
        for c in pod.get("spec", {}).get("containers", []):
            requests = (c.get("resources") or {}).get("requests") or {}
            gpus += int(parse_quantity(requests.get(self.cluster.settings.gpu_resource, 0)))
            cpu += int(parse_quantity(requests.get("cpu", 0)) * 1000)
            mem += int(parse_quantity(requests.get("memory", 0)) / (1024 * 1024))
        self._pod_usage[key] = (node, gpus, cpu, mem)
        self._dirty_nodes.add(node)

    def _watch(self, kind: str, rv: str) -> str:
        w = watch.Watch()
        fn, args, kwargs = self._list_call(kind)
        for event in w.stream(fn, *args, resource_version=rv, timeout_seconds=self.watch_timeout,
                              allow_watch_bookmarks=True, **kwargs):
            if self.stop_event.is_set() or not self.leading.is_set():
                w.stop()
                break
            obj = event["raw_object"]
            rv = obj.get("metadata", {}).get("resourceVersion", rv)
            if event["type"] == "BOOKMARK":
                continue
            if kind in ("nodes", "allpods", "events"):
                with self._lock:
                    if kind == "events":
                        if event["type"] != "DELETED" and _event_job_id(obj):
                            self._events[obj["metadata"]["uid"]] = obj
                    elif kind == "nodes":
                        name = obj["metadata"]["name"]
                        if event["type"] == "DELETED":
                            self._nodes.pop(name, None)
                        else:
                            self._nodes[name] = obj
                        self._dirty_nodes.add(name)
                    else:
                        self._account_pod(event["type"], obj)
                self._wake.set()
                continue
            job_id = _job_id(obj)
            with self._lock:
                if kind == "jobs":
                    if event["type"] == "DELETED":
                        self._jobs.pop(job_id, None)
                    else:
                        self._jobs[job_id] = obj
                else:
                    pods = self._pods.setdefault(job_id, {})
                    if event["type"] == "DELETED":
                        pods.pop(obj["metadata"]["name"], None)
                    else:
                        pods[obj["metadata"]["name"]] = obj
                self._dirty.add(job_id)
            self._wake.set()
        return rv

    # ---- writing ----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while not self.stop_event.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if not self.leading.is_set():
                continue
            with self._lock:
                dirty, self._dirty = self._dirty, set()
                dirty_nodes, self._dirty_nodes = self._dirty_nodes, set()
                events, self._events = self._events, {}
                sweep = -1 in dirty
                dirty.discard(-1)
            try:
                with self.app.app_context():
                    self._write(dirty, sweep)
                    self._write_nodes(dirty_nodes)
                    self._write_events(events)
                    db.session.remove()
            except Exception as exc:  # noqa: BLE001  the DB may be away; try again next round
                log.warning("writing cluster state failed: %s", exc)
                with self._lock:
                    self._dirty |= dirty
                    self._dirty_nodes |= dirty_nodes
                    self._events = {**events, **self._events}
                self.stop_event.wait(1.0)

    def _write_nodes(self, names: set[str]) -> None:
        if not names:
            return
        with self._lock:
            nodes = {n: self._nodes.get(n) for n in names}
            requested = {n: [0, 0, 0] for n in names}
            for node, gpus, cpu, mem in self._pod_usage.values():
                if node in requested:
                    requested[node][0] += gpus
                    requested[node][1] += cpu
                    requested[node][2] += mem
        rows = {r.name: r for r in db.session.execute(select(Node).where(Node.name.in_(names))).scalars()}
        stamp = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
        for name, obj in nodes.items():
            row = rows.get(name)
            if obj is None:
                if row is not None:
                    db.session.delete(row)
                continue
            if row is None:
                row = Node(name=name)
                db.session.add(row)
            status, labels = obj.get("status", {}), obj["metadata"].get("labels") or {}
            allocatable = status.get("allocatable", {})
            row.gpu_model = labels.get("nvidia.com/gpu.product", "")
            row.gpus = int(parse_quantity(allocatable.get(self.cluster.settings.gpu_resource, 0)))
            row.cpu_milli = int(parse_quantity(allocatable.get("cpu", 0)) * 1000)
            row.memory_mib = int(parse_quantity(allocatable.get("memory", 0)) / (1024 * 1024))
            row.gpus_requested, row.cpu_requested_milli, row.memory_requested_mib = requested[name]
            row.ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
            row.unschedulable = bool(obj.get("spec", {}).get("unschedulable"))
            row.labels, row.taints = labels, obj.get("spec", {}).get("taints") or []
            row.conditions = [{k: c.get(k) for k in ("type", "status", "reason", "message")} for c in status.get("conditions", [])]
            row.updated_at = stamp
        db.session.commit()

    def _write(self, job_ids: set[int], sweep: bool) -> None:
        now = time.monotonic()
        candidates = set(job_ids) | set(self._missing)
        if sweep:
            candidates |= set(db.session.execute(select(Job.id).where(Job.state.in_(ACTIVE_STATES))).scalars())
        if not candidates:
            return
        rows = {j.id: j for j in db.session.execute(select(Job).where(Job.id.in_(candidates))).scalars()}
        for job_id in candidates:
            row = rows.get(job_id)
            if row is None or row.state in FINAL:
                self._missing.pop(job_id, None)
                if row is not None and row.notify and row.notified_at is None:
                    self._to_notify.add(job_id)
                continue
            with self._lock:
                job_obj = self._jobs.get(job_id)
                pods = list(self._pods.get(job_id, {}).values())
            if job_obj is None:
                if row.state == "Submitting":
                    # Being created right now, unless the web process died in between: after
                    # SUBMIT_GRACE the row ends SubmitError instead of staying Submitting for ever.
                    if (utcnow() - row.created_at).total_seconds() < SUBMIT_GRACE:
                        self._missing.setdefault(job_id, now)
                    else:
                        self._set(row, "Failed", "SubmitError", "The portal stopped while submitting this job; "
                                  "nothing was created in the cluster. Submit it again.", None, None, utcnow())
                        self._missing.pop(job_id, None)
                    continue
                first = self._missing.setdefault(job_id, now)
                if now - first >= LOST_GRACE:
                    self._set(row, "Lost", "Lost", "The job's Kubernetes objects disappeared.", None, None, None)
                    if row.notify:
                        self._to_notify.add(job_id)
                    self._missing.pop(job_id, None)
                else:
                    self._wake.set()
                continue
            self._missing.pop(job_id, None)
            status = from_cluster(job_obj, pods)
            started = _parse(status.started_at) if status.state != "Pending" else None
            kept_log = self._collect_logs(pods) if status.state in FINAL and row.last_log is None else None
            pods_now = [{"name": p.name, "node": p.node, "phase": p.phase, "restarts": p.restarts, "reason": p.reason}
                        for p in sorted(status.pods, key=lambda p: p.name)]
            self._set(row, status.state, status.reason, status.message, status.exit_code, started,
                      _parse(status.finished_at), kept_log, pods_now if pods_now or not row.pods else None)
            if status.state in FINAL and row.notify:
                self._to_notify.add(job_id)
        db.session.commit()
        self._notify()

    def _notify(self) -> None:
        """Mail the owners of jobs that ended (once: notified_at is set when the mail went out)."""
        if not self._to_notify:
            return
        ids, self._to_notify = self._to_notify, set()
        for job in db.session.execute(select(Job).where(Job.id.in_(ids), Job.notified_at.is_(None),
                                                        Job.state.in_(FINAL))).scalars():
            if notify.job_ended(job):
                db.session.execute(update(Job).where(Job.id == job.id).values(notified_at=utcnow()))
                db.session.commit()
            else:
                self._to_notify.add(job.id)  # the mail server is away: next round

    def _collect_logs(self, pods: list[dict]) -> str:
        """The last lines of every pod of an ending job, so they stay readable after the pods go."""
        parts = []
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            try:
                text = self.cluster.core.read_namespaced_pod_log(pod["metadata"]["name"], self.cluster.settings.namespace,
                                                                 tail_lines=KEEP_LOG_LINES)
            except (ApiException, OSError):
                continue
            parts.append(f"==> {pod['metadata']['name']} <==\n{text}" if len(pods) > 1 else text)
        return "\n".join(parts)

    def _write_events(self, events: dict[str, dict]) -> None:
        if not events:
            return
        by_job: dict[int, list[dict]] = {}
        for ev in events.values():
            by_job.setdefault(_event_job_id(ev), []).append(ev)
        known = set(db.session.execute(select(Job.id).where(Job.id.in_(by_job))).scalars())
        uids = [uid for uid, ev in events.items() if _event_job_id(ev) in known]
        rows = {r.uid: r for r in db.session.execute(select(JobEvent).where(JobEvent.uid.in_(uids))).scalars()}
        for uid in uids:
            ev = events[uid]
            row = rows.get(uid) or JobEvent(uid=uid, job_id=_event_job_id(ev))
            row.type, row.reason = ev.get("type") or "Normal", (ev.get("reason") or "")[:128]
            row.message, row.count = (ev.get("message") or "")[:2000], ev.get("count") or 1
            row.object_name = (ev.get("involvedObject") or {}).get("name", "")[:253]
            row.last_seen = _parse(ev.get("lastTimestamp") or ev.get("eventTime") or ev["metadata"].get("creationTimestamp"))
            db.session.add(row)
        db.session.flush()
        db.session.execute(update(Job).where(Job.id.in_(known)).values(version=Job.version + 1))
        for job_id in known:  # keep the newest KEEP_EVENTS per job
            stale = db.session.execute(select(JobEvent.id).where(JobEvent.job_id == job_id)
                                       .order_by(JobEvent.last_seen.desc(), JobEvent.id.desc()).offset(KEEP_EVENTS)).scalars().all()
            if stale:
                db.session.execute(JobEvent.__table__.delete().where(JobEvent.id.in_(stale)))
        db.session.commit()

    def _set(self, row: Job, state, reason, message, exit_code, started_at, finished_at, last_log=None, pods=None) -> None:
        """Guarded: the row changes only while it is not final (a concurrent Stop wins)."""
        values = {"state": state, "reason": reason or "", "message": (message or "")[:2000]}
        if pods is not None:
            values["pods"] = pods
        if last_log is not None:
            values["last_log"] = last_log
        if exit_code is not None:
            values["exit_code"] = exit_code
        if started_at is not None and row.started_at is None:
            values["started_at"] = started_at
        if finished_at is not None:
            values["finished_at"] = finished_at
        if all(getattr(row, k) == v for k, v in values.items()):
            return
        db.session.execute(update(Job).where(Job.id == row.id, Job.state.notin_(FINAL))
                           .values(version=Job.version + 1, **values))


def _event_job_id(event: dict) -> int:
    """The job an Event is about: its involved object is crater-<id> or one of its pods."""
    name = (event.get("involvedObject") or {}).get("name", "")
    if not name.startswith("crater-"):
        return 0
    head = name[len("crater-"):].split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def _job_id(obj: dict) -> int:
    try:
        return int(obj["metadata"]["labels"]["crater.io/job-id"])
    except (KeyError, TypeError, ValueError):
        return 0
