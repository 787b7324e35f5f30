"""/notifications (my notices, the unread count the navigation loads) and /settings (language and
which notices come by mail)."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import login_required

from ..config import LANGUAGES
from ..services import notifications, notify
from ..services.errors import ValidationFailed
from .context import actor, page_arg, per_page
from .forms import CsrfOnlyForm

bp = Blueprint("notifications", __name__)


def notice_words() -> dict[str, str]:
    return {"job_started": _("started running"), "job_succeeded": _("succeeded"), "job_failed": _("failed"),
            "job_stopped_policy": _("was stopped by a policy"), "job_stopped_admin": _("was stopped by a manager or administrator"),
            "warning_idle_gpu": _("is warned: its GPUs are idle"), "warning_time_limit": _("nears its time limit"),
            "job_preempted": _("was preempted: its borrowed GPUs were taken back; it waits to run again"),
            "extension_decided": _("has a decision on your request for more time"),
            "drain_warning": _("will be stopped: its node is drained (see the job's page for when)"),
            "maintenance": _("Maintenance announced")}


@bp.get("/notifications")
@login_required
def index():
    page = notifications.mine(actor(), page_arg(), per_page())
    return render_template("notifications/index.html", page=page, words=notice_words(), form=CsrfOnlyForm(),
                           endpoint="notifications.index", args={})


@bp.get("/notifications/count")
@login_required
def count():
    """The unread count in the navigation (loaded by htmx, so no page pays for it)."""
    n = notifications.unread(actor())
    return render_template("notifications/_count.html", n=n)


@bp.post("/notifications/read")
@login_required
def mark_read():
    CsrfOnlyForm().validate_on_submit()
    notifications.mark_all_read(actor())
    return redirect(url_for(".index"), 303)


@bp.get("/settings")
@login_required
def settings():
    return render_template("notifications/settings.html", prefs=notifications.preferences(actor()),
                           kinds=notify.kind_words(), languages=LANGUAGES, form=CsrfOnlyForm())


@bp.post("/settings")
@login_required
def save_settings():
    CsrfOnlyForm().validate_on_submit()
    try:
        notifications.save_settings(actor(), request.form.get("language", ""), set(request.form.getlist("mail")))
    except ValidationFailed:
        return render_template("notifications/settings.html", prefs=notifications.preferences(actor()),
                               kinds=notify.kind_words(), languages=LANGUAGES, form=CsrfOnlyForm(),
                               error=_("Choose a language and kinds of notice from the lists.")), 422
    session["lang"] = request.form.get("language")
    flash(_("Settings saved."), "success")
    return redirect(url_for(".settings"), 303)
