"""Personal access tokens for the API and craterctl: /settings/tokens (create, see when each was
last used, revoke; a new token is shown once, on the page that created it) and /admin/tokens
(admins see and revoke everyone's)."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import login_required
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice

from ..models.token import TOKEN_PREFIX
from ..services import tokens
from ..services.errors import ValidationFailed
from .context import actor, page_arg, per_page
from .forms import CsrfOnlyForm, apply_errors

bp = Blueprint("tokens", __name__)


class TokenForm(FlaskForm):
    name = StringField(_l("Name"), description=_l("What it is for, e.g. my laptop, or the sweep scripts."))
    scope = SelectField(_l("Scope"), default="read", choices=[SelectChoice("read", _l("read: lists, jobs, logs")),
                                                              SelectChoice("write", _l("read and write: also submit and stop jobs"))])
    expires_days = SelectField(_l("Expires"), default="90", choices=[
        SelectChoice("7", _l("in 7 days")), SelectChoice("30", _l("in 30 days")), SelectChoice("90", _l("in 90 days")),
        SelectChoice("365", _l("in a year")), SelectChoice("0", _l("never (until revoked)"))])


def _page(form: TokenForm, created: str = "", status: int = 200):
    return render_template("tokens/index.html", form=form, tokens=tokens.list_mine(actor()), created=created,
                           button=CsrfOnlyForm(), prefix=TOKEN_PREFIX), status, {"Cache-Control": "no-store"}


@bp.get("/settings/tokens")
@login_required
def index():
    return _page(TokenForm())


@bp.post("/settings/tokens")
@login_required
def create():
    """Create a token; the page that answers shows it once (never in a redirect or a flash cookie)."""
    form = TokenForm()
    if not form.validate_on_submit():
        return _page(form, status=422)
    try:
        _row, token = tokens.create(actor(), form.name.data, form.scope.data,
                                    int(form.expires_days.data) if (form.expires_days.data or "").isdigit() else -1)
    except ValidationFailed as exc:
        apply_errors(form, exc)
        return _page(form, status=422)
    return _page(TokenForm(formdata=None), created=token, status=201)


@bp.post("/settings/tokens/<int:token_id>/revoke")
@login_required
def revoke(token_id):
    row = tokens.revoke(actor(), token_id)
    flash(_("Token %(name)s revoked.", name=row.name), "success")
    return redirect(url_for(".admin_index") if request.form.get("back") == "admin" else url_for(".index"), 303)


@bp.get("/admin/tokens")
@login_required
def admin_index():
    q = request.args.get("q", "").strip()[:64]
    page = tokens.list_all(actor(), page_arg(), per_page(), q)
    return render_template("tokens/admin.html", page=page, q=q, button=CsrfOnlyForm(), args={"q": q})
