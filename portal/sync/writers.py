"""Writers: turn what the reflectors saw into rows, one writer per table.

- JobWriter (Jobs and Pods -> jobs): state, reason, exit code, pods, times; final states are never
  overwritten (every update is guarded on the row not being final); a job whose Job object is
  gone while the row is active becomes Lost after a grace period, with an end time; a job that
  reaches a final state gets its end-of-job notice in the same transaction (outbox); its pods' last
  log lines are read and kept afterwards by `keep_logs`, on a loop of its own.
- NodeWriter (Nodes and all Pods -> nodes, placements): allocatable, requested, GPU model, readiness,
  cordon and its reason, reservation; which pod (and job) holds what on which node.
- EventWriter (Events -> job_events): the newest events of each job.

Each takes what is dirty, writes it in short transactions, and puts it back when the database
fails, so the next round retries. No cluster call happens inside an open transaction."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Histogram
from sqlalchemy import delete, func, insert, select, tuple_, update

from ..cluster.client import ClusterError, parse_quantity
from ..cluster.status import from_cluster
from ..extensions import db
from ..cluster.labels import CORDON_REASON, GPU_PRODUCT_LABEL, RESERVE_REASON, job_id_of, job_id_of_name, reserved_for
from ..models import ACTIVE_STATES, FINAL_STATES, Job, JobEvent, Node, Placement
from ..services import job_states
from ..vocabulary import JobState, Reason
from .clock import Clock

KEEP_EVENTS = 50  # per job
KEEP_LOG_LINES = 200  # per pod, kept in the DB when a job ends
CHUNK = 500  # ids per IN (...) list
SETTLE_SECONDS = 2.0
# What the job writer reads of a row (not whole ORM objects: it only compares and updates).
ROW_COLUMNS = (Job.id, Job.user_id, Job.notify, Job.state, Job.reason, Job.message, Job.exit_code, Job.started_at,
               Job.finished_at, Job.pods, Job.preemptions)


def event_job_id(event: dict) -> int:
    """The job an Event is about: its involved object is crater-<id> or one of its pods."""
    return job_id_of_name((event.get("involvedObject") or {}).get("name", ""))


def parse_time(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        return datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None


def _chunks(ids):
    ids = list(ids)
    for i in range(0, len(ids), CHUNK):
        yield ids[i:i + CHUNK]


class JobWriter:
    def __init__(self, cluster, clock: Clock, wake: threading.Event, lost_grace: float = 5.0,
                 synced=lambda: True):
        """`synced()` says whether the Jobs and Pods caches are current (listed since this replica
        leads, and no failure since): only then can a missing Job object mean a lost job."""
        self.cluster, self.clock, self.wake, self.lost_grace, self.synced = cluster, clock, wake, lost_grace, synced
        self.lock = threading.Lock()
        self._jobs: dict[int, dict] = {}
        self._pods: dict[int, dict[str, dict]] = {}
        self._dirty: set[int] = set()
        self._sweep = False
        self._missing: dict[int, float] = {}  # job id -> when its Job object was first found missing
        self._unsettled: dict[int, float] = {}  # job id -> when its Job failed before its pods said why
        self._logs_due: dict[int, list[dict]] = {}  # ended job -> its pods, whose last lines are to be kept
        self.logs_wake = threading.Event()
        self.ended_wakes: list[threading.Event] = []  # set whenever a job reached a final state
        self._seen_at: dict[int, float] = {}  # dirty job -> when its first unwritten event arrived
        # Write lag: from a job's first unwritten event to the commit that wrote it (the syncer's
        # metrics collect it; not registered globally, so every Syncer has its own).
        self.lag = Histogram("crater_sync_write_lag_seconds", "From a cluster event to its job's row committed",
                             registry=None, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))

    # ---- listening ----------------------------------------------------------------------------

    def relisted(self, kind: str, objects: list[dict]) -> None:
        with self.lock:
            if kind == "jobs":
                self._jobs = {job_id_of(o): o for o in objects}
            else:
                self._pods = {}
                for obj in objects:
                    self._pods.setdefault(job_id_of(obj), {})[obj["metadata"]["name"]] = obj
            self._dirty |= {job_id_of(o) for o in objects}
            self._sweep = True  # active jobs without objects may be lost
        self.wake.set()

    def changed(self, kind: str, event_type: str, obj: dict) -> None:
        job_id = job_id_of(obj)
        with self.lock:
            if kind == "jobs":
                if event_type == "DELETED":
                    self._jobs.pop(job_id, None)
                else:
                    self._jobs[job_id] = obj
            else:
                pods = self._pods.setdefault(job_id, {})
                if event_type == "DELETED":
                    pods.pop(obj["metadata"]["name"], None)
                else:
                    pods[obj["metadata"]["name"]] = obj
            self._dirty.add(job_id)
            self._seen_at.setdefault(job_id, self.clock.monotonic())
        self.wake.set()

    def mark_all(self) -> None:
        with self.lock:
            self._sweep = True
        self.wake.set()

    def has_job_object(self, job_id: int) -> bool:
        with self.lock:
            return job_id in self._jobs

    def job_ids_in_cluster(self) -> set[int]:
        with self.lock:
            return {i for i in self._jobs if i}

    def running_job_ids(self) -> set[int]:
        """Jobs whose Job object is not suspended (and not finished)."""
        with self.lock:
            return {i for i, obj in self._jobs.items() if i and not (obj.get("spec") or {}).get("suspend")
                    and not any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                                for c in (obj.get("status") or {}).get("conditions") or [])}

    # ---- writing ------------------------------------------------------------------------------

    def write(self) -> None:
        with self.lock:
            dirty, sweep, self._dirty, self._sweep = self._dirty, self._sweep, set(), False
            seen_at = {i: self._seen_at.pop(i) for i in dirty if i in self._seen_at}
        try:
            ended = self._write_states(dirty, sweep)
        except BaseException:
            with self.lock:
                self._dirty |= dirty
                self._sweep = self._sweep or sweep
                for job_id, at in seen_at.items():
                    self._seen_at.setdefault(job_id, at)
            raise
        if seen_at:
            self.lag.observe(max(0.0, self.clock.monotonic() - min(seen_at.values())))
        if ended:
            with self.lock:
                self._logs_due.update(ended)
            self.logs_wake.set()
            for wake in self.ended_wakes:  # quota freed: the admitter looks at once
                wake.set()

    def _write_states(self, dirty: set[int], sweep: bool) -> dict[int, list[dict]]:
        """One transaction: states of the dirty jobs; returns the jobs that just ended (with their
        pods), whose logs are read once this transaction has committed."""
        now = self.clock.monotonic()
        candidates = {i for i in dirty if i} | set(self._missing)
        if sweep:
            candidates |= set(db.session.execute(select(Job.id).where(Job.state.in_(ACTIVE_STATES))).scalars())
        ended: dict[int, list[dict]] = {}
        if not candidates:
            return ended
        seen = set()
        for chunk in _chunks(sorted(candidates)):  # rows locked in id order: fewer deadlocks with other writers
            for row in db.session.execute(select(*ROW_COLUMNS).where(Job.id.in_(chunk)).order_by(Job.id)):
                seen.add(row.id)
                self._write_one(row, now, ended)
        for job_id in candidates - seen:  # no such row (any more)
            self._missing.pop(job_id, None)
        db.session.commit()
        return ended

    def _write_one(self, row, now: float, ended: dict) -> None:
        if row.state in FINAL_STATES or row.state == JobState.QUEUED.value:
            # A queued job has no cluster objects of its own: any found are leftovers of an
            # admission whose create did not answer, which the orphan pass removes.
            self._missing.pop(row.id, None)
            return
        with self.lock:
            job_obj = self._jobs.get(row.id)
            pods = list(self._pods.get(row.id, {}).values())
        if job_obj is None:
            if row.state in (JobState.SUBMITTING.value, JobState.QUEUED.value):
                return  # being created right now (the reconciler ends abandoned ones), or not yet
            if not self.synced():
                self._missing.pop(row.id, None)  # the cache may just not know it yet: no verdict
                return
            first = self._missing.setdefault(row.id, now)
            if now - first >= self.lost_grace:
                self._missing.pop(row.id, None)
                self._set(row, JobState.LOST.value, Reason.LOST, "The job's Kubernetes objects disappeared.", None, None,
                          self.clock.utcnow())
            return  # else: looked at again within a second (the writer's loop runs at least that often)
        self._missing.pop(row.id, None)
        status = from_cluster(job_obj, pods)
        if status.state == JobState.FAILED.value and status.reason == Reason.FAILED:
            # The Job's Failed condition can arrive before the pod update that says why (two
            # watches; the pod may not even be in the cache yet): a final state is never
            # rewritten, so wait briefly for the reason.
            first = self._unsettled.setdefault(row.id, now)
            if now - first < SETTLE_SECONDS:
                with self.lock:
                    self._dirty.add(row.id)  # again with the pod's next event, or within a second
                return
        self._unsettled.pop(row.id, None)
        started = parse_time(status.started_at) if status.state != JobState.PENDING.value else None
        finished = parse_time(status.finished_at)
        if status.state in FINAL_STATES and finished is None:
            finished = self.clock.utcnow()
        pods_now = [{"name": p.name, "node": p.node, "phase": p.phase, "restarts": p.restarts, "reason": p.reason}
                    for p in sorted(status.pods, key=lambda p: p.name)]
        if self._set(row, status.state, status.reason, status.message, status.exit_code, started, finished,
                     pods_now if pods_now or not row.pods else None) and status.state in FINAL_STATES:
            ended[row.id] = pods

    def _set(self, row, state, reason, message, exit_code, started_at, finished_at, pods=None) -> bool:
        """Guarded: the row changes only while it is not final (a concurrent Stop wins). True when
        this call moved the job into a final state (its notice is queued in the same transaction)."""
        values = {"state": state, "reason": reason or "", "message": (message or "")[:2000]}
        if pods is not None:
            values["pods"] = pods
        if exit_code is not None:
            values["exit_code"] = exit_code
        if started_at is not None and row.started_at is None:
            values["started_at"] = started_at
        if finished_at is not None and state in FINAL_STATES:
            values["finished_at"] = finished_at
        if all(getattr(row, k) == v for k, v in values.items()):
            return False
        return job_states.follow_cluster(row, values)[1]

    def keep_logs(self, limit: int = 50) -> int:
        """Read and keep the last log lines of jobs that ended (up to `limit` jobs a call; the
        syncer's log loop calls it apart from the state writes, which a slow log read would
        otherwise hold up). Returns how many jobs it kept logs for."""
        with self.lock:
            batch = dict(list(self._logs_due.items())[:limit])
            for job_id in batch:
                del self._logs_due[job_id]
        kept = {job_id: self._collect_logs(pods) for job_id, pods in batch.items() if pods}
        try:
            for job_id, text in kept.items():
                db.session.execute(update(Job).where(Job.id == job_id, Job.last_log.is_(None)).values(last_log=text))
            db.session.commit()
        except BaseException:
            with self.lock:
                self._logs_due.update({i: batch[i] for i in kept})
            raise
        return len(kept)

    def logs_pending(self) -> int:
        return len(self._logs_due)

    def logs_due_ids(self) -> set[int]:
        with self.lock:
            return set(self._logs_due)

    def busy(self) -> bool:
        """Changes wait to be written."""
        return bool(self._dirty)

    def _collect_logs(self, pods: list[dict]) -> str:
        """The last lines of every pod of an ending job, so they stay readable after the pods go."""
        parts = []
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            try:
                text = self.cluster.log(pod["metadata"]["name"], tail_lines=KEEP_LOG_LINES)
            except ClusterError:
                continue
            parts.append(f"==> {pod['metadata']['name']} <==\n{text}" if len(pods) > 1 else text)
        return "\n".join(parts)


class NodeWriter:
    """Nodes and every pod that holds resources on one -> the nodes and placements tables. A dirty
    node has its row and its placements rewritten from the cache in one transaction."""

    def __init__(self, gpu_resource: str, clock: Clock, wake: threading.Event):
        self.gpu_resource, self.clock, self.wake = gpu_resource, clock, wake
        self.lock = threading.Lock()
        self._nodes: dict[str, dict] = {}
        self._pod_usage: dict[tuple[str, str], Holding] = {}  # (namespace, pod) -> what it holds where
        self._dirty: set[str] = set()

    def relisted(self, kind: str, objects: list[dict]) -> None:
        with self.lock:
            if kind == "nodes":
                self._dirty |= set(self._nodes) | {o["metadata"]["name"] for o in objects}
                self._nodes = {o["metadata"]["name"]: o for o in objects}
            else:
                self._dirty |= {usage.node for usage in self._pod_usage.values()}
                self._pod_usage = {}
                for obj in objects:
                    self._account_pod("ADDED", obj)
        self.wake.set()

    def changed(self, kind: str, event_type: str, obj: dict) -> None:
        with self.lock:
            if kind == "nodes":
                name = obj["metadata"]["name"]
                if event_type == "DELETED":
                    self._nodes.pop(name, None)
                else:
                    self._nodes[name] = obj
                self._dirty.add(name)
            else:
                self._account_pod(event_type, obj)
        self.wake.set()

    def _account_pod(self, event_type: str, pod: dict) -> None:
        """Track what a pod holds on its node (nothing once it has ended)."""
        key = (pod["metadata"].get("namespace", ""), pod["metadata"]["name"])
        before = self._pod_usage.pop(key, None)
        if before:
            self._dirty.add(before.node)
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase") or ""
        if event_type == "DELETED" or not node or phase in ("Succeeded", "Failed"):
            return
        gpus = cpu = mem = 0
        for c in (pod.get("spec") or {}).get("containers") or []:
            requests = (c.get("resources") or {}).get("requests") or {}
            try:
                gpus += int(parse_quantity(requests.get(self.gpu_resource, 0)))
                cpu += int(parse_quantity(requests.get("cpu", 0)) * 1000)
                mem += int(parse_quantity(requests.get("memory", 0)) / (1024 * 1024))
            except ValueError:
                continue
        self._pod_usage[key] = Holding(node, gpus, cpu, mem, job_id_of(pod), phase)
        self._dirty.add(node)

    def write(self) -> None:
        with self.lock:
            names, self._dirty = self._dirty, set()
            nodes = {n: self._nodes.get(n) for n in names}
            held = {key: usage for key, usage in self._pod_usage.items() if usage.node in names}
        if not names:
            return
        try:
            self._write(nodes, held)
        except BaseException:
            with self.lock:
                self._dirty |= names
            raise

    def _write(self, nodes: dict, held: dict) -> None:
        names = sorted(nodes)
        rows = {}
        for chunk in _chunks(names):
            rows.update({r.name: r for r in db.session.execute(select(Node).where(Node.name.in_(chunk))).scalars()})
        known_jobs = set()
        job_ids = sorted({h.job_id for h in held.values() if h.job_id})
        for chunk in _chunks(job_ids):
            known_jobs |= set(db.session.execute(select(Job.id).where(Job.id.in_(chunk))).scalars())
        per_node: dict[str, list] = {name: [] for name in names}
        for (namespace, pod), h in held.items():
            per_node[h.node].append(dict(namespace=namespace, pod=pod, node=h.node, gpus=h.gpus, cpu_milli=h.cpu,
                                         memory_mib=h.mem, phase=h.phase,
                                         job_id=h.job_id if h.job_id in known_jobs else None))
        for chunk in _chunks(names):
            db.session.execute(delete(Placement).where(Placement.node.in_(chunk)))
        # A pod that moved (or was seen on a node that is not dirty yet) is only ever in one row.
        pods = [p for name in names for p in per_node[name]]
        for i in range(0, len(pods), CHUNK):
            part = pods[i:i + CHUNK]
            db.session.execute(delete(Placement).where(tuple_(Placement.namespace, Placement.pod).in_(
                [(p["namespace"], p["pod"]) for p in part])))
            db.session.execute(insert(Placement), part)
        stamp = self.clock.utcnow()
        for name, obj in nodes.items():
            row = rows.get(name)
            if obj is None:
                if row is not None:
                    db.session.delete(row)
                continue
            if row is None:
                row = Node(name=name)
                db.session.add(row)
            self._fill(row, obj, per_node[name])
            row.updated_at, row.version = stamp, (row.version or 0) + 1
        db.session.commit()

    def _fill(self, row: Node, obj: dict, placed: list[dict]) -> None:
        status, meta, spec = obj.get("status") or {}, obj["metadata"], obj.get("spec") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        allocatable = status.get("allocatable") or {}
        row.gpu_model = labels.get(GPU_PRODUCT_LABEL, "")
        row.gpu_memory_mib = _int_label(labels.get("nvidia.com/gpu.memory"))
        row.gpus = int(parse_quantity(allocatable.get(self.gpu_resource, 0)))
        row.cpu_milli = int(parse_quantity(allocatable.get("cpu", 0)) * 1000)
        row.memory_mib = int(parse_quantity(allocatable.get("memory", 0)) / (1024 * 1024))
        row.gpus_requested = sum(p["gpus"] for p in placed)
        row.cpu_requested_milli = sum(p["cpu_milli"] for p in placed)
        row.memory_requested_mib = sum(p["memory_mib"] for p in placed)
        row.pods_count = len(placed)
        row.jobs_count = len({p["job_id"] for p in placed if p["job_id"]})
        conditions = status.get("conditions") or []
        row.ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        row.unschedulable = bool(spec.get("unschedulable"))
        row.cordon_reason = (annotations.get(CORDON_REASON, "") if row.unschedulable else "")[:500]
        taints = spec.get("taints") or []
        row.reserved_for = reserved_for(taints)
        row.reserve_reason = (annotations.get(RESERVE_REASON, "") if row.reserved_for else "")[:500]
        row.labels, row.taints = labels, taints
        row.capacity, row.allocatable = status.get("capacity") or {}, allocatable
        row.conditions = [{k: c.get(k) for k in ("type", "status", "reason", "message")} for c in conditions]


@dataclass(frozen=True)
class Holding:
    node: str
    gpus: int
    cpu: int
    mem: int
    job_id: int
    phase: str


def _int_label(value) -> int:
    try:
        return max(0, int(str(value)))
    except (TypeError, ValueError):
        return 0


class EventWriter:
    def __init__(self, wake: threading.Event):
        self.wake = wake
        self.lock = threading.Lock()
        self._events: dict[str, dict] = {}  # Event uid -> event, waiting to be written

    def relisted(self, kind: str, objects: list[dict]) -> None:
        with self.lock:
            self._events.update({o["metadata"]["uid"]: o for o in objects if event_job_id(o)})
        self.wake.set()

    def changed(self, kind: str, event_type: str, obj: dict) -> None:
        if event_type != "DELETED" and event_job_id(obj) and (obj.get("metadata") or {}).get("uid"):
            with self.lock:
                self._events[obj["metadata"]["uid"]] = obj
            self.wake.set()

    def write(self) -> None:
        with self.lock:
            events, self._events = self._events, {}
        if not events:
            return
        try:
            self._write(events)
        except BaseException:
            with self.lock:
                self._events = {**events, **self._events}
            raise

    def _write(self, events: dict[str, dict]) -> None:
        by_job: dict[int, list[dict]] = {}
        for ev in events.values():
            by_job.setdefault(event_job_id(ev), []).append(ev)
        known = set()
        for chunk in _chunks(by_job):
            known |= set(db.session.execute(select(Job.id).where(Job.id.in_(chunk))).scalars())
        uids = [uid for uid, ev in events.items() if event_job_id(ev) in known]
        rows = {}
        for chunk in _chunks(uids):
            rows.update({r.uid: r for r in db.session.execute(select(JobEvent).where(JobEvent.uid.in_(chunk))).scalars()})
        for uid in uids:
            ev = events[uid]
            row = rows.get(uid) or JobEvent(uid=uid, job_id=event_job_id(ev))
            row.type, row.reason = ev.get("type") or "Normal", (ev.get("reason") or "")[:128]
            row.message, row.count = (ev.get("message") or "")[:2000], ev.get("count") or 1
            row.object_name = (ev.get("involvedObject") or {}).get("name", "")[:253]
            row.last_seen = parse_time(ev.get("lastTimestamp") or ev.get("eventTime") or ev["metadata"].get("creationTimestamp"))
            db.session.add(row)
        db.session.flush()
        job_states.touch(known)
        grown = {event_job_id(events[uid]) for uid in uids if uid not in rows}
        for chunk in _chunks(sorted(grown)):  # keep the newest KEEP_EVENTS of each job that got new ones
            rank = func.row_number().over(partition_by=JobEvent.job_id,
                                          order_by=(JobEvent.last_seen.desc(), JobEvent.id.desc())).label("rank")
            ranked = select(JobEvent.id, rank).where(JobEvent.job_id.in_(chunk)).subquery()
            stale = db.session.execute(select(ranked.c.id).where(ranked.c.rank > KEEP_EVENTS)).scalars().all()
            if stale:
                db.session.execute(JobEvent.__table__.delete().where(JobEvent.id.in_(stale)))
        db.session.commit()
