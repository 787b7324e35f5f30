"""The syncer's own metrics, on a port of its own (CRATER_SYNC_METRICS_PORT; `crater sync` serves
them, prometheus-client's text format): whether this replica leads, each reflector's relists,
watch restarts and failures, the database write failures, the write lag (a cluster event to its
job's row committed), the fair-use policies' actions, the last duration of every reconciler pass
and of the admitter's passes, admissions, and the queue's and the outbox's lengths (two counts
read at scrape time). Read from the syncer's state when scraped: nothing to keep in step."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError


class SyncerCollector:
    def __init__(self, syncer):
        self.syncer = syncer

    def collect(self):
        s = self.syncer
        yield GaugeMetricFamily("crater_sync_leader", "1 while this replica holds the Lease and acts",
                                value=1.0 if s.leading() else 0.0)
        families = [(CounterMetricFamily(name, text, labels=["kind"]), attribute) for name, text, attribute in (
            ("crater_sync_relists", "Full lists of a watched kind (at start, after 410 Gone, after failures)", "relists"),
            ("crater_sync_watch_restarts", "Watches resumed after the server ended them", "watch_restarts"),
            ("crater_sync_watch_failures", "Watches or lists that failed (the API away)", "failures"))]
        for family, attribute in families:
            for kind, reflector in s.reflectors.items():
                family.add_metric([kind], getattr(reflector, attribute))
            yield family
        yield CounterMetricFamily("crater_sync_write_failures", "Database writes of cluster state that failed",
                                  value=s.write_failures)
        passes = GaugeMetricFamily("crater_sync_pass_seconds", "How long the last run of each pass took", labels=["pass"])
        for name, seconds in s.reconciler.durations.items():
            passes.add_metric([name], seconds)
        for name, seconds in s.admitter.durations.items():
            passes.add_metric([f"queue-{name}"], seconds)
        yield passes
        actions = CounterMetricFamily("crater_sync_policy_actions", "Jobs the fair-use policies warned, stopped or "
                                      "cleared a warning of", labels=["policy", "action"])
        for (policy, action), n in sorted(s.policies.actions_total.items()):
            actions.add_metric([policy, action], n)
        yield actions
        yield from s.jobs.lag.collect()
        yield CounterMetricFamily("crater_sync_admissions", "Queued jobs admitted by this replica",
                                  value=s.admitter.admitted_total)
        counts = self._counts()
        if counts is not None:
            yield GaugeMetricFamily("crater_sync_queued_jobs", "Jobs waiting in the accounts' queues", value=counts[0])
            yield GaugeMetricFamily("crater_sync_outbox_pending", "Mails not sent yet", value=counts[1])

    def _counts(self):
        from ..extensions import db
        from ..models import Job, JobState, OutboxMessage
        try:
            with self.syncer.app.app_context():
                try:
                    queued = db.session.execute(select(func.count(Job.id)).where(Job.state == JobState.QUEUED.value)).scalar_one()
                    pending = db.session.execute(select(func.count(OutboxMessage.id)).where(
                        OutboxMessage.sent_at.is_(None))).scalar_one()
                    return int(queued), int(pending)
                finally:
                    db.session.remove()
        except SQLAlchemyError:
            return None  # the database away: those two are left out of this scrape


def serve(syncer, port: int, addr: str = "127.0.0.1"):
    """Serve the syncer's metrics on addr:port (a thread of prometheus-client's own)."""
    registry = CollectorRegistry()
    registry.register(SyncerCollector(syncer))
    return start_http_server(port, addr=addr, registry=registry)
