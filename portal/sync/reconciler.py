"""The reconciler: passes that run on a tick in the leading syncer, each a decision from (now,
rows, what the cluster holds) carried out through the services as the system. Later passes
(queue admission, policies, metrics sampling) join `Reconciler.passes`.

- abandoned submissions: a job still Submitting after `submit_grace` seconds with no Job object
  ends SubmitError (the web process died between the insert and the create);
- orphans: managed objects (by the managed-by label: Jobs, Secrets, Services, Ingresses) whose job
  is final or unknown to the database are deleted once they have been seen as orphans for
  `orphan_grace` seconds, and each deletion is audited. The grace runs from when this replica
  first saw the orphan, so a job that just ended keeps its objects long enough for its logs to
  be kept.
- drains: drains with a grace period (`services.maintenance.run_due`).

A pass that fails (the cluster or the database away) is logged and tried again next tick."""
from __future__ import annotations

import logging
from datetime import timedelta
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from ..cluster.client import ClusterError
from ..extensions import db
from ..services import jobs, maintenance
from ..vocabulary import FINAL_STATES, JobState
from .clock import Clock
from ..cluster.labels import job_id_of
from .writers import JobWriter

log = logging.getLogger("crater.sync")
OWNED_KINDS = ("secrets", "services", "ingresses")


def orphans(now: float, managed: set[int], states: dict[int, str], first_seen: dict[int, float],
            grace: float) -> tuple[list[int], dict[int, float]]:
    """(ids to delete now, orphans still in their grace period with when they were first seen).
    An orphan is a managed object's job id that the database does not know, calls final, or calls
    Queued (a queued job has no cluster objects: these are left from a create that did not
    answer, and a job admitted again within the grace re-uses them)."""
    seen_now = {i: first_seen.get(i, now) for i in managed
                if i and (i not in states or states[i] in FINAL_STATES or states[i] == JobState.QUEUED.value)}
    due = sorted(i for i, since in seen_now.items() if now - since >= grace)
    return due, {i: since for i, since in seen_now.items() if i not in due}


class Reconciler:
    def __init__(self, app, cluster, clock: Clock, job_writer: JobWriter, orphan_grace: float = 300.0,
                 submit_grace: float = 120.0):
        self.app, self.cluster, self.clock, self.job_writer = app, cluster, clock, job_writer
        self.orphan_grace, self.submit_grace = orphan_grace, submit_grace
        self._orphans_seen: dict[int, float] = {}
        self.passes: list[tuple[str, Callable[[], object]]] = [
            ("abandoned-submissions", self.end_abandoned_submissions), ("orphans", self.remove_orphans),
            ("preempted", self.suspend_preempted), ("drains", self.scheduled_drains)]
        self.last_results: dict[str, object] = {}
        self.durations: dict[str, float] = {}

    def tick(self) -> dict[str, object]:
        """Run every pass once (in the app context); a failing pass does not stop the others."""
        with self.app.app_context():
            for name, run in self.passes:
                started = self.clock.monotonic()
                try:
                    self.last_results[name] = run()
                except (ClusterError, SQLAlchemyError) as exc:
                    db.session.rollback()
                    self.last_results[name] = exc
                    log.warning("reconciler pass %s failed: %s", name, getattr(exc, "message", exc))
                finally:
                    self.durations[name] = self.clock.monotonic() - started
            db.session.remove()
        return dict(self.last_results)

    def end_abandoned_submissions(self) -> list[int]:
        now = self.clock.utcnow()
        return jobs.end_abandoned_submissions(now - timedelta(seconds=self.submit_grace),
                                              self.job_writer.job_ids_in_cluster(), now)

    def suspend_preempted(self) -> list[int]:
        """Preempted jobs (Queued again) whose cluster Job still runs: the suspend after the
        admitter's commit did not reach the cluster. Suspended now."""
        in_cluster = self.job_writer.running_job_ids()
        if not in_cluster:
            return []
        states = jobs.states_of(in_cluster)
        done = [i for i in sorted(in_cluster) if states.get(i) == jobs.PREEMPTED_QUEUED and jobs.suspend_preempted(i, self.cluster)]
        return done

    def scheduled_drains(self) -> dict[str, list[int]]:
        """Drains with a grace period: cordon and warn when due, stop the warned jobs when it ends."""
        return maintenance.run_due(self.cluster, self.clock.utcnow())

    def remove_orphans(self) -> list[int]:
        managed = self.job_writer.job_ids_in_cluster()
        for kind in OWNED_KINDS:
            objects, _rv = self.cluster.list(kind)
            managed |= {job_id_of(o) for o in objects}
        managed.discard(0)
        managed -= self.job_writer.logs_due_ids()  # not before its last log lines are kept
        states = jobs.states_of(managed)
        due, self._orphans_seen = orphans(self.clock.monotonic(), managed, states, self._orphans_seen, self.orphan_grace)
        removed = []
        for job_id in due:
            try:
                jobs.remove_orphan(self.cluster, job_id, states.get(job_id))
                removed.append(job_id)
                log.info("removed the cluster objects of job %s (%s)", job_id, states.get(job_id, "unknown"))
            except ClusterError as exc:
                self._orphans_seen[job_id] = self.clock.monotonic() - self.orphan_grace  # due again next tick
                log.warning("could not remove the objects of job %s: %s", job_id, exc.message)
        return removed
