"""The API's OpenAPI 3.1 description (served at /api/v1/openapi.json, checked by
openapi-spec-validator, and fuzzed by schemathesis against the live API in the tests). Kept beside
the routes in v1.py: a route without its operation here fails the tests."""
from __future__ import annotations

from ..services import job_spec
from ..models import MAX_ID, JobState
from ..models.token import TOKEN_PREFIX
from ..services.job_queries import SCOPES, SORTS
from ..vocabulary import JOB_TYPES

S, I, B = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
NS, NI = {"type": ["string", "null"]}, {"type": ["integer", "null"]}
TIME = {"type": ["string", "null"], "format": "date-time"}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str] | None = None, **props) -> dict:
    return {"type": "object", "properties": props, **({"required": required} if required else {})}


def page_of(item: dict) -> dict:
    return obj(["items", "next_cursor", "links"], items={"type": "array", "items": item}, next_cursor=NS,
               links=obj(next=S))


def problem_response(text: str) -> dict:
    return {"description": text, "content": {"application/problem+json": {"schema": ref("Problem")}}}


def json_response(text: str, schema: dict, headers: dict | None = None) -> dict:
    return {"description": text, "content": {"application/json": {"schema": schema}}, **({"headers": headers} if headers else {})}


ERRORS = {
    "400": problem_response("The request cannot be read (e.g. a session write without its CSRF token is 403)"),
    "401": problem_response("No valid token or session: send Authorization: Bearer " + TOKEN_PREFIX + "…"),
    "403": problem_response("Not allowed for this user, or this token may only read, or a session write lacks its CSRF token"),
    "404": problem_response("No such object, or not one this user may see"),
    "409": problem_response("Not possible in the object's state now (e.g. the job has ended), or over quota with when_full=refuse"),
    "422": problem_response("Invalid input: `errors` names each field"),
    "429": problem_response("Too many requests for this token: wait (Retry-After) and try again"),
    "503": problem_response("The database does not answer: try again in a few seconds"),
}


def answers(ok: dict, *codes: str) -> dict:
    out = dict(ok)
    for code in ("401", "429", "503", *codes):
        out[code] = ERRORS[code]
    return out


def param(name: str, where: str, schema: dict, text: str, required: bool = False) -> dict:
    return {"name": name, "in": where, "schema": schema, "description": text, "required": required or where == "path"}


JOB_ID = param("job_id", "path", {"type": "integer", "minimum": 1}, "The job's id")
LIMIT = param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Items per page")
CURSOR = param("cursor", "query", {"type": "string", "pattern": "^[A-Za-z0-9_-]{0,1000}$"},
               "From a previous page's next_cursor (keep the same filters and sort); one that names no page: 404")

