"""Chart data as JSON for the browser's charts (static/js/charts.js): a job's GPUs, a node's GPUs,
the cluster's GPU use over the last day. These are the only views that read Prometheus (through
portal.metrics, with its timeout); when it is not configured or does not answer they say so
("available": false and a message) and the page around them works as ever."""
from __future__ import annotations

import time

import orjson

from flask import Blueprint, Response, current_app, request
from flask_babel import gettext as _
from flask_login import login_required

from ..metrics import MetricsError, MetricsSettings, Prometheus, cluster_charts, epoch, job_charts, node_charts, step_for
from ..services import jobs, nodes
from .context import actor

bp = Blueprint("charts", __name__)
NODE_HOURS = (1, 6, 24)
DAY = 86400.0


def GPU_TITLES() -> dict:  # noqa: N802  (the reader's language: built per request)
    return {"util": (_("GPU utilisation"), "%"), "memory": (_("GPU memory used"), "MiB")}


def _prometheus() -> Prometheus:
    return Prometheus(MetricsSettings.from_config(current_app.config))


def _answer(build):
    prom = _prometheus()
    if not prom.settings.enabled:
        return _none(_("No metrics: Prometheus is not configured."))
    try:
        charts = build(prom)
    except MetricsError as exc:
        return _none(_("No metrics: %(error)s", error=exc.message))
    if not any(c["series"] for c in charts):
        return _none(_("No metrics for this period yet."))
    return _json({"available": True, "charts": charts})


def _json(body: dict) -> Response:
    """Compact JSON, keys unsorted: a day of samples is tens of thousands of numbers."""
    return Response(orjson.dumps(body), mimetype="application/json")


def _none(message: str):
    return _json({"available": False, "message": message, "charts": []})


def _titled(charts: dict, titles: dict) -> list[dict]:
    return [dict(charts[key], title=title, unit=unit) for key, (title, unit) in titles.items()]


@bp.get("/jobs/<int:job_id>/gpu.json")
@login_required
def job_gpus(job_id):
    """Utilisation and memory of each GPU of the job (per pod for distributed jobs), over its run
    (the last day of it at most, at the scrape interval)."""
    job = jobs.get_job(actor(), job_id)
    pods = [p["name"] for p in job.pods or [] if p.get("name")]
    if not job.gpus or job.started_at is None or not pods:
        return _none(_("No GPU metrics: the job holds no GPUs or has not started."))
    end = epoch(job.finished_at) if job.finished_at else time.time()
    start = max(epoch(job.started_at), end - DAY)
    namespace = current_app.config["JOB_NAMESPACE"]

    def build(prom):
        step = step_for(prom.settings, start, end)
        return _titled(job_charts(prom, namespace, pods, start, end, step), GPU_TITLES())
    return _answer(build)


@bp.get("/nodes/<name>/gpu.json")
@login_required
def node_gpus(name):
    node = nodes.get_node(name)
    hours = request.args.get("hours", 6, type=int)
    hours = hours if hours in NODE_HOURS else 6
    end = time.time()
    start = end - hours * 3600

    def build(prom):
        step = step_for(prom.settings, start, end)
        return _titled(node_charts(prom, node.name, start, end, step), GPU_TITLES())
    return _answer(build)


@bp.get("/nodes/-/gpu.json")
@login_required
def cluster_gpus():
    """The cluster's GPUs over the last day: in use of total, and their mean utilisation."""
    end = time.time()
    start = end - DAY

    def build(prom):
        step = max(step_for(prom.settings, start, end), 60.0)
        words = {"total": _("GPUs"), "in use": _("in use"), "mean": _("mean utilisation")}
        return _titled(cluster_charts(prom, start, end, step, words), {"gpus": (_("GPUs in use"), _("GPUs")),
                                                                       "util": (_("GPU utilisation"), "%")})
    return _answer(build)
