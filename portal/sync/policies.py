"""The fair-use policies, run by the leading syncer's reconciler. Each is a pure decision from (now,
jobs, metrics, warnings, parameters) to actions, carried out through the services as the system,
audited, and logged as a run (what it looked at, whom it warned, what it stopped):

- idle_gpu: a running GPU job whose GPUs all stayed at or below the type's threshold for the
  type's window is warned (stopped at warned + grace); it is stopped then unless it became busy
  (the warning is cleared) or an admin locked it. One Prometheus query per pass: the maximum of
  each pod's GPUs per step over the longest window.
- time_limit_warning: a running job hours_before its time limit is warned once (jobs whose whole
  limit is shorter than that lead time are not: it would come at their start).
- pending_interactive: a JupyterLab job still pending after N minutes is stopped (PendingTooLong).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from ..cluster.client import ClusterError
from ..extensions import db
from ..metrics import UTIL, MetricsError, Prometheus, epoch
from ..models import Job, JobState
from ..services import fair_use, jobs, policies
from ..services.context import SYSTEM
from ..services.errors import Conflict, NotFound
from ..vocabulary import JobType, Reason

log = logging.getLogger("crater.sync")


@dataclass(frozen=True)
class RunningJob:
    id: int
    job_type: str
    state: str
    gpus: int
    pods: tuple[str, ...]
    created_at: datetime
    started_at: datetime | None
    time_limit_seconds: int
    locked_until: datetime | None


@dataclass
class Actions:
    warn: list[tuple[int, datetime]] = field(default_factory=list)  # (job, act_at)
    stop: list[int] = field(default_factory=list)
    clear: list[int] = field(default_factory=list)
    looked_at: int = 0


def _locked(job: RunningJob, now: datetime) -> bool:
    return job.locked_until is not None and job.locked_until > now


def peak(series: list[tuple[float, float]], after: float, until: float) -> float | None:
    values = [v for t, v in series if after < t <= until]
    return max(values) if values else None


def idle_decisions(now: datetime, running: list[RunningJob], util: dict[str, list[tuple[float, float]]],
                   warnings: dict[int, object], policy: policies.Policy, step: float) -> Actions:
    """Pure. `util`: pod -> [(time, the max of its GPUs over the step before)]; `warnings`: job ->
    its idle warning (warned_at, act_at)."""
    out = Actions()
    t_now = epoch(now)
    for job in running:
        if job.state != JobState.RUNNING.value or not job.gpus or job.started_at is None:
            continue
        out.looked_at += 1
        warning = warnings.get(job.id)
        if _locked(job, now):
            if warning is not None:
                out.clear.append(job.id)
            continue
        threshold = policy.per_type(job.job_type, "threshold_percent")
        window = policy.per_type(job.job_type, "window_minutes") * 60
        points = sorted(p for pod in job.pods for p in util.get(pod, []))
        if warning is not None:
            since = peak(points, epoch(warning.warned_at), t_now)
            if since is not None and since > threshold:
                out.clear.append(job.id)  # busy again
            elif now >= warning.act_at:
                out.stop.append(job.id)
            continue
        if epoch(job.started_at) > t_now - window or not points:
            continue  # has not run the whole window yet, or no metrics (unknown is not idle)
        if points[0][0] > t_now - window + 2 * step:
            continue  # the metrics do not cover the window
        most = peak(points, t_now - window, t_now)
        if most is not None and most <= threshold:
            out.warn.append((job.id, now + timedelta(minutes=policy.per_type(job.job_type, "grace_minutes"))))
    return out


def time_limit_decisions(now: datetime, running: list[RunningJob], warned: set[int], hours_before: float) -> Actions:
    out = Actions()
    for job in running:
        if job.state != JobState.RUNNING.value or job.started_at is None or not job.time_limit_seconds:
            continue
        out.looked_at += 1
        if job.time_limit_seconds <= hours_before * 3600:
            continue  # a limit shorter than the lead time: the warning would only repeat it at the start
        deadline = job.started_at + timedelta(seconds=job.time_limit_seconds)
        if job.id not in warned and now < deadline <= now + timedelta(hours=hours_before):
            out.warn.append((job.id, deadline))
    return out


def pending_decisions(now: datetime, active: list[RunningJob], minutes: float) -> Actions:
    out = Actions()
    for job in active:
        if job.job_type != JobType.JUPYTER or job.state != JobState.PENDING.value:
            continue
        out.looked_at += 1
        if not _locked(job, now) and job.created_at <= now - timedelta(minutes=minutes):
            out.stop.append(job.id)
    return out


class PolicyPasses:
    """Runs every policy that is due (every `every` seconds, or at once after an admin's "run
    now"), unless suspended."""

    def __init__(self, cluster, prometheus: Prometheus, clock, namespace: str, every: float = 60.0, runner: str = ""):
        self.cluster, self.prometheus, self.clock, self.namespace, self.every = cluster, prometheus, clock, namespace, every
        self.runner = runner
        self._last: dict[str, float] = {}
        self.actions_total: dict[tuple[str, str], int] = {}  # (policy, warn|stop|clear) -> jobs, for the metrics

    def passes(self):
        return [("policies", self.run_due)]

    def _due(self, name: str) -> bool:
        requested = policies.take_run_request(name)
        last = self._last.get(name)
        return requested or last is None or self.clock.monotonic() - last >= self.every

    def run_due(self) -> dict[str, Actions]:
        fair_use.cancel_requests_of_ended_jobs(self.clock.utcnow())
        fair_use.clear_warnings_of_ended_jobs()
        done = {}
        for name, run in (("idle_gpu", self.idle_gpu), ("time_limit_warning", self.time_limit_warning),
                          ("pending_interactive", self.pending_interactive)):
            policy = policies.get(name)
            if policy.suspended or not self._due(name):
                continue
            self._last[name] = self.clock.monotonic()
            started, t0 = self.clock.utcnow(), time.perf_counter()
            error = ""
            try:
                done[name] = actions = run(policy)
            except MetricsError as exc:
                actions, error = Actions(), exc.message
                log.warning("policy %s skipped: %s", name, exc.message)
            db.session.rollback()
            for action, acted in (("warn", actions.warn), ("stop", actions.stop), ("clear", actions.clear)):
                self.actions_total[(name, action)] = self.actions_total.get((name, action), 0) + len(acted)
            policies.record_run(name, started, time.perf_counter() - t0, actions.looked_at, [j for j, _a in actions.warn],
                                actions.stop, actions.clear, error, runner=self.runner)
        return done

    def _active(self) -> list[RunningJob]:
        rows = db.session.execute(select(Job.id, Job.job_type, Job.state, Job.gpus, Job.pods, Job.created_at, Job.started_at,
                                         Job.time_limit_seconds, Job.locked_until)
                                  .where(Job.state.in_((JobState.PENDING.value, JobState.RUNNING.value)))).all()
        db.session.commit()
        return [RunningJob(r.id, r.job_type, r.state, r.gpus, tuple(p.get("name", "") for p in r.pods or []), r.created_at,
                           r.started_at, r.time_limit_seconds or 0, r.locked_until) for r in rows]

    def utilisation(self, seconds: float) -> tuple[dict[str, list[tuple[float, float]]], float]:
        """One query: per pod of the jobs namespace, the max of its GPUs over each step."""
        settings = self.prometheus.settings
        end = epoch(self.clock.utcnow())
        step = max(settings.step, math.ceil(seconds / 120))  # ~120 points a pod: max_over_time misses no spike
        query = (f'max by ({settings.pod_label}) (max_over_time({UTIL}{{{settings.namespace_label}="{self.namespace}"}}'
                 f'[{step:g}s]))')
        answer = self.prometheus.range(query, end - seconds - step, end, step)
        return {labels.get(settings.pod_label, ""): [(t, v) for t, v in points if v == v] for labels, points in answer}, step

    def idle_gpu(self, policy: policies.Policy) -> Actions:
        now = self.clock.utcnow()
        running = [j for j in self._active() if j.state == JobState.RUNNING.value and j.gpus]
        if not running:
            return Actions()
        if not self.prometheus.settings.enabled:
            raise MetricsError("Prometheus is not configured: idle GPUs cannot be seen.")
        warnings = {job_id: w for (job_id, kind), w in fair_use.warnings_of([j.id for j in running]).items() if kind == "idle_gpu"}
        longest = max(policy.per_type(j.job_type, "window_minutes") + policy.per_type(j.job_type, "grace_minutes")
                      for j in running) * 60
        util, step = self.utilisation(longest)
        actions = idle_decisions(now, running, util, warnings, policy, step)
        by_id = {j.id: j for j in running}
        for job_id in actions.clear:
            fair_use.clear_warning(job_id, "idle_gpu", "locked" if _locked(by_id[job_id], now) else "busy again")
        fair_use.warn_many(actions.warn, "idle_gpu", now)
        stopped = []
        for job_id in actions.stop:
            job = by_id[job_id]
            minutes = policy.per_type(job.job_type, "window_minutes")
            threshold = policy.per_type(job.job_type, "threshold_percent")
            if self._stop(job_id, Reason.IDLE_GPU, (
                    f"Its GPUs stayed at or below {threshold:g} % utilisation for {minutes:g} minutes and did not become "
                    f"busy in the {policy.per_type(job.job_type, 'grace_minutes'):g}-minute grace after the warning.")):
                stopped.append(job_id)
                fair_use.clear_warning(job_id, "idle_gpu", "stopped")
        actions.stop = stopped
        return actions

    def time_limit_warning(self, policy: policies.Policy) -> Actions:
        now = self.clock.utcnow()
        running = [j for j in self._active() if j.state == JobState.RUNNING.value]
        warned = {job_id for (job_id, kind) in fair_use.warnings_of([j.id for j in running]) if kind == "time_limit"}
        actions = time_limit_decisions(now, running, warned, policy.params["hours_before"])
        fair_use.warn_many(actions.warn, "time_limit", now)
        return actions

    def pending_interactive(self, policy: policies.Policy) -> Actions:
        now = self.clock.utcnow()
        minutes = policy.params["minutes"]
        actions = pending_decisions(now, self._active(), minutes)
        actions.stop = [j for j in actions.stop if self._stop(
            j, Reason.PENDING_TOO_LONG, f"It waited {minutes:g} minutes for resources; interactive jobs do not wait longer.")]
        return actions

    def _stop(self, job_id: int, reason: str, message: str) -> bool:
        try:
            jobs.stop_job(SYSTEM, job_id, self.cluster, reason=reason, message=message, tell_owner=True)
            return True
        except (Conflict, NotFound) as exc:
            log.info("policy could not stop job %s: %s", job_id, exc.message)
            return False
        except ClusterError as exc:
            log.warning("policy could not stop job %s: %s", job_id, exc.message)
            return False