SCHEMAS = {
    "Problem": obj(["type", "title", "status", "detail"], type=S, title=S, status=I, detail=S, instance=S, request_id=S,
                   errors={"type": "object", "additionalProperties": S, "description": "field -> what is wrong"}),
    "JobSummary": obj(["id", "name", "type", "state", "url"], id=I, name=S, type=S, state=S, reason=S, gpus=I,
                      gpu_model=S, user=S, account=S, created_at=TIME, started_at=TIME, queue_position=NI,
                      queue_estimate=TIME, borrowed={"type": "boolean", "description":
                                                      "runs (or last ran) beyond its account's guarantee: may be preempted"}, url=S),
    "Job": obj(["id", "name", "type", "state", "links"], id=I, name=S, type=S, state=S, reason=S, reason_text=S,
               reason_detail=S, message=S, exit_code=NI, user=S, account=S, image=S, gpus=I, gpu_model=S, workers=I,
               cpu_milli=I, memory_mib=I, time_limit_seconds=NI, borrowed={"type": "boolean"}, preemptions=I,
               preempted_at=TIME, created_at=TIME, started_at=TIME, finished_at=TIME,
               pods={"type": "array", "items": obj(name=S, node=S, phase=S, restarts=I)},
               queue={"oneOf": [{"type": "null"}, obj(position=NI, waiting=I, reserved=B, waiting_for=S, estimated_start=TIME)]},
               links=obj(self=S, page=S, logs=S, spec=S, events=S)),
    "Event": obj(type=S, reason=S, message=S, count=I, object=S, last_seen=TIME),
    "Membership": obj(["account", "account_id", "role"], account=S, account_id=I, role=S, gpu_cap=NI, files_write=B),
    "Me": obj(["id", "username", "memberships"], id=I, username=S, display_name=S, email=S, admin=B,
              memberships={"type": "array", "items": ref("Membership")},
              token={"oneOf": [{"type": "null"}, obj(name=S, scope=S, expires_at=TIME)]}),
    "Account": obj(["id", "name", "quota", "used"], id=I, name=S, display_name=S, role=NS, expires_on=NS,
                   quota=obj(gpus=NI, cpu=NI, memory_gib=NI, max_jobs=NI,
                             gpus_per_model={"type": "object", "additionalProperties": I}),
                   used=obj(gpus=I, cpu={"type": "number"}, memory_gib={"type": "number"}, jobs=I,
                            gpus_per_model={"type": "object", "additionalProperties": I}), queued=I),
    "GpuModel": obj(["model", "total", "used", "free"], model=S, total=I, used=I, free=I, largest_free_on_one_node=I,
                    reserved=I, nodes=I, waiting=I),
    "Template": obj(["id", "name", "type"], id=I, name=S, type=S, shared=B, owner=S, account=NS,
                    spec={"type": "object"}),
    "Image": obj(["reference", "job_types"], reference=S, description=S, job_types={"type": "array", "items": S},
                 owner={"type": ["string", "null"], "description": "null: the administrators' list; else a user's own"}),
}

LINK = {"Link": {"description": 'The next page: <url>; rel="next"', "schema": S}}
LOCATION = {"Location": {"description": "The job's URL in the API", "schema": S}}


