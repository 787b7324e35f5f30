"""The reconciler's metrics passes (leader only):

- gpu-samples: every GPU as the DCGM exporter reports it now (utilisation, memory, the pod that
  holds it) -> gpu_devices, and each node's mean utilisation -> nodes;
- usage: the GPU summary and per-day usage of jobs: ended jobs once their last scrape is in (until
  final; while Prometheus is away the allocation is written and the metrics retried), running
  jobs every `refresh` seconds. Without Prometheus configured, usage is the allocation alone.

A pass reads Prometheus outside any transaction and writes through the services."""
from __future__ import annotations

import logging
from datetime import timedelta

from ..metrics import MetricsError, MetricsSettings, Prometheus, epoch, gpu_devices, job_summary
from ..services import nodes, usage
from ..vocabulary import FINAL_STATES
from .clock import Clock

log = logging.getLogger("crater.sync")
BATCH = 20  # jobs per usage pass
GIVE_UP = timedelta(days=1)  # an ended job's metrics are not waited for longer


class GpuPasses:
    def __init__(self, settings: MetricsSettings, clock: Clock, namespace: str, refresh_seconds: float = 300.0):
        self.settings, self.clock, self.namespace, self.refresh = settings, clock, namespace, refresh_seconds
        self.prometheus = Prometheus(settings)
        self.metrics_error = ""  # why the last look at Prometheus failed ("" when it answered)

    def passes(self) -> list[tuple[str, object]]:
        out = [("usage", self.record_usage)]
        if self.settings.enabled:
            out.insert(0, ("gpu-samples", self.sample_gpus))
        return out

    def sample_gpus(self) -> int:
        try:
            devices = gpu_devices(self.prometheus)
            self.metrics_error = ""
        except MetricsError as exc:
            if exc.message != self.metrics_error:
                log.warning("GPU metrics unavailable: %s", exc.message)
            self.metrics_error = exc.message
            devices = []
        return nodes.record_gpu_devices(devices, self.clock.utcnow())

    def record_usage(self) -> list[int]:
        now = self.clock.utcnow()
        usage.close_unstarted(now)
        settle = timedelta(seconds=2 * self.settings.step + 1)
        done = []
        for job in usage.due_jobs(now, self.refresh, retry_seconds=max(60.0, self.refresh / 5), limit=BATCH):
            ended = job.state in FINAL_STATES
            if ended and self.settings.enabled and job.finished_at and now - job.finished_at < settle:
                continue  # the last samples are not scraped yet
            summary, final = None, ended
            if self.settings.enabled and job.gpus and job.pods:
                end = job.finished_at if ended and job.finished_at else now
                try:
                    summary = job_summary(self.prometheus, self.namespace, [p["name"] for p in job.pods],
                                          epoch(job.started_at), epoch(end))
                except MetricsError as exc:
                    log.info("usage of job %s without metrics for now: %s", job.id, exc.message)
                    final = ended and (job.finished_at is None or now - job.finished_at > GIVE_UP)
            usage.record_usage(job.id, summary, now, final)
            done.append(job.id)
        return done
