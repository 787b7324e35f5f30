"""The portal's own metrics at /metrics (prometheus-client): requests by route, method and status,
their durations, requests in flight, database statement time, and job submissions by outcome.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn: deploy/gunicorn.conf.py), every worker writes its
samples there and /metrics sums them, so every worker counts. Who may read it: with
CRATER_METRICS_TOKEN set, whoever sends `Authorization: Bearer <token>` (compared in constant
time; the NetworkPolicy admits only the monitoring namespace); without it, only loopback (a
sidecar or `kubectl port-forward`); anyone else gets 404. Routes are labelled by their rule
(`/jobs/<int:job_id>`), never by path, so labels stay few."""
from __future__ import annotations

import hmac
import os
import time

from flask import Blueprint, Flask, Response, abort, current_app, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)
from sqlalchemy import event
from sqlalchemy.engine import Engine

LOOPBACK = ("127.0.0.1", "::1")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUESTS = Counter("crater_http_requests_total", "Requests answered, by route rule, method and status",
                   ["route", "method", "status"])
DURATION = Histogram("crater_http_request_duration_seconds", "Time to answer a request, by route rule", ["route"],
                     buckets=BUCKETS)
IN_FLIGHT = Gauge("crater_http_requests_in_flight", "Requests being answered now", multiprocess_mode="livesum")
DB_TIME = Histogram("crater_db_statement_duration_seconds", "Time of each SQL statement", buckets=BUCKETS)
SUBMISSIONS = Counter("crater_job_submissions_total", "Job submissions by type, outcome (admitted, queued, refused, "
                      "invalid, submit_error) and reason (what refused it, the first invalid field, the cluster's "
                      "answer)", ["type", "outcome", "reason"])

bp = Blueprint("telemetry", __name__)


def count_submission(job_type: str, outcome: str, reason: str = "") -> None:
    """`reason` comes from a small fixed set (quota kinds, form field names, HTTP statuses)."""
    SUBMISSIONS.labels(job_type, outcome, reason[:32]).inc()


@bp.get("/metrics")
def metrics():
    token = current_app.config.get("METRICS_TOKEN", "")
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return Response("a bearer token is required\n", 401, {"WWW-Authenticate": "Bearer"}, mimetype="text/plain")
    elif request.remote_addr not in LOOPBACK:
        abort(404)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry) + generate_latest(_SCHEDULING)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


class SchedulingCollector:
    """Borrowing and reclaim, read from the database at scrape time (three grouped queries):
    preemptions by reason, how long reclaims took (from the reclaiming job's wait to its start),
    and the GPUs each account borrows now."""

    BUCKETS = (5.0, 15.0, 30.0, 60.0, 90.0, 120.0, 300.0, 600.0, 1800.0)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        from sqlalchemy import func, select
        from sqlalchemy.exc import SQLAlchemyError

        from .extensions import db
        from .models import ACTIVE_STATES, Account, Job, Preemption
        try:
            by_reason = db.session.execute(select(Preemption.reason, func.count(Preemption.id)).group_by(Preemption.reason)).all()
            latencies = db.session.execute(select(Preemption.by_job_id, func.min(Preemption.waited_since), func.max(Preemption.bound_at))
                                           .where(Preemption.bound_at.is_not(None), Preemption.waited_since.is_not(None))
                                           .group_by(Preemption.by_job_id)).all()
            borrowed = db.session.execute(select(Account.name, func.sum(Job.gpus)).join(Account, Account.id == Job.account_id)
                                          .where(Job.borrowed.is_(True), Job.state.in_(ACTIVE_STATES)).group_by(Account.name)).all()
        except SQLAlchemyError:
            db.session.rollback()
            return
        finally:
            db.session.commit()
        family = CounterMetricFamily("crater_preemptions", "Borrowed jobs preempted, by reason", labels=["reason"])
        for reason, n in by_reason:
            family.add_metric([reason], n)
        yield family
        seconds = sorted(max(0.0, (bound - since).total_seconds()) for _job, since, bound in latencies)
        buckets = [(str(b), sum(1 for x in seconds if x <= b)) for b in self.BUCKETS] + [("+Inf", len(seconds))]
        yield HistogramMetricFamily("crater_reclaim_seconds", "From a job within its guarantee waiting for lent GPUs to "
                                    "its start, once it reclaimed them", buckets=buckets, sum_value=sum(seconds))
        gauge = GaugeMetricFamily("crater_borrowed_gpus", "GPUs each account's jobs borrow now beyond its guarantee",
                                  labels=["account"])
        for name, gpus in borrowed:
            gauge.add_metric([name], int(gpus or 0))
        yield gauge


_SCHEDULING = CollectorRegistry()
_SCHEDULING.register(SchedulingCollector())


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.before_request
    def start() -> None:
        g.metrics_started = time.perf_counter()
        IN_FLIGHT.inc()

    @app.after_request
    def observe(response):
        started = g.get("metrics_started")
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            REQUESTS.labels(route, request.method, str(response.status_code)).inc()
            DURATION.labels(route).observe(time.perf_counter() - started)
        return response

    @app.teardown_request
    def finish(_exc) -> None:
        if g.pop("metrics_started", None) is not None:
            IN_FLIGHT.dec()


@event.listens_for(Engine, "before_cursor_execute")
def _statement_started(conn, cursor, statement, parameters, context, executemany):
    conn.info.setdefault("crater_started", []).append(time.perf_counter())


@event.listens_for(Engine, "after_cursor_execute")
def _statement_done(conn, cursor, statement, parameters, context, executemany):
    started = conn.info.get("crater_started")
    if started:
        DB_TIME.observe(time.perf_counter() - started.pop())
