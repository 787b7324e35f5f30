"""/jobs: the job list (mine, my accounts', all), the submission forms, a job's detail page with
its polled status fragment, logs, and the actions stop, delete, clone, save as template and open
JupyterLab. Lists and polled fragments read the DB only; the cluster is called for what a user
just asked for (submit, stop, logs, the JupyterLab token)."""
from __future__ import annotations

import re
from decimal import Decimal

from flask import (Blueprint, Response, abort, current_app, flash, redirect, render_template, request,
                   stream_with_context, url_for)
from flask_babel import gettext as _
from flask_login import current_user, login_required

from .. import limits, vocabulary
from ..cluster.labels import object_name
from ..models import MAX_ID, JobState, utcnow
from ..services import accounts, datasets, job_page, job_ports, job_queries, job_templates, jobs, nodes
from ..services import images as own_images
from ..services.errors import DomainError, ValidationFailed
from ..services.scheduling import outlook
from ..services.scheduling.admission import QuotaExceeded
from ..services.scheduling.state import QueueSettings
from ..vocabulary import JOB_TYPES, JobType, Reason
from .context import actor, cluster, htmx_target, is_htmx, page_arg, per_page, stale_notice
from .forms import CsrfOnlyForm, apply_errors
from .job_rows import render_rows
from .job_forms import DEFAULTS, DISTRIBUTED_WORKERS, FIELD_OF, JobForm, form_data_from_spec

bp = Blueprint("jobs", __name__)
STATES = [s.value for s in JobState]
SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")



def _filters() -> job_queries.JobFilter:
    args = request.args
    scope = args.get("scope", "mine")
    return job_queries.JobFilter(
        scope=scope if scope in job_queries.SCOPES else "mine",
        state=args.get("state", "") if args.get("state", "") in STATES + ["active"] else "",
        job_type=args.get("type", "") if args.get("type", "") in JOB_TYPES else "",
        account_id=args.get("account", type=int), text=args.get("q", "").strip()[:100],
        sort=args.get("sort", "newest") if args.get("sort") in job_queries.SORTS else "newest")


@bp.get("/jobs")
@login_required
def index():
    """Jobs with filters, sorting and pagination; the table polls while a shown job can change."""
    f = _filters()
    page = job_queries.list_jobs(actor(), f, page_arg(), per_page())
    args = {"scope": f.scope, "state": f.state, "type": f.job_type, "account": f.account_id or "", "q": f.text,
            "sort": f.sort}
    context = dict(page=page, f=f, args=args, live=job_queries.any_changeable(page.items), stale=stale_notice(),
                   rows_html=render_rows(page.items, others=f.scope != "mine"))
    if htmx_target() == "jobs-table":
        return render_template("jobs/_table.html", **context)
    mine = job_queries.my_account_choices(actor())
    scopes = ["mine"]
    if current_user.is_admin or any(m["role"] == "manager" for m in mine):
        scopes.append("account")
    if current_user.is_admin:
        scopes.append("all")
    return render_template("jobs/index.html", scopes=scopes, my_accounts=mine, **context)


@bp.get("/admin/jobs")
@login_required
def admin_index():
    actor().require_admin()
    return redirect(url_for(".index", scope="all"))


# ---- submission ----------------------------------------------------------------------------

@bp.get("/jobs/new")
@login_required
def new():
    """Pick a job type (and see the templates I can start from)."""
    templates = job_templates.list_templates(actor(), 1, 10)
    return render_template("jobs/new.html", types=vocabulary.type_titles(), help=vocabulary.type_help(), templates=templates.items)


def _form(job_type: str, data: dict | None = None) -> JobForm:
    if job_type not in JOB_TYPES:
        abort(404)
    limits = current_app.config["TIME_LIMITS"][job_type]
    form = JobForm(data=data) if data is not None else JobForm()
    memberships = accounts.my_memberships(current_user)
    return form.setup(job_type, [m.account for m in memberships], job_queries.gpu_models(), limits,
                      datasets.usable(actor()) if current_app.config["SHARED_PVC"] else [])


