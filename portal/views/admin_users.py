"""/admin/users: search and page through users, change roles, deactivate and reactivate."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import login_required

from ..cluster.client import ClusterError
from ..services import jobs, restrictions, users
from ..services.errors import DomainError, ValidationFailed
from .context import actor, cluster, fragment_or_page, is_htmx, page_arg, per_page
from .forms import CsrfOnlyForm, RestrictionForm, RoleForm, apply_errors

bp = Blueprint("admin_users", __name__, url_prefix="/admin/users")


def _filters() -> users.UserFilter:
    return users.UserFilter(q=request.args.get("q", "").strip()[:100], role=request.args.get("role", ""),
                            status=request.args.get("status", ""))


@bp.get("")
@login_required
def index():
    """The user list; htmx's active search asks for the table alone."""
    filters = _filters()
    page = users.list_users(actor(), filters, page_arg(), per_page())
    template = fragment_or_page("users-table", "admin/_users_table.html", "admin/users.html")
    return render_template(template, page=page, filters=filters)


def _row_or_back(user, message):
    """htmx swaps the changed row; without JS, back to the list with a message."""
    if is_htmx():
        return render_template("admin/_user_rows.html", users=[users.list_row(user)], flash_now=message)
    flash(message, "success")
    return redirect(request.referrer if _same_list(request.referrer) else url_for(".index"), 303)


def _same_list(referrer: str | None) -> bool:
    return bool(referrer) and referrer.startswith(request.host_url + "admin/users")


@bp.post("/<int:user_id>/role")
@login_required
def set_role(user_id):
    """Make a user an administrator or a plain user."""
    form = RoleForm()
    if not form.validate_on_submit():
        raise DomainError(_("Choose user or admin."))
    user = users.set_role(actor(), user_id, form.role.data)
    return _row_or_back(user, _("%(name)s is now %(role)s.", name=user.username, role=form.role.data))


@bp.post("/<int:user_id>/deactivate")
@login_required
def deactivate(user_id):
    """Deactivate: the user cannot sign in and every open session of theirs ends."""
    user = users.set_active(actor(), user_id, False)
    return _row_or_back(user, _("%(name)s is deactivated.", name=user.username))


@bp.post("/<int:user_id>/reactivate")
@login_required
def reactivate(user_id):
    """Let a deactivated user sign in again."""
    user = users.set_active(actor(), user_id, True)
    return _row_or_back(user, _("%(name)s is active again.", name=user.username))


# ---- restrictions -------------------------------------------------------------------------------

def _restrictions_page(user_id: int, form: RestrictionForm, status: int = 200):
    user, rows = restrictions.list_of(actor(), user_id)
    return render_template("admin/restrictions.html", user=user, rows=rows, form=form, button=CsrfOnlyForm(),
                           words=restrictions.words, now=restrictions.utcnow()), status


@bp.get("/<int:user_id>/restrictions")
@login_required
def restrictions_page(user_id):
    return _restrictions_page(user_id, RestrictionForm(formdata=None))


@bp.post("/<int:user_id>/restrictions")
@login_required
def restrict(user_id):
    """Restrict a user from submitting, the storage or the portal; optionally stop their jobs."""
    form = RestrictionForm()
    restrictions.list_of(actor(), user_id)  # an administrator, and the user exists, before field errors
    if not form.validate_on_submit():
        return _restrictions_page(user_id, form, 422)
    try:
        row, to_stop = restrictions.restrict(actor(), user_id, form.kind.data, form.until.data, form.reason.data,
                                             form.stop_running.data)
    except ValidationFailed as exc:
        apply_errors(form, exc)
        return _restrictions_page(user_id, form, 422)
    stopped, failed = 0, 0
    for job_id in to_stop:
        try:
            jobs.stop_job(actor(), job_id, cluster(), message=restrictions.message(row), tell_owner=True)
            stopped += 1
        except (DomainError, ClusterError):  # ended meanwhile, or the cluster did not answer
            failed += 1
    flash(ngettext("Restricted. %(num)s running job stopped.", "Restricted. %(num)s running jobs stopped.", stopped)
          if to_stop else _("Restricted."), "success")
    if failed:
        flash(ngettext("%(num)s job could not be stopped now; stop it from the jobs page.",
                       "%(num)s jobs could not be stopped now; stop them from the jobs page.", failed), "error")
    return redirect(url_for(".restrictions_page", user_id=user_id), 303)


@bp.post("/<int:user_id>/restrictions/<int:restriction_id>/lift")
@login_required
def lift(user_id, restriction_id):
    restrictions.lift(actor(), user_id, restriction_id)
    flash(_("Restriction lifted."), "success")
    return redirect(url_for(".restrictions_page", user_id=user_id), 303)
