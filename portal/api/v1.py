"""/api/v1 routes: thin wrappers over the services (which check every rule and every object's
authorization), JSON in and out. Lists read the database only, as the pages do."""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import replace
from datetime import date, datetime

import orjson
import yaml
from flask import Response, current_app, g, render_template, request, stream_with_context, url_for
from flask_babel import gettext as _

from .. import limits, vocabulary
from ..vocabulary import JOB_TYPES
from ..models import MAX_ID, Account, Job, JobState
from ..services import accounts, images, job_queries, job_rules, job_templates, jobs, nodes
from ..services import job_spec as specs
from ..services.scheduling import pages as queue_pages
from ..services.errors import NotFound, ValidationFailed
from ..services.job_rules import SubmissionPolicy
from ..views.context import cluster
from .auth import api_actor, bp
from .openapi import description

STATES = [s.value for s in JobState]
MAX_LIMIT = 200
CURSOR = re.compile(r"[A-Za-z0-9_-]{1,1000}")  # the description says ^[A-Za-z0-9_-]{0,1000}$ ("": the first page)

def _time(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(microsecond=0).isoformat() + "Z"
    return value.isoformat() if isinstance(value, date) else str(value)


def _bad(field: str, message: str):
    return ValidationFailed({field: message})


# ---- shapes ---------------------------------------------------------------------------------------

def job_summary(r, base: str) -> dict:
    return {"id": r["id"], "name": r["display_name"], "type": r["job_type"], "state": r["state"], "reason": r["reason"] or "",
            "gpus": r["gpus"], "gpu_model": r["gpu_model"] or "", "user": r["username"], "account": r["account"],
            "created_at": _time(r["created_at"]), "started_at": _time(r["started_at"]),
            "queue_position": r["queue_position"], "queue_estimate": _time(r["queue_estimate"]),
            "borrowed": bool(r["borrowed"]), "url": f"{base}/{r['id']}"}


def job_detail(job: Job) -> dict:
    words, detail = vocabulary.reason_words(job)
    standing = queue_pages.standing(job)
    return {
        "id": job.id, "name": job.display_name, "type": job.job_type, "state": job.state, "reason": job.reason or "",
        "reason_text": str(words), "reason_detail": str(detail or ""), "message": job.message or "",
        "exit_code": job.exit_code, "user": job.user.username, "account": job.account.name, "image": job.image,
        "gpus": job.gpus, "gpu_model": job.gpu_model or "", "workers": job.workers, "cpu_milli": job.cpu_milli,
        "memory_mib": job.memory_mib, "time_limit_seconds": job.time_limit_seconds,
        "borrowed": bool(job.borrowed), "preemptions": job.preemptions or 0, "preempted_at": _time(job.preempted_at),
        "created_at": _time(job.created_at), "started_at": _time(job.started_at), "finished_at": _time(job.finished_at),
        "pods": [{"name": p.get("name", ""), "node": p.get("node") or "", "phase": p.get("phase") or "",
                  "restarts": int(p.get("restarts") or 0)} for p in job.pods or []],
        "queue": None if standing is None else {
            "position": standing.position, "waiting": standing.waiting, "reserved": standing.reserved,
            "waiting_for": vocabulary.waiting_words(standing.blocker) if standing.blocker else "",
            "estimated_start": _time(standing.estimate)},
        "links": {"self": url_for("api.job_get", job_id=job.id), "page": url_for("jobs.show", job_id=job.id),
                  "logs": url_for("api.job_logs", job_id=job.id), "spec": url_for("api.job_spec", job_id=job.id),
                  "events": url_for("api.job_events", job_id=job.id)},
    }


def _encode_cursor(sort: str, key: tuple) -> str:
    return base64.urlsafe_b64encode(json.dumps([sort, key[0], key[1]]).encode()).decode().rstrip("=")


def _decode_cursor(raw: str, sort: str) -> tuple | None:
    """The key a cursor continues from. A malformed one is invalid input (422); one that reads but
    names no page of this listing (not given out by the API, or another listing's) is 404."""
    if not raw:
        return None
    if not CURSOR.fullmatch(raw):
        raise _bad("cursor", _("This cursor is not one the API gave out."))
    try:
        cursor_sort, value, last_id = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise NotFound(_("This cursor is not one the API gave out.")) from None
    if cursor_sort != sort or not isinstance(last_id, int) or isinstance(last_id, bool) or \
            not isinstance(value, (int, str)) or isinstance(value, bool):
        raise NotFound(_("This cursor belongs to another listing: keep the same filters and sort."))
    return value, last_id


def _limit() -> int:
    raw = request.args.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise _bad("limit", _("limit is a whole number from 1 to %(n)s.", n=MAX_LIMIT))
    return int(raw)


def _page(items: list, key: tuple | None, cursor_kind: str, endpoint: str, **args) -> Response:
    """A page of a list, with its cursor and links (orjson: a page is the API's largest answer)."""
    body = {"items": items, "next_cursor": None, "links": {}}
    headers = {}
    if key is not None:
        cursor = _encode_cursor(cursor_kind, key)
        nxt = url_for(endpoint, **{k: v for k, v in args.items() if v not in (None, "")}, cursor=cursor)
        body["next_cursor"], body["links"]["next"] = cursor, nxt
        headers["Link"] = f'<{nxt}>; rel="next"'
    return Response(orjson.dumps(body), mimetype="application/json", headers=headers)


# ---- jobs -------------------------------------------------------------------------------------

@bp.get("/jobs")
def jobs_list():
    """Jobs with the list page's scopes, filters and sorting, in pages that a cursor continues."""
    args = request.args
    scope, state, job_type = args.get("scope", "mine"), args.get("state", ""), args.get("type", "")
    sort, text = args.get("sort", "newest"), args.get("q", "").strip()
    errors = {}
    if scope not in job_queries.SCOPES:
        errors["scope"] = _("scope is one of: %(v)s.", v=", ".join(job_queries.SCOPES))
    if state and state not in STATES + ["active"]:
        errors["state"] = _("state is a job state or active.")
    if job_type and job_type not in JOB_TYPES:
        errors["type"] = _("type is one of: %(v)s.", v=", ".join(JOB_TYPES))
    if sort not in job_queries.SORTS:
        errors["sort"] = _("sort is one of: %(v)s.", v=", ".join(job_queries.SORTS))
    account = args.get("account", "")
    if account and (not account.isdigit() or not 1 <= int(account) <= MAX_ID):
        errors["account"] = _("account is an account id.")
    if len(text) > 100:
        errors["q"] = _("q is at most 100 characters.")
    if errors:
        raise ValidationFailed(errors)
    limit = _limit()
    f = job_queries.JobFilter(scope=scope, state=state, job_type=job_type, account_id=int(account) if account else None,
                              text=text, sort=sort)
    rows, key = job_queries.list_jobs_after(api_actor(), f, _decode_cursor(args.get("cursor", ""), sort), limit)
    base = url_for("api.jobs_list")  # one url_for for the page, not one per job
    items = [job_summary(r, base) for r in rows]
    return _page(items, key, sort, "api.jobs_list", scope=scope, state=state, type=job_type, account=account, q=text,
                 sort=sort, limit=limit)


@bp.get("/jobs/<int:job_id>")
def job_get(job_id):
    return job_detail(jobs.get_job(api_actor(), job_id))


@bp.post("/jobs")
@limits.submissions
def jobs_create():
    """Submit a job from its spec (the same rules and field errors as the form): 201 with the job,
    queued or pending; 200 with the first job when its idempotency_key was seen before."""
    actor = api_actor()
    body = request.get_json(silent=True) if request.is_json else None
    if body is None and request.mimetype in ("application/yaml", "application/x-yaml", "text/yaml"):
        try:
            body = yaml.safe_load(request.get_data(as_text=True))
        except yaml.YAMLError:
            raise _bad("body", _("This is not YAML a spec can be read from.")) from None
    if body is None:
        raise _bad("body", _("Send the spec as application/json (or application/yaml)."))
    submission = specs.from_body(body, account_id=0)  # field types first, then whose account
    submission = replace(submission, account_id=accounts.account_for_submission(actor, int(body["account_id"]) if "account_id" in body else None,
                                                                                body.get("account") or ""))
    seen = submission.idempotency_key and jobs.by_key(actor.user.id, submission.idempotency_key) is not None
    job = jobs.submit_job(actor, submission, cluster(), jobs.SubmitSettings.from_config(current_app.config))
    status = 200 if seen else 201
    return job_detail(job), status, {"Location": url_for("api.job_get", job_id=job.id)}


@bp.post("/jobs/<int:job_id>/stop")
def job_stop(job_id):
    return job_detail(jobs.stop_job(api_actor(), job_id, cluster()))


@bp.delete("/jobs/<int:job_id>")
def job_delete(job_id):
    jobs.delete_job(api_actor(), job_id)
    return "", 204


@bp.get("/jobs/<int:job_id>/spec")
def job_spec(job_id):
    """The job's spec as submitted, with its account: what to submit again (a clone). ?format=yaml
    gives the YAML the job page shows."""
    spec = jobs.exported_spec(jobs.get_job(api_actor(), job_id))
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "yaml"):
        raise _bad("format", _("format is json or yaml."))
    if fmt == "yaml":
        return Response(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), mimetype="application/yaml")
    return spec


