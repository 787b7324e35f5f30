"""The syncer (`crater sync`): keeps the database's view of the cluster current and runs the
reconciler's passes. Made of small pieces, each readable and testable alone:

- a lease elector (lease.py): one replica acts, the others wait; a replica that cannot renew stops
  acting before another can take over;
- one reflector per watched kind (reflector.py): managed Jobs, Pods and Events in the jobs
  namespace, all Nodes and all Pods (other workloads hold GPUs too); they run while this replica
  leads;
- writers per table (writers.py): jobs, nodes, job events, woken by what the reflectors saw, and
  the kept log lines of ended jobs on a loop of their own;
- the admitter (admitter.py): the queue's admission passes, woken when a job ends;
- the reconciler (reconciler.py): abandoned submissions and orphaned cluster objects, on a tick,
  and the metrics passes (gpu.py): GPU devices from the DCGM metrics, jobs' GPU summaries and usage;
- the outbox sender (services.notify.deliver_due): mail with retries, never twice;
- a heartbeat row, so pages can say "cluster data is N s old".

Every loop shares its plumbing (loop.py: wake-ups, the app context, backing off, rolling back)
and runs under the supervisor (supervisor.py): a failing loop is logged and resumed; one
that keeps failing stops the syncer, and `crater sync` exits non-zero. Time comes from the
injected clock (clock.py), the only thing tests fake.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from ..models import SyncHeartbeat
from ..services import notify
from ..services.scheduling.state import QueueSettings
from ..metrics import MetricsSettings
from .clock import Clock
from .admitter import Admitter
from .gpu import GpuPasses
from .policies import PolicyPasses
from .lease import LeaseElector
from .loop import Loop
from .reconciler import Reconciler
from .reflector import Reflector
from .supervisor import Supervisor
from .writers import EventWriter, JobWriter, NodeWriter

log = logging.getLogger("crater.sync")
LOG_BATCH = 10  # ended jobs whose logs are read between two looks at the job writer
OUTBOX_BATCH = 20  # notices per round; a full round goes on at once


@dataclass(frozen=True)
class SyncSettings:
    lease_seconds: float = 15.0
    watch_timeout: int = 300
    reconcile_seconds: float = 10.0
    orphan_grace: float = 300.0
    submit_grace: float = 120.0
    lost_grace: float = 5.0
    outbox_seconds: float = 2.0

    @classmethod
    def from_config(cls, config) -> SyncSettings:
        return cls(lease_seconds=config["LEASE_SECONDS"], watch_timeout=int(config["WATCH_TIMEOUT"]),
                   reconcile_seconds=config["RECONCILE_SECONDS"], orphan_grace=config["ORPHAN_GRACE_SECONDS"])


class Syncer:
    def __init__(self, app, cluster, identity: str = "", settings: SyncSettings | None = None, clock: Clock | None = None):
        self.app, self.cluster = app, cluster
        self.settings = settings or SyncSettings.from_config(app.config)
        self.clock = clock or Clock()
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stop_event = threading.Event()
        self.elector = LeaseElector(cluster, self.identity, self.clock, self.settings.lease_seconds)
        self.reflectors = {kind: Reflector(kind, cluster, self.clock, self.stop_event, self.settings.watch_timeout,
                                           active=self.leading) for kind in ("jobs", "pods", "events", "nodes", "allpods")}
        # Leading again (the API is back) cuts every reflector's backoff short.
        self.elector.on_gain = lambda: [r.retry_now.set() for r in self.reflectors.values()]
        self.jobs = JobWriter(cluster, self.clock, threading.Event(), lost_grace=self.settings.lost_grace,
                              synced=self.jobs_synced)
        self.nodes = NodeWriter(cluster.settings.gpu_resource, self.clock, threading.Event())
        self.events = EventWriter(threading.Event())
        for kind, listener in (("jobs", self.jobs), ("pods", self.jobs), ("events", self.events), ("nodes", self.nodes),
                               ("allpods", self.nodes)):
            self.reflectors[kind].listeners.append(listener)
        self.reconciler = Reconciler(app, cluster, self.clock, self.jobs, self.settings.orphan_grace,
                                     self.settings.submit_grace)
        self.gpu = GpuPasses(MetricsSettings.from_config(app.config), self.clock, cluster.settings.namespace,
                             refresh_seconds=app.config.get("USAGE_REFRESH_SECONDS", 300.0))
        self.reconciler.passes += self.gpu.passes()
        self.policies = PolicyPasses(cluster, self.gpu.prometheus, self.clock, cluster.settings.namespace,
                                     every=app.config.get("POLICY_SECONDS", 60.0), runner=self.identity)
        self.reconciler.passes += self.policies.passes()
        self.admitter = Admitter(app, cluster, self.clock, QueueSettings.from_config(app.config),
                                 every=app.config.get("QUEUE_SECONDS", 1.0))
        self.jobs.ended_wakes.append(self.admitter.wake)
        self.supervisor = Supervisor(self.clock, self.stop_event)
        self.write_failures = 0

    def leading(self) -> bool:
        return self.elector.leading() and not self.stop_event.is_set()

    def jobs_synced(self) -> bool:
        """The Jobs and Pods caches are current: the reconciler and the Lost verdict need that."""
        return self.reflectors["jobs"].synced.is_set() and self.reflectors["pods"].synced.is_set()

    # ---- life cycle -----------------------------------------------------------------------

    def start(self) -> Syncer:
        spawn = self.supervisor.spawn
        spawn("sync-lease", lambda: self.elector.run(self.stop_event, on_lead=self._heartbeat))
        for kind, reflector in self.reflectors.items():
            spawn(f"sync-{kind}", reflector.run)
        for name, writer in (("jobs", self.jobs), ("nodes", self.nodes), ("events", self.events)):
            # Gaining the lead writes every job once (what happened meanwhile).
            self._loop(f"sync-write-{name}", writer.write, wake=writer.wake, on_failure=self._count_write_failure,
                       on_activate=self.jobs.mark_all if writer is self.jobs else None)
        self._loop("sync-logs", self._keep_logs, wake=self.jobs.logs_wake)
        synced = lambda: self.leading() and self.jobs_synced()  # noqa: E731
        self._loop("sync-reconciler", self.reconciler.tick, every=self.settings.reconcile_seconds, active=synced)
        self._loop("sync-admitter", self.admitter.tick, every=self.admitter.every, wake=self.admitter.wake, active=synced)
        self._loop("sync-outbox", self._send_mail, every=self.settings.outbox_seconds)
        return self

    def _loop(self, name: str, step, every: float = 1.0, active=None, **kw) -> None:
        loop = Loop(name, self.app, self.clock, self.stop_event, step, every, active=active or self.leading, **kw)
        self.supervisor.spawn(name, loop.run)

    def stop(self) -> None:
        """Stop working and hand the lease back. Reflector threads may still be blocked in a read
        until their timeout; they only touch memory and end at the next event or timeout."""
        self.stop_event.set()
        for writer in (self.jobs, self.nodes, self.events):
            writer.wake.set()
        self.jobs.logs_wake.set()
        self.admitter.wake.set()
        for reflector in self.reflectors.values():
            reflector.retry_now.set()
        for thread in self.supervisor.threads:
            if not thread.name.startswith("sync-") or thread.name[5:] not in self.reflectors:
                thread.join(10)
        self.elector.release()

    @property
    def failed(self) -> str:
        return self.supervisor.failed

    def healthy(self) -> bool:
        return self.supervisor.healthy()

    # ---- the loops ---------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        try:
            with self.app.app_context():
                row = db.session.get(SyncHeartbeat, 1)
                if row is None:
                    row = SyncHeartbeat(id=1)
                    db.session.add(row)
                row.holder, row.beat_at = self.identity, self.clock.utcnow()
                db.session.commit()
                db.session.remove()
        except SQLAlchemyError as exc:
            log.warning("heartbeat not written: %s", type(exc).__name__)

    def write_once(self, *writers) -> None:
        """One round of the given writers (all of them by default), in the app context."""
        with self.app.app_context():
            try:
                for writer in writers or (self.jobs, self.nodes, self.events):
                    writer.write()
            except BaseException:
                db.session.rollback()
                raise
            finally:
                db.session.remove()

    def _keep_logs(self) -> bool:
        """Keep the last log lines of a batch of ended jobs (cluster reads, then a short write).
        States come first: a batch waits (up to a second) while the job writer has work, so a
        burst of ending jobs is recorded at once and their logs follow. True: more are due."""
        if not self.jobs.logs_pending():
            return False
        yield_until = self.clock.monotonic() + 1.0
        while self.jobs.busy() and self.clock.monotonic() < yield_until and not self.stop_event.is_set():
            self.clock.wait(self.stop_event, 0.05)
        self.jobs.keep_logs(limit=LOG_BATCH)
        return self.jobs.logs_pending() > 0

    def _send_mail(self) -> bool:
        """One batch of the outbox; True: a full batch went out (a backlog), the next at once."""
        sent, failed = notify.deliver_due(notify.MailSettings.from_config(self.app.config), self.clock.utcnow(),
                                          self.identity, limit=OUTBOX_BATCH)
        return sent + failed >= OUTBOX_BATCH and not failed

    def _count_write_failure(self, _exc) -> None:
        self.write_failures += 1
