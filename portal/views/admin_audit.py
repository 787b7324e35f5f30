"""/admin/audit: the audit trail with filters (who, what, which object, when)."""
from __future__ import annotations

from datetime import datetime, timedelta

from flask import Blueprint, render_template, request
from flask_login import login_required

from ..services import audit
from .context import actor, fragment_or_page, page_arg, per_page

bp = Blueprint("admin_audit", __name__, url_prefix="/admin/audit")


def _date(name: str):
    try:
        return datetime.strptime(request.args.get(name, ""), "%Y-%m-%d")
    except ValueError:
        return None


@bp.get("")
@login_required
def index():
    """Newest first; dates are whole UTC days, `until` inclusive."""
    until = _date("until")
    filters = audit.AuditFilter(
        actor=request.args.get("actor", "").strip()[:64], action=request.args.get("action", "")[:64],
        target_type=request.args.get("target_type", "")[:32], target_id=request.args.get("target_id", "").strip()[:64],
        since=_date("since"), until=until + timedelta(days=1) if until else None,
    )
    page = audit.list_entries(actor(), filters, page_arg(), per_page())
    template = fragment_or_page("audit-table", "admin/_audit_table.html", "admin/audit.html")
    link_args = {k: v for k, v in request.args.items() if k != "page"}
    return render_template(template, page=page, args=request.args, link_args=link_args,
                           actions=audit.known_actions(), target_types=audit.known_target_types())