@bp.get("/jobs/<int:job_id>/events")
def job_events(job_id):
    job = jobs.get_job(api_actor(), job_id)
    return {"items": [{"type": e.type, "reason": e.reason, "message": e.message, "count": e.count,
                       "object": e.object_name, "last_seen": _time(e.last_seen)}
                      for e in job_queries.job_events(job.id, 100)]}


@bp.get("/jobs/<int:job_id>/logs")
def job_logs(job_id):
    """The last lines of a pod's log (text/plain). With follow=true, the log streams as it grows
    until the job ends, or for CRATER_LOG_FOLLOW_SECONDS (craterctl then asks again)."""
    raw_tail = request.args.get("tail", str(current_app.config["LOG_TAIL_LINES"]))
    if not raw_tail.isdigit() or not 0 <= int(raw_tail) <= 10000:
        raise _bad("tail", _("tail is a whole number from 0 to 10000."))
    follow = request.args.get("follow", "false")
    if follow not in ("true", "false", "1", "0"):
        raise _bad("follow", _("follow is true or false."))
    pod, tail = request.args.get("pod", ""), int(raw_tail)
    actor = api_actor()
    if follow in ("false", "0"):
        _job, view = jobs.read_log(actor, job_id, cluster(), pod, max(tail, 1))
        text = view.text if tail else ""
        headers = {"X-Crater-Log": "live" if view.live else "kept"}
        if view.unavailable or view.note:
            headers["X-Crater-Log-Unavailable"] = (view.unavailable or view.note)[:200]
        return Response(text, mimetype="text/plain", headers=headers)
    # Words made now: the stream runs after the request's session has ended (no user to ask).
    kept, stream = jobs.follow_log(actor, job_id, cluster(), pod, tail, current_app.config["LOG_FOLLOW_SECONDS"],
                                   _("The cluster stopped sending the log: %(error)s"))
    if stream is None:
        return Response(kept if tail else "", mimetype="text/plain", headers={"X-Crater-Log": "kept"})
    return Response(stream_with_context(stream), mimetype="text/plain",
                    headers={"X-Crater-Log": "follow", "X-Accel-Buffering": "no"})