def _render_form(form: JobForm, job_type: str, status: int = 200, source=None):
    images = job_templates.images_for(job_type)
    if job_type == JobType.JUPYTER:  # notebook images first in a JupyterLab form
        images.sort(key=lambda i: not any(w in f"{i.reference} {i.description}".lower() for w in ("jupyter", "notebook")))
    return render_template("jobs/form.html", form=form, job_type=job_type, type_label=vocabulary.type_titles()[job_type],
                           new_title=vocabulary.new_titles()[job_type],
                           images=images, own_images=own_images.offered(actor(), job_type),
                           custom_images=current_app.config["CUSTOM_IMAGES"],
                           mounts=bool(current_app.config["SHARED_PVC"]), smtp=bool(current_app.config["SMTP_URL"]),
                           limits=current_app.config["TIME_LIMITS"][job_type], source=source,
                           # The outlook loads by itself (htmx) on a fresh form; a form sent back (and so
                           # one sent without JavaScript) has it at once.
                           outlook=_outlook(job_type, {f.name: f.data for f in form}) if form.is_submitted() else None,
                           outlook_later=not form.is_submitted(), free=nodes.model_summary()), status


def _number(value, kind=int, default=0):
    """A form value as a number: the default when empty, None when it does not parse."""
    if value in (None, ""):
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError, ArithmeticError):
        return None
    return number if number == number and abs(number) < 10**12 else None  # no NaN, no absurd sizes


