"""/admin/users: search and page through users, change roles, deactivate and reactivate."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required

from ..services import users
from ..services.errors import DomainError
from .context import actor, fragment_or_page, is_htmx, page_arg, per_page
from .forms import RoleForm

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