@bp.get("/jobs/<int:job_id>/jupyter")
def job_jupyter(job_id):
    """The owner's link into a running JupyterLab (it carries the notebook's token)."""
    url, token = jobs.jupyter_access(api_actor(), job_id, cluster(), with_token=not current_app.config.get("INGRESS_AUTH_URL"))
    return {"url": f"{url}?token={token}" if token else url}


# ---- the rest ---------------------------------------------------------------------------------

@bp.get("/me")
def me():
    actor = api_actor()
    user, token = actor.user, g.get("api_token")
    return {"id": user.id, "username": user.username, "display_name": user.display_name or "", "email": user.email or "",
            "admin": bool(user.is_admin),
            "memberships": [{"account": m.account.name, "account_id": m.account.id, "role": m.role, "gpu_cap": m.gpu_cap,
                             "files_write": m.files_write or m.is_manager}
                            for m in accounts.my_memberships(user)],
            "token": None if token is None else {"name": token.name, "scope": token.scope,
                                                 "expires_at": _time(token.expires_at)}}


def account_json(account: Account, role: str | None, used: dict, queued: int) -> dict:
    return {"id": account.id, "name": account.name, "display_name": account.display_name or "", "role": role,
            "expires_on": _time(account.expires_on),
            "quota": {"gpus": account.gpu_quota, "cpu": account.cpu_quota, "memory_gib": account.memory_quota_gib,
                      "max_jobs": account.max_jobs,
                      "gpus_per_model": {q.gpu_model: q.gpus for q in account.gpu_model_quotas}},
            "used": used, "queued": queued}


