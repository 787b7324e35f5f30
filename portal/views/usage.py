"""/usage: usage and waste reports for a chosen period (UTC days), per user, account and GPU
model, a daily chart and CSV downloads. Users see their own, managers their accounts', admins all.
Read from the usage rows the syncer writes; no cluster or Prometheus call."""
from __future__ import annotations

import json
from datetime import datetime, UTC

from flask import Blueprint, Response, render_template, request, stream_with_context
from flask_babel import gettext as _
from flask_login import current_user, login_required

from ..services import job_queries, usage
from ..services.errors import ValidationFailed
from .context import actor, page_arg, per_page

bp = Blueprint("usage", __name__)


def _today():
    return datetime.now(UTC).date()


def _request_scope():
    kind = request.args.get("scope", "mine")
    kind = kind if kind in usage.SCOPES else "mine"
    account_id = request.args.get("account", type=int)
    return usage.resolve_scope(actor(), kind, account_id), kind, account_id


def _scopes() -> list[str]:
    out = ["mine"]
    if current_user.is_admin or job_queries.managed_account_ids(actor()):
        out.append("account")
    if current_user.is_admin:
        out.append("all")
    return out


@bp.get("/usage")
@login_required
def index():
    scope, kind, account_id = _request_scope()
    start, end = request.args.get("start", "")[:20], request.args.get("end", "")[:20]
    errors, status = {}, 200
    try:
        period = usage.parse_period(start, end, _today())
    except ValidationFailed as exc:
        errors, status = exc.errors, 400
        period = usage.parse_period("", "", _today())
    rep = usage.report(actor(), scope, period, page_arg(), per_page())
    args = {"scope": kind, "account": account_id or "", "start": period.start.isoformat(), "end": period.end.isoformat()}
    chart = {"available": True, "charts": [dict(usage.daily_chart(rep), title=_("GPU-hours per day"))]}
    managed = job_queries.my_account_choices(actor())
    return render_template("usage/index.html", rep=rep, args=args, errors=errors, kind=kind, account_id=account_id,
                           scopes=_scopes(), accounts=managed, chart_json=json.dumps(chart),
                           page=rep.by_user, endpoint="usage.index", raw_start=start, raw_end=end), status


@bp.get("/usage.csv")
@login_required
def download():
    scope, kind, _account = _request_scope()
    period = usage.parse_period(request.args.get("start", "")[:20], request.args.get("end", "")[:20], _today())
    group = request.args.get("group", "user")
    group = group if group in usage.CSV_GROUPS else "user"
    if group == "model" and not actor().is_admin:
        group = "account"
    name = f"crater-usage-{group}-{period.start.isoformat()}-{period.end.isoformat()}.csv"
    return Response(stream_with_context(usage.csv_lines(actor(), scope, period, group)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
