"""/admin/maintenance: announce maintenance (a banner on every page, a notice to the owners of the
jobs it touches, optionally a drain of its nodes at the start with a grace period) and cancel it."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import login_required

from ..models import utcnow
from ..services import maintenance
from ..services.errors import Conflict, ValidationFailed
from .context import actor, page_arg, per_page
from .forms import CsrfOnlyForm

bp = Blueprint("maintenance", __name__, url_prefix="/admin/maintenance")


def _page(status: int = 200, errors: dict | None = None, values: dict | None = None):
    page = maintenance.page(actor(), page_arg(), per_page())
    node_names = maintenance.node_names()
    return render_template("admin/maintenance.html", page=page, form=CsrfOnlyForm(), errors=errors or {},
                           values=values or {"drain_grace": "60"}, node_names=node_names,
                           endpoint="maintenance.index", args={}, now=utcnow()), status


@bp.get("")
@login_required
def index():
    """Announcements, newest first, and the form to announce one."""
    return _page()


@bp.post("")
@login_required
def announce():
    actor().require_admin()
    form = CsrfOnlyForm()
    values = {k: request.form.get(k, "")[:600] for k in ("message", "starts", "ends", "drain_grace")}
    values["nodes"] = [n[:253] for n in request.form.getlist("nodes")[:maintenance.MAX_NODES + 1]]
    values["drain"] = bool(request.form.get("drain"))
    if not form.validate_on_submit():
        return _page(400, {"form": _("This form has expired or did not come from this site.")}, values)
    try:
        row = maintenance.announce(actor(), values["message"], values["starts"], values["ends"], values["nodes"],
                                   values["drain"], values["drain_grace"])
    except ValidationFailed as exc:
        return _page(422, exc.errors, values)
    told = maintenance.told(row.id)
    flash(ngettext("Maintenance announced; %(num)s owner of jobs it touches was told.",
                   "Maintenance announced; %(num)s owners of jobs it touches were told.", told), "success")
    return redirect(url_for(".index"), 303)


@bp.post("/<int:maintenance_id>/cancel")
@login_required
def cancel(maintenance_id):
    actor().require_admin()
    if not CsrfOnlyForm().validate_on_submit():
        return _page(400, {"form": _("This form has expired or did not come from this site.")})
    try:
        maintenance.cancel(actor(), maintenance_id)
    except Conflict as exc:
        flash(exc.message, "error")
        return _page(409)
    flash(_("The maintenance is cancelled: its banner is gone and its scheduled drains will not run."), "success")
    return redirect(url_for(".index"), 303)