@bp.get("/accounts")
def accounts_list():
    """My accounts with their quotas and what their jobs use now; admins: ?all=true for every account."""
    actor = api_actor()
    everyone = request.args.get("all", "false")
    if everyone not in ("true", "false"):
        raise _bad("all", _("all is true or false."))
    limit = _limit()
    after = _decode_cursor(request.args.get("cursor", ""), "accounts")
    rows, roles, more = accounts.accounts_after(actor, everyone == "true", after[1] if after else None, limit)
    ids = [a.id for a in rows]
    used = job_queries.usage_by_account(ids)
    queued = queue_pages.queued_counts(ids)
    items = [account_json(a, roles.get(a.id), used.get(a.id, {}), queued.get(a.id, 0)) for a in rows]
    return _page(items, (rows[-1].id, rows[-1].id) if more else None, "accounts", "api.accounts_list", all=everyone,
                 limit=limit)


@bp.get("/gpus")
def gpus():
    """GPUs per model: in total, in use, free, the largest free block on one node, waiting."""
    return {"items": [{"model": m["model"] or "", "total": m["total"] or 0, "used": m["used"] or 0, "free": m["free"] or 0,
                       "largest_free_on_one_node": m["largest"] or 0, "reserved": m["reserved"] or 0,
                       "nodes": m["nodes"] or 0, "waiting": m["waiting"]}
                      for m in nodes.model_summary() if m["model"] is not None]}


@bp.get("/templates")
def templates_list():
    """My templates and those shared in my accounts, with their specs."""
    actor = api_actor()
    page = request.args.get("page", "1")
    if not page.isdigit() or int(page) < 1:
        raise _bad("page", _("page is a whole number from 1."))
    listing = job_templates.list_templates(actor, int(page), _limit())
    return {"items": [{"id": t.id, "name": t.name, "type": t.job_type, "shared": t.shared, "owner": t.user.username,
                       "account": t.account.name if t.account else None, "spec": t.spec} for t in listing.items],
            "page": listing.page, "has_next": listing.has_next}


@bp.get("/images")
def images_list():
    """The images offered, per job type: the administrators' list, then the caller's own and
    those shared with them (as the job forms offer them)."""
    items = {}
    own = images.offered(api_actor())
    for job_type in JOB_TYPES:
        for image in [*job_rules.images_for(job_type), *(i for i in own if i.offered_for(job_type))]:
            items.setdefault(image.id, {"reference": image.reference, "description": image.description or "",
                                        "job_types": [], "owner": image.owner.username if image.owner else None}
                             )["job_types"].append(job_type)
    return {"items": list(items.values())}


@bp.get("/openapi.json")
def openapi():
    return _description()


@bp.get("/docs")
def docs():
    """A page for reading the description: every operation, its parameters and answers."""
    return render_template("api/docs.html", spec=_description())


def _description() -> dict:
    return description(job_rules.spec_context(SubmissionPolicy.from_config(current_app.config)))

