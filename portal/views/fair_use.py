"""Fair use in the browser: asking for more time (the owner), locking a job (admins), the approvals
page (managers and admins) and the admin policy page (parameters, suspend, resume, run now, the
log of every run). Each view parses input and calls one service."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required

from ..models import utcnow
from ..services import fair_use, jobs, policies
from ..services.errors import ValidationFailed
from .context import actor, cluster, page_arg, per_page
from .forms import CsrfOnlyForm

bp = Blueprint("fair_use", __name__)





def _checked() -> None:
    CsrfOnlyForm().validate_on_submit()  # CSRFProtect refuses a bad token before this runs


def _whole(name: str, most: int = 100_000) -> int | None:
    raw = request.form.get(name, "").strip()
    return int(raw) if raw.isdigit() and len(raw) <= 7 and int(raw) <= most else None


def _back_to_job(job_id: int, done: str):
    flash(done, "success")
    return redirect(url_for("jobs.show", job_id=job_id), 303)


def _job_errors(job_id: int, exc: ValidationFailed):
    """A refused form: 422 with the message (a link back to the job)."""
    jobs.get_job(actor(), job_id)  # 404 for a job the actor may not see
    return render_template("errors/error.html", status=422, title=_("Check your input"), message=str(exc)), 422


@bp.post("/jobs/<int:job_id>/extend")
@login_required
def extend(job_id):
    _checked()
    try:
        req = fair_use.request_extension(actor(), job_id, _whole("hours"), request.form.get("reason", "")[:2000], cluster())
    except ValidationFailed as exc:
        return _job_errors(job_id, exc)
    if req.state == "granted":
        return _back_to_job(job_id, _("%(n)s more hours granted.", n=req.hours))
    return _back_to_job(job_id, _("Your request for %(n)s more hours waits for a manager's approval.", n=req.hours))


@bp.post("/jobs/<int:job_id>/lock")
@login_required
def lock(job_id):
    _checked()
    hours = _whole("hours")
    until = None if request.form.get("forever") or not hours else utcnow() + timedelta(hours=hours)
    try:
        fair_use.lock(actor(), job_id, until, request.form.get("reason", "")[:2000])
    except ValidationFailed as exc:
        return _job_errors(job_id, exc)
    return _back_to_job(job_id, _("The job is locked: no clean-up stops it."))


@bp.post("/jobs/<int:job_id>/unlock")
@login_required
def unlock(job_id):
    _checked()
    fair_use.unlock(actor(), job_id)
    return _back_to_job(job_id, _("The job is unlocked."))


@bp.get("/approvals")
@login_required
def approvals():
    """Requests for more time that the actor may decide (an account's managers, admins)."""
    page = fair_use.pending_requests(actor(), page_arg(), per_page())
    return render_template("fair_use/approvals.html", page=page, form=CsrfOnlyForm(), endpoint="fair_use.approvals", args={})


@bp.post("/approvals/<int:request_id>/<any(approve, reject):decision>")
@login_required
def decide(request_id, decision):
    _checked()
    try:
        req = fair_use.decide(actor(), request_id, decision == "approve", request.form.get("note", "")[:2000], cluster())
    except ValidationFailed as exc:
        flash(str(exc), "error")
        return redirect(url_for(".approvals"), 303)
    flash(_("Request %(id)s %(state)s.", id=req.id, state=req.state), "success")
    return redirect(url_for(".approvals"), 303)


@bp.get("/admin/policies")
@login_required
def admin_policies():
    page = policies.policies_page(actor(), request.args.get("policy", ""), page_arg(), per_page())
    return _policies(page)


def _policies(page, errors: dict | None = None):
    return render_template("fair_use/policies.html", policies=page.policies, defaults=page.defaults, words=page.words,
                           runs=page.runs, shown=page.shown, form=CsrfOnlyForm(), errors=errors or {},
                           endpoint="fair_use.admin_policies", args={"policy": page.shown})


@bp.post("/admin/policies/<policy>")
@login_required
def update_policy(policy):
    name = policy
    _checked()
    try:
        policies.update(actor(), name, {k: v[:50] for k, v in request.form.items()})
    except ValidationFailed as exc:
        flash(str(exc), "error")
        return _policies(policies.policies_page(actor(), "", 1, per_page()), {name: exc.errors}), 422
    flash(_("Policy %(name)s saved.", name=policies.words().get(name, name)), "success")
    return redirect(url_for(".admin_policies"), 303)


@bp.post("/admin/policies/<policy>/<any(suspend, resume, run):action>")
@login_required
def policy_action(policy, action):
    name = policy
    _checked()
    if action == "run":
        policies.request_run(actor(), name)
        flash(_("The policy runs at the syncer's next tick."), "success")
    else:
        policies.set_suspended(actor(), name, action == "suspend")
        flash(_("Policy suspended.") if action == "suspend" else _("Policy resumed."), "success")
    return redirect(url_for(".admin_policies"), 303)
