"""The admitter: the queue's loop in the leading syncer. It runs an admission pass whenever a job
ends (the job writer wakes it) and at least every CRATER_QUEUE_SECONDS (quotas raised by an admin,
caps changed, jobs cancelled or queued by the web), creates the admitted jobs' cluster objects
through services.jobs.launch (the web submission's own steps; a job the cluster cannot take now
goes back to the head of its queue, and admission pauses, 1 s doubling to 30 s), and on slower timers brings the
members' decayed usage up to date and re-estimates the queued jobs' starts (only for accounts
whose jobs changed, or every few minutes, within a time budget per round).

The decisions come from an AdmissionBackend (services.scheduling.schedule.PortalAdmission by default); which accounts are
looked at again is decided there too (fingerprints)."""
from __future__ import annotations

import logging
import threading


from ..extensions import db
from ..services import jobs
from ..services.scheduling import schedule
from ..services.scheduling.state import QueueSettings
from .clock import Clock

log = logging.getLogger("crater.sync")
SAMPLE_SECONDS = 30.0
ESTIMATE_SECONDS = 5.0
MAX_BACKOFF = 30.0  # the longest wait after the cluster could not take admitted jobs


class Admitter:
    def __init__(self, app, cluster, clock: Clock, settings: QueueSettings, every: float = 1.0,
                 backend: schedule.AdmissionBackend | None = None):
        self.app, self.cluster, self.clock, self.settings, self.every = app, cluster, clock, settings, every
        self.backend = backend or schedule.PortalAdmission(settings)
        self.wake = threading.Event()
        self.estimates = schedule.EstimateSchedule(settings)
        self._sampled = self._estimated = float("-inf")
        self.last_admitted: list[int] = []
        self.admitted_total = 0
        self._backoff, self._paused_until = 0.0, float("-inf")
        self.durations: dict[str, float] = {}

    def run_pass(self) -> list[int]:
        """Admit what can start now and create their cluster objects (in the app context)."""
        if self.clock.monotonic() < self._paused_until:
            return []
        with self.app.app_context():
            try:
                started = self.clock.monotonic()
                admitted = self.backend.admission_pass(self.clock.utcnow())
                self.durations["admission"] = self.clock.monotonic() - started
                # Preempted jobs give their GPUs back first (suspended with their grace), then the
                # jobs that reclaimed them are created; a suspend that fails now is done again by
                # the reconciler (the job is Queued, its Job still running).
                for job_id in getattr(self.backend, "last_preempted", []):
                    jobs.suspend_preempted(job_id, self.cluster)
                for job_id in getattr(self.backend, "last_reclassified", []):
                    jobs.relabel(job_id, self.cluster)
                requeued = 0
                for job_id in admitted:
                    job = jobs.launch(job_id, self.cluster)
                    requeued += job is not None and job.is_queued
                if requeued:  # the cluster cannot take jobs now: wait before trying again
                    self._backoff = min(MAX_BACKOFF, self._backoff * 2) if self._backoff else 1.0
                    self._paused_until = self.clock.monotonic() + self._backoff
                elif admitted:
                    self._backoff = 0.0
                self.last_admitted = admitted
                self.admitted_total += len(admitted)
                return admitted
            finally:
                db.session.remove()

    def sample(self) -> int:
        with self.app.app_context():
            try:
                return self.backend.sample_usage(self.clock.utcnow())
            finally:
                db.session.remove()

    def estimate(self, budget: float = 0.2) -> int:
        """Re-estimate the queued jobs' starts where something changed, for about `budget` seconds."""
        with self.app.app_context():
            try:
                return self.estimates.run(self.clock.utcnow(), self.clock.monotonic, budget)
            finally:
                db.session.remove()

    def tick(self) -> None:
        """One round: admission, and the usage sample and estimates when they are due."""
        self.run_pass()
        mono = self.clock.monotonic()
        if mono - self._sampled >= SAMPLE_SECONDS:
            self._sampled = mono
            self.sample()
        if mono - self._estimated >= ESTIMATE_SECONDS:
            self._estimated = mono
            self.estimate()