def _outlook(job_type: str, values: dict):
    """What the job would meet now, from the form's values as far as they parse (None when the
    account is not chosen, or not one of the user's)."""
    account_id = _number(values.get("account_id"))
    if not account_id or not 0 < account_id <= MAX_ID:
        return None
    limits = current_app.config["TIME_LIMITS"][job_type]
    cpu = _number(values.get("cpu"), Decimal, Decimal(DEFAULTS["cpu_milli"]) / 1000)
    memory = _number(values.get("memory_gib"), int, DEFAULTS["memory_mib"] // 1024)
    hours = _number(values.get("time_limit_hours"), Decimal, Decimal(str(limits[0])))
    gpus, workers = _number(values.get("gpus")), _number(values.get("workers"), int, DISTRIBUTED_WORKERS)
    if None in (cpu, memory, hours, gpus, workers) or not (0 <= gpus <= outlook.MAX_GPUS and 0 < workers <= 1000 and 0 <= cpu <= 10_000 and 0 <= memory <= 10_000_000
            and 0 < hours <= 100_000):
        return None
    return outlook.submission_outlook(
        actor(), account_id, job_type, gpus, str(values.get("gpu_model") or "")[:100], workers, int(cpu * 1000),
        memory * 1024, str(values.get("when_full") or "queue")[:16], int(hours * 3600), utcnow(),
        QueueSettings.from_config(current_app.config))


@bp.get("/jobs/new/<job_type>/outlook")
@login_required
def form_outlook(job_type):
    """The form's "what you can get" part, as the account, model or count change (htmx)."""
    if job_type not in JOB_TYPES:
        abort(404)
    return render_template("jobs/_outlook.html", outlook=_outlook(job_type, request.args.to_dict()),
                           free=nodes.model_summary(), job_type=job_type)


# A rule's error stands only when the fields it judges parsed: a memory that did not parse says
# so once, not again as a /dev/shm larger than a memory it never had.
RULE_DEPENDS = {"shm_gib": ("memory_gib",), "gpus": ("gpu_model",)}


def _rule_errors_too(form: JobForm, job_type: str) -> None:
    """A form that did not parse in full still hears every rule the parsed fields break, at once
    (an environment line that does not parse no longer hides a /dev/shm beyond the memory)."""
    if getattr(getattr(form, "csrf_token", None), "errors", None):
        return
    try:
        jobs.check_rules(actor(), form.best_effort(job_type), jobs.SubmitSettings.from_config(current_app.config))
    except ValidationFailed as exc:
        for name, message in exc.errors.items():
            field = getattr(form, FIELD_OF.get(name, ""), None)
            if field is None or field.errors or any(getattr(form, d).errors for d in RULE_DEPENDS.get(field.name, ())):
                continue
            field.errors = [*field.errors, message]


@bp.get("/jobs/new/<job_type>")
@login_required
def new_form(job_type):
    """The form for one job type; ?template=<id> starts from a saved template."""
    data, source = None, None
    template_id = request.args.get("template", type=int)
    if template_id:
        template = job_templates.get_template(actor(), template_id)
        if template.job_type != job_type:
            return redirect(url_for(".new_form", job_type=template.job_type, template=template.id))
        data, source = form_data_from_spec(template.spec), template
    return _render_form(_form(job_type, data), job_type, source=source)


@bp.post("/jobs/new/<job_type>")
@login_required
@limits.submissions
def submit(job_type):
    """Parse, then submit (the service checks every rule); field errors come back as 422."""
    form = _form(job_type)
    if not form.validate_on_submit():
        _rule_errors_too(form, job_type)
        return _render_form(form, job_type, 422)
    try:
        job = jobs.submit_job(actor(), form.to_submission(job_type), cluster(),
                              jobs.SubmitSettings.from_config(current_app.config))
    except ValidationFailed as exc:
        apply_errors(form, exc, FIELD_OF)
        return _render_form(form, job_type, 422)
    except QuotaExceeded as exc:
        form.form_errors.append(str(exc))
        return _render_form(form, job_type, 409)
    if job.reason == Reason.SUBMIT_ERROR:
        flash(_("The cluster refused the job: %(error)s", error=job.message), "error")
    elif job.is_queued:
        flash(_("Job %(name)s is queued: %(why)s It starts when its turn comes.", name=job.display_name,
                why=vocabulary.waiting_words(job.queue_blocker)), "success")
    else:
        flash(_("Job %(name)s submitted.", name=job.display_name), "success")
    return redirect(url_for(".show", job_id=job.id), 303)


@bp.get("/jobs/<int:job_id>/clone")
@login_required
def clone(job_id):
    """The job's form again, prefilled (a new name and a new submission key)."""
    job = jobs.get_job(actor(), job_id)
    data = form_data_from_spec(dict(job.spec or {}, account_id=job.account_id))
    data["display_name"] = _("%(name)s (copy)", name=job.display_name)[:128]
    return _render_form(_form(job.job_type, data), job.job_type, source=job)


# ---- one job -------------------------------------------------------------------------------

@bp.get("/jobs/<int:job_id>")
@login_required
def show(job_id):
    """Summary, state and reason in words, pods, events, logs and the submitted spec."""
    return render_template("jobs/show.html", stale=stale_notice(), **_page_context(job_id))


def _page_context(job_id: int) -> dict:
    """What the whole page shows (and a poll's out-of-band parts): the job page's context, the
    owner's opened ports while it runs."""
    context = job_page.job_page(actor(), job_id, utcnow()).context()
    job = context["job"]
    mine = current_user.id == job.user_id
    ports = [(p, port_url(job.id, p.port)) for p in job_ports.ports_of(job.id)] \
        if mine and job.state == JobState.RUNNING.value else []
    return {**context, "form": CsrfOnlyForm(), "ports": ports, "may_open_ports": mine and job.state == JobState.RUNNING.value}


def port_url(job_id: int, port: int) -> str:
    """Where an opened port answers, from the configuration alone (no cluster call)."""
    from ..cluster.manifests import port_path, published_url
    from ..cluster.setup import settings_from
    return published_url(settings_from(current_app.config), port_path(job_id, port))


@bp.post("/jobs/<int:job_id>/ports")
@login_required
def open_port(job_id):
    """Open a port of one's running job behind the portal's sign-in (a TensorBoard on 6006)."""
    try:
        url = job_ports.open_port(actor(), job_id, request.form.get("port", ""), request.form.get("name", ""), cluster(),
                                  utcnow())
        flash(_("Port %(port)s is open at %(url)s (only for you, signed in).", port=request.form.get("port", "").strip(),
                url=url), "success")
    except ValidationFailed as exc:
        flash(" ".join(str(v) for v in exc.errors.values()), "error")
    except DomainError as exc:
        flash(exc.message, "error")
    return redirect(url_for("jobs.show", job_id=job_id, _anchor="ports"), 303)


@bp.post("/jobs/<int:job_id>/ports/<int:port>/close")
@login_required
def close_port(job_id, port):
    try:
        job_ports.close_port(actor(), job_id, port, cluster())
        flash(_("Port %(port)s is closed.", port=port), "success")
    except DomainError as exc:
        flash(exc.message, "error")
    return redirect(url_for("jobs.show", job_id=job_id, _anchor="ports"), 303)


@bp.get("/jobs/<int:job_id>/status")
@login_required
def status(job_id):
    """The polled part of the detail page (DB only); it stops polling once the job has ended.
    A poll that already shows the job's current version gets 204 (htmx keeps the block); a
    pending job's place in line depends on other jobs, so it is always rendered."""
    seen = request.args.get("v", type=int)
    if seen is not None:
        version, state = jobs.poll_state(actor(), job_id)
        if seen == version and state != JobState.PENDING.value:
            return "", 204
    if seen is None or seen == version:  # the fragment alone (a first load, a script, a pending job's place)
        status = job_page.job_status(actor(), job_id, utcnow())
        return render_template("jobs/_status.html", form=CsrfOnlyForm(), **status.context())
    # A poll that finds a new version: the status block, and the rest of the page that follows
    # the state out of band (summary, GPUs, time limit, requests, history, ports)
    context = _page_context(job_id)
    return render_template("jobs/_status.html", **context) + render_template("jobs/_live.html", oob=True, **context)


@bp.get("/jobs/<int:job_id>/logs")
@login_required
def logs(job_id):
    """The last lines of a pod's log (live while the job runs, kept lines once it has ended)."""
    lines = min(max(request.args.get("lines", current_app.config["LOG_TAIL_LINES"], type=int) or 1, 1), 10000)
    job, view = jobs.read_log(actor(), job_id, cluster(), request.args.get("pod", ""), lines)
    template = "jobs/_logs.html" if is_htmx() else "jobs/logs.html"
    return render_template(template, job=job, text=view.text, live=view.live, unavailable=view.unavailable, lines=lines,
                           pod=request.args.get("pod", ""), note=view.note)


@bp.get("/jobs/<int:job_id>/logs/follow")
@login_required
def follow_logs(job_id):
    """The log as it grows (text/plain, streamed) for the page's live view: at most
    CRATER_LOG_FOLLOW_SECONDS per request (a web thread is held meanwhile; the page asks again);
    X-Crater-Log says "follow", or "kept" once no pod of the job is live (the page then stops)."""
    tail = min(max(request.args.get("tail", 0, type=int) or 0, 0), 10000)
    kept, stream = jobs.follow_log(actor(), job_id, cluster(), request.args.get("pod", ""), tail,
                                   current_app.config["LOG_FOLLOW_SECONDS"],
                                   _("The cluster stopped sending the log: %(error)s"))
    if stream is None:
        return Response("", mimetype="text/plain", headers={"X-Crater-Log": "kept"})
    return Response(stream_with_context(stream), mimetype="text/plain",
                    headers={"X-Crater-Log": "follow", "X-Accel-Buffering": "no", "Cache-Control": "no-store"})


@bp.get("/jobs/<int:job_id>/logs/download")
@login_required
def download_logs(job_id):
    job, view = jobs.read_log(actor(), job_id, cluster(), request.args.get("pod", ""), 10000)
    text = view.text
    name = SAFE_FILENAME.sub("-", f"{object_name(job.id)}-{request.args.get('pod', '') or 'log'}")[:100]
    return Response(text, mimetype="text/plain", headers={"Content-Disposition": f'attachment; filename="{name}.txt"'})


@bp.get("/jobs/<int:job_id>/jupyter")
@login_required
def open_jupyter(job_id):
    """The owner's way into a running JupyterLab: a redirect carrying the token from the Secret."""
    url, token = jobs.jupyter_access(actor(), job_id, cluster(), with_token=not current_app.config.get("INGRESS_AUTH_URL"))
    return redirect(f"{url}?token={token}" if token else url, 303)


def _back_to_job(job, message: str):
    if is_htmx():
        status = job_page.job_status(actor(), job.id, utcnow())
        return render_template("jobs/_status.html", flash_now=message, form=CsrfOnlyForm(), **status.context())
    flash(message, "success")
    return redirect(url_for(".show", job_id=job.id), 303)


@bp.get("/jobs/<int:job_id>/stop")
@login_required
def confirm_stop(job_id):
    """A plain confirmation page (the job page's htmx confirm dialog merely shortcuts it)."""
    return render_template("jobs/confirm_stop.html", job=jobs.job_to_stop(actor(), job_id), form=CsrfOnlyForm())


@bp.get("/jobs/<int:job_id>/delete")
@login_required
def confirm_delete(job_id):
    return render_template("jobs/confirm_delete.html", job=jobs.job_to_delete(actor(), job_id), form=CsrfOnlyForm())


@bp.post("/jobs/<int:job_id>/stop")
@login_required
def stop(job_id):
    """Stop a pending or running job (owner, the account's managers, admins)."""
    job = jobs.stop_job(actor(), job_id, cluster())
    if job.reason == Reason.CANCELLED:
        return _back_to_job(job, _("Job %(name)s cancelled; it never reached the cluster.", name=job.display_name))
    return _back_to_job(job, _("Job %(name)s stopped.", name=job.display_name))


@bp.post("/jobs/<int:job_id>/delete")
@login_required
def delete(job_id):
    """Hide an ended job from the lists; the audit log keeps it."""
    job = jobs.delete_job(actor(), job_id)
    flash(_("Job %(name)s deleted.", name=job.display_name), "success")
    if is_htmx():
        return "", 200, {"HX-Redirect": url_for(".index")}
    return redirect(url_for(".index"), 303)


@bp.post("/jobs/<int:job_id>/template")
@login_required
def save_template(job_id):
    """Save the job's form as a template (shared with the account's members if asked)."""
    template = job_templates.save_template(actor(), job_id, request.form.get("name", ""),
                                           request.form.get("shared") == "y")
    flash(_("Template %(name)s saved.", name=template.name), "success")
    return redirect(url_for(".show", job_id=job_id), 303)


# ---- templates and images ------------------------------------------------------------------

@bp.get("/templates")
@login_required
def templates():
    page = job_templates.list_templates(actor(), page_arg(), per_page())
    return render_template("jobs/templates.html", page=page, types=vocabulary.type_titles(), form=CsrfOnlyForm())


@bp.post("/templates/<int:template_id>/delete")
@login_required
def delete_template(template_id):
    job_templates.delete_template(actor(), template_id)
    flash(_("Template deleted."), "success")
    return redirect(url_for(".templates"), 303)


@bp.get("/admin/images")
@login_required
def images():
    return render_template("jobs/images.html", images=job_templates.list_images(actor()), types=vocabulary.type_titles(),
                           form=CsrfOnlyForm(), errors={}, values={})


@bp.post("/admin/images")
@login_required
def add_image():
    values = {"reference": request.form.get("reference", "")[:600], "description": request.form.get("description", ""),
              "job_types": request.form.getlist("job_types")}
    try:
        image = job_templates.add_image(actor(), values["reference"], values["description"], values["job_types"])
    except DomainError as exc:
        return render_template("jobs/images.html", images=job_templates.list_images(actor()), types=vocabulary.type_titles(),
                               form=CsrfOnlyForm(), errors=getattr(exc, "errors", {}), values=values), 422
    flash(_("Image %(ref)s added.", ref=image.reference), "success")
    return redirect(url_for(".images"), 303)


@bp.post("/admin/images/<int:image_id>/delete")
@login_required
def delete_image(image_id):
    job_templates.delete_image(actor(), image_id)
    flash(_("Image removed from the list."), "success")
    return redirect(url_for(".images"), 303)