def _paths() -> dict:
    job = json_response("The job", ref("Job"))
    states = [s.value for s in JobState] + ["active"]
    return {
        "/jobs": {
            "get": {"operationId": "listJobs", "summary": "List jobs (the job list's scopes, filters and sort)",
                    "parameters": [
                        param("scope", "query", {"type": "string", "enum": list(SCOPES), "default": "mine"},
                              "mine; account: the accounts I manage (admins: all); all: admins"),
                        param("state", "query", {"type": "string", "enum": states + [""]}, "One state, or active (not ended); empty: any"),
                        param("type", "query", {"type": "string", "enum": list(JOB_TYPES) + [""]}, "Job type; empty: any"),
                        param("account", "query", {"type": "integer", "minimum": 1, "maximum": MAX_ID}, "An account's id"),
                        param("q", "query", {"type": "string", "maxLength": 100}, "Words in the name or image, or a job id"),
                        param("sort", "query", {"type": "string", "enum": list(SORTS), "default": "newest"}, "Order"),
                        LIMIT, CURSOR],
                    "responses": answers({"200": json_response("A page of jobs", page_of(ref("JobSummary")), LINK)},
                                         "403", "404", "422")},
            "post": {"operationId": "submitJob", "summary": "Submit a job from its spec (the form's rules and field errors)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": ref("Spec")},
                                                                   "application/yaml": {"schema": ref("Spec")}}},
                     "responses": answers({"201": json_response("Submitted: the job, pending or queued", ref("Job"), LOCATION),
                                           "200": json_response("This idempotency_key was seen: the first job", ref("Job"),
                                                                LOCATION)},
                                          "400", "403", "404", "409", "422")},
        },
        "/jobs/{job_id}": {
            "parameters": [JOB_ID],
            "get": {"operationId": "getJob", "summary": "A job, with its state and reason in words",
                    "responses": answers({"200": job}, "404")},
            "delete": {"operationId": "deleteJob", "summary": "Hide an ended job from the lists (the audit log keeps it)",
                       "responses": answers({"204": {"description": "Deleted"}}, "400", "403", "404", "409")},
        },
        "/jobs/{job_id}/stop": {
            "parameters": [JOB_ID],
            "post": {"operationId": "stopJob", "summary": "Stop a pending or running job, or cancel a queued one",
                     "responses": answers({"200": job}, "400", "403", "404", "409")},
        },
        "/jobs/{job_id}/spec": {
            "parameters": [JOB_ID],
            "get": {"operationId": "getJobSpec", "summary": "The submitted spec with its account: submit it again to clone",
                    "parameters": [param("format", "query", {"type": "string", "enum": ["json", "yaml"]}, "yaml: as the page shows it")],
                    "responses": answers({"200": {"description": "The spec", "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "application/yaml": {"schema": {"type": "object"}}}}}, "404", "422")},
        },
        "/jobs/{job_id}/events": {
            "parameters": [JOB_ID],
            "get": {"operationId": "getJobEvents", "summary": "The job's Kubernetes events the syncer kept",
                    "responses": answers({"200": json_response("Events", obj(["items"], items={"type": "array",
                                                                                                "items": ref("Event")}))}, "404")},
        },
        "/jobs/{job_id}/logs": {
            "parameters": [JOB_ID],
            "get": {"operationId": "getJobLogs", "summary": "The log's last lines; follow=true streams it as it grows",
                    "parameters": [param("tail", "query", {"type": "integer", "minimum": 0, "maximum": 10000}, "Lines"),
                                   param("follow", "query", {"type": "string", "enum": ["true", "false", "1", "0"]}, "Stream"),
                                   param("pod", "query", S, "A pod of the job (default: the first)")],
                    "responses": answers({"200": {"description": "The log", "content": {"text/plain": {"schema": S}}}},
                                         "404", "422")},
        },
        "/jobs/{job_id}/jupyter": {
            "parameters": [JOB_ID],
            "get": {"operationId": "getJupyterLink", "summary": "The owner's link into a running JupyterLab",
                    "responses": answers({"200": json_response("The link (it carries the notebook's token)",
                                                               obj(["url"], url=S))}, "404", "409")},
        },
        "/me": {"get": {"operationId": "getMe", "summary": "Who I am, my memberships, the token in use",
                        "responses": answers({"200": json_response("Me", ref("Me"))})}},
        "/accounts": {"get": {
            "operationId": "listAccounts", "summary": "My accounts with quotas and use; admins: all=true for every account",
            "parameters": [param("all", "query", {"type": "string", "enum": ["true", "false"]}, "Every account (admins)"),
                           LIMIT, CURSOR],
            "responses": answers({"200": json_response("Accounts", page_of(ref("Account")), LINK)}, "403", "404", "422")}},
        "/gpus": {"get": {"operationId": "listGpus", "summary": "GPUs per model: total, used, free",
                          "responses": answers({"200": json_response("Per model", obj(["items"], items={
                              "type": "array", "items": ref("GpuModel")}))})}},
        "/templates": {"get": {
            "operationId": "listTemplates", "summary": "My templates and those shared in my accounts",
            "parameters": [param("page", "query", {"type": "integer", "minimum": 1}, "Page"), LIMIT],
            "responses": answers({"200": json_response("Templates", obj(["items"], items={"type": "array", "items": ref("Template")},
                                                                          page=I, has_next=B))}, "422")}},
        "/images": {"get": {"operationId": "listImages", "summary": "The images offered, per job type",
                            "responses": answers({"200": json_response("Images", obj(["items"], items={
                                "type": "array", "items": ref("Image")}))})}},
    }


def description(context: dict) -> dict:
    """The description for this deployment: the spec's schema from services.job_spec's table with
    `context` (services.job_rules.spec_context: time limits, offered images, GPU models)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Crater API", "version": "1",
                 "description": "Jobs, accounts and GPUs of the Crater portal, for scripts and craterctl. Authenticate "
                                f"with a personal access token (Settings → Access tokens): `Authorization: Bearer "
                                f"{TOKEN_PREFIX}…`. Errors are application/problem+json."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}, {"sessionCookie": []}],
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "A personal access token"},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "crater_session",
                                  "description": "The browser's session; writes also need the X-CSRFToken header"}},
            "schemas": {**SCHEMAS, "Spec": job_spec.body_schema(context["max_hours"], context["images"], context["models"],
                                                                     context["largest"])}},
        "paths": _paths(),
    }
