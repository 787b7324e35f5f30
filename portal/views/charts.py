"""Chart data as JSON for the browser's charts (static/js/charts.js): a job's GPUs, a node's GPUs,
the cluster's GPU use over the last day. These are the only views that read Prometheus (through
portal.metrics, with its timeout); when it is not configured or does not answer they say so
("available": false and a message) and the page around them works as ever."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request
from flask_babel import gettext as _
from flask_login import login_required

from ..metrics import MetricsError, MetricsSettings, Prometheus, chart, cluster_series, epoch, job_series, node_series, step_for
from ..services import jobs, nodes
from .context import actor

bp = Blueprint("charts", __name__)
NODE_HOURS = (1, 6, 24)
DAY = 86400.0


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
    return jsonify(available=True, charts=charts)


def _none(message: str):
    return jsonify(available=False, message=message, charts=[])


def _charts(series: dict, start: float, end: float, step: float, titles: dict) -> list[dict]:
    out = []
    for key, (title, unit) in titles.items():
        out.append(dict(chart(series[key], start, end, step), title=title, unit=unit))
    return out


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
        series = job_series(prom, namespace, pods, start, end, step)
        return _charts(series, start, end, step, {"util": (_("GPU utilisation"), "%"),
                                                  "memory": (_("GPU memory used"), "MiB")})
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
        series = node_series(prom, node.name, start, end, step)
        return _charts(series, start, end, step, {"util": (_("GPU utilisation"), "%"),
                                                  "memory": (_("GPU memory used"), "MiB")})
    return _answer(build)


@bp.get("/nodes/-/gpu.json")
@login_required
def cluster_gpus():
    """The cluster's GPUs over the last day: in use of total, and their mean utilisation."""
    end = time.time()
    start = end - DAY

    def build(prom):
        step = max(step_for(prom.settings, start, end), 60.0)
        series = cluster_series(prom, start, end, step)
        for s in series["gpus"]:
            s.label = {"total": _("GPUs"), "in use": _("in use")}.get(s.label, s.label)
        series["util"][0].label = _("mean utilisation")
        return _charts(series, start, end, step, {"gpus": (_("GPUs in use"), _("GPUs")),
                                                  "util": (_("GPU utilisation"), "%")})
    return _answer(build)
