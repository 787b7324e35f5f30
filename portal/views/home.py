"""The home page and the language switch."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, session
from flask_babel import gettext as _
from flask_login import current_user, login_required

from ..auth.views import safe_next
from ..config import LANGUAGES
from ..models import utcnow
from ..services import accounts, job_queries, nodes, users
from .context import actor, stale_notice
from .forms import CsrfOnlyForm

bp = Blueprint("home", __name__)


@bp.get("/")
@login_required
def index():
    """My active jobs, my accounts with their quota usage, free GPUs per model."""
    memberships = accounts.my_memberships(current_user)
    me = actor()
    return render_template("home/index.html", memberships=memberships, today=utcnow().date(),
                           active=job_queries.active_jobs(me),
                           usage=job_queries.usage_by_account([m.account_id for m in memberships]),
                           free=[m for m in nodes.model_summary() if m["model"] is not None], stale=stale_notice(),
                           metrics=bool(current_app.config["PROMETHEUS_URL"]))


@bp.post("/settings/language")
def set_language():
    """Switch the interface language; saved on the user when signed in, else in the session."""
    form = CsrfOnlyForm()
    lang = request.form.get("lang", "")
    if not form.validate_on_submit() or lang not in LANGUAGES:
        flash(_("Unknown language."), "error")
        return redirect(safe_next(request.form.get("next"))), 303
    session["lang"] = lang
    if current_user.is_authenticated:
        users.set_language(current_user, lang)
    return redirect(safe_next(request.form.get("next"))), 303
