"""Authorization over every route: anonymous, plain user, account manager (own and other account),
admin and deactivated user each get the expected status. A new route fails
`test_every_route_is_in_the_matrix` until it is classified here."""
from datetime import UTC, datetime, timedelta

import pytest

from routes import fill, rules

SOON = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1)  # a maintenance's start
ROLES = ("anon", "user", "mgr_own", "mgr_other", "admin", "inactive")


def statuses(anon, user, mgr_own, mgr_other, admin, inactive=None):
    return dict(anon=anon, user=user, mgr_own=mgr_own, mgr_other=mgr_other, admin=admin,
                inactive=anon if inactive is None else inactive)


PUBLIC_200 = statuses(200, 200, 200, 200, 200)
ADMIN_PAGE = statuses(302, 403, 403, 403, 200)
ADMIN_ACTION = statuses(302, 403, 403, 403, 303)
MANAGER_PAGE = statuses(302, 403, 200, 403, 200)
MANAGER_ACTION = statuses(302, 403, 303, 403, 303)
JOB_VIEW = statuses(302, 200, 200, 404, 200)
SIGNED_IN = statuses(302, 200, 200, 200, 200)
NODE_ACTION = statuses(302, 403, 403, 403, 409)  # owner, the account's manager, admin; others 404
API_SIGNED_IN = statuses(401, 200, 200, 200, 200)
API_JOB_VIEW = statuses(401, 200, 200, 404, 200)

# (method, endpoint) -> (form data, expected statuses)
MATRIX = {
    ("GET", "home.index"): (None, statuses(302, 200, 200, 200, 200)),
    ("POST", "home.set_language"): ({"lang": "zh"}, statuses(303, 303, 303, 303, 303)),
    ("GET", "auth.login"): (None, statuses(200, 302, 302, 302, 302, inactive=200)),
    ("POST", "auth.login_post"): ({"username": "nobody", "password": "wrong"}, statuses(401, 401, 401, 401, 401)),
    ("GET", "auth.login_sso"): (None, statuses(302, 302, 302, 302, 302)),
    ("GET", "auth.callback"): (None, statuses(400, 400, 400, 400, 400)),
    ("GET", "auth.logout"): (None, PUBLIC_200),
    ("POST", "auth.logout_post"): (None, statuses(302, 302, 302, 302, 302)),
    ("GET", "health.healthz"): (None, PUBLIC_200),
    ("GET", "health.readyz"): (None, PUBLIC_200),
    ("GET", "telemetry.metrics"): (None, PUBLIC_200),  # from loopback, without a token (see test_telemetry)
    ("GET", "admin_users.index"): (None, ADMIN_PAGE),
    ("POST", "admin_users.set_role"): ({"role": "admin"}, ADMIN_ACTION),
    ("POST", "admin_users.deactivate"): (None, ADMIN_ACTION),
    ("POST", "admin_users.reactivate"): (None, ADMIN_ACTION),
    ("GET", "admin_audit.index"): (None, ADMIN_PAGE),
    ("GET", "admin_accounts.index"): (None, ADMIN_PAGE),
    ("GET", "admin_accounts.new"): (None, ADMIN_PAGE),
    ("POST", "admin_accounts.create"): ({"name": "new-lab", "gpu_quota": "4"}, ADMIN_ACTION),
    ("GET", "admin_accounts.show"): (None, MANAGER_PAGE),
    ("GET", "admin_accounts.edit"): (None, ADMIN_PAGE),
    ("POST", "admin_accounts.update"): ({"display_name": "Own", "gpu_quota": "8"}, ADMIN_ACTION),
    ("GET", "admin_accounts.confirm_delete"): (None, ADMIN_PAGE),
    ("POST", "admin_accounts.delete"): (None, statuses(302, 403, 403, 403, 409)),  # own-lab has a job
    ("POST", "admin_accounts.add_member"): ({"username": "outsider", "role": "member"}, MANAGER_ACTION),
    ("POST", "admin_accounts.update_member"): ({"role": "member", "gpu_cap": "2"}, MANAGER_ACTION),
    ("GET", "admin_accounts.confirm_remove_member"): (None, MANAGER_PAGE),
    ("POST", "admin_accounts.remove_member"): (None, MANAGER_ACTION),
    # jobs: `job` belongs to "user" in own-lab (ended), the template is the user's, shared in own-lab
    ("GET", "jobs.index"): (None, statuses(302, 200, 200, 200, 200)),
    ("GET", "jobs.admin_index"): (None, statuses(302, 403, 403, 403, 302)),
    ("GET", "jobs.new"): (None, statuses(302, 200, 200, 200, 200)),
    ("GET", "jobs.form_outlook"): (None, SIGNED_IN),
    ("GET", "jobs.new_form"): (None, statuses(302, 200, 200, 200, 200)),
    ("POST", "jobs.submit"): ({"display_name": ""}, statuses(302, 422, 422, 422, 422)),
    ("GET", "jobs.show"): (None, JOB_VIEW),
    ("GET", "jobs.status"): (None, JOB_VIEW),
    ("GET", "jobs.logs"): (None, JOB_VIEW),
    ("GET", "jobs.download_logs"): (None, JOB_VIEW),
    ("GET", "jobs.follow_logs"): (None, JOB_VIEW),  # an ended job: empty, "kept"
    # the terminal: the owner's and admins' only, once the job runs (the job here has ended)
    ("GET", "terminal.page"): (None, statuses(302, 409, 404, 404, 409)),
    # its websocket: a plain HTTP request is not a websocket handshake (tests/test_terminal.py checks those)
    ("GET", "terminal.socket"): (None, statuses(400, 400, 400, 400, 400)),
    # the ingress's external auth: no original URL of a running notebook here (tests/test_ingress_auth.py)
    ("GET", "ingress_auth.check"): (None, statuses(401, 403, 403, 403, 403)),
    # job ports: the owner's, while the job runs (here it has ended: said in a flash on the job page)
    ("POST", "jobs.open_port"): ({"port": "6006"}, statuses(302, 303, 303, 303, 303)),
    ("POST", "jobs.close_port"): (None, statuses(302, 303, 303, 303, 303)),
    ("GET", "jobs.clone"): (None, JOB_VIEW),
    ("GET", "jobs.open_jupyter"): (None, statuses(302, 409, 404, 404, 404)),  # the owner's only; not running
    ("GET", "jobs.confirm_stop"): (None, statuses(302, 409, 409, 404, 409)),  # visible but ended
    ("POST", "jobs.stop"): (None, statuses(302, 409, 409, 404, 409)),  # visible but ended
    ("GET", "jobs.confirm_delete"): (None, JOB_VIEW),
    ("POST", "jobs.delete"): (None, statuses(302, 303, 303, 404, 303)),
    ("POST", "jobs.save_template"): ({"name": "mine"}, statuses(302, 303, 303, 404, 303)),
    ("GET", "jobs.templates"): (None, statuses(302, 200, 200, 200, 200)),
    ("POST", "jobs.delete_template"): (None, statuses(302, 303, 404, 404, 303)),
    ("GET", "jobs.images"): (None, ADMIN_PAGE),
    ("POST", "jobs.add_image"): ({"reference": "busybox:1.36", "job_types": "batch"}, ADMIN_ACTION),
    ("POST", "jobs.delete_image"): (None, ADMIN_ACTION),
    # nodes: every signed-in user sees them; admins act (no cluster is configured here, so an
    # admin's action that passed its checks answers 409 "try again")
    ("GET", "nodes.index"): (None, SIGNED_IN),
    ("GET", "nodes.admin_index"): (None, ADMIN_PAGE),
    ("GET", "nodes.show"): (None, SIGNED_IN),
    ("POST", "nodes.cordon"): ({"reason": "maintenance"}, NODE_ACTION),
    ("POST", "nodes.uncordon"): ({"reason": "done"}, NODE_ACTION),
    ("POST", "nodes.reserve"): ({"reason": "deadline", "account": "0"}, statuses(302, 403, 403, 403, 422)),
    ("POST", "nodes.release"): ({"reason": "done"}, NODE_ACTION),
    ("POST", "nodes.set_label"): ({"key": "lab.example.edu/rack", "value": "r2"}, NODE_ACTION),
    ("POST", "nodes.remove_label"): ({"key": "lab.example.edu/rack"}, NODE_ACTION),
    ("GET", "nodes.drain_preview"): (None, ADMIN_PAGE),
    ("POST", "nodes.drain"): ({"reason": "maintenance"}, NODE_ACTION),
    ("POST", "nodes.cancel_drain"): (None, statuses(302, 403, 403, 403, 404)),  # nobody's drain
    ("GET", "maintenance.index"): (None, ADMIN_PAGE),
    ("POST", "maintenance.announce"): ({"message": "power work", "starts": f"{SOON:%Y-%m-%dT%H:%M}",
                                                                 "ends": f"{SOON + timedelta(hours=2):%Y-%m-%dT%H:%M}"},
                                       ADMIN_ACTION),
    ("POST", "maintenance.cancel"): (None, statuses(302, 403, 403, 403, 404)),  # nobody's announcement
    ("GET", "charts.job_gpus"): (None, JOB_VIEW),
    ("GET", "charts.node_gpus"): (None, SIGNED_IN),
    ("GET", "charts.cluster_gpus"): (None, SIGNED_IN),
    ("GET", "usage.index"): (None, SIGNED_IN),
    ("GET", "usage.download"): (None, SIGNED_IN),
    # fair use: the owner asks for time (the matrix's job has ended: 409), admins lock, the
    # account's managers and admins decide (the request's job has ended: 409), admins set policies
    ("POST", "fair_use.extend"): ({"hours": "2", "reason": "deadline"}, statuses(302, 409, 403, 404, 403)),
    ("POST", "fair_use.lock"): ({"hours": "2", "reason": "demo"}, statuses(302, 403, 403, 403, 409)),
    ("POST", "fair_use.unlock"): (None, ADMIN_ACTION),
    ("GET", "fair_use.approvals"): (None, SIGNED_IN),
    ("POST", "fair_use.decide"): ({"note": "ok"}, statuses(302, 404, 409, 404, 409)),
    ("GET", "fair_use.admin_policies"): (None, ADMIN_PAGE),
    ("POST", "fair_use.update_policy"): ({"auto_max_hours": "6"}, ADMIN_ACTION),
    ("POST", "fair_use.policy_action"): (None, ADMIN_ACTION),
    # the queues: every member sees their accounts' queue lengths; the managers and admins the order
    ("GET", "queue.index"): (None, SIGNED_IN),
    ("GET", "queue.show"): (None, MANAGER_PAGE),
    ("GET", "notifications.index"): (None, SIGNED_IN),
    ("GET", "notifications.count"): (None, SIGNED_IN),
    ("POST", "notifications.mark_read"): (None, statuses(302, 303, 303, 303, 303)),
    ("GET", "notifications.settings"): (None, SIGNED_IN),
    ("POST", "notifications.save_settings"): ({"language": "en", "mail": "job_failed"}, statuses(302, 303, 303, 303, 303)),
    # personal access tokens: everyone their own; `token_id` is the plain user's; admins see all
    ("GET", "tokens.index"): (None, SIGNED_IN),
    ("POST", "tokens.create"): ({"name": "ci", "scope": "read", "expires_days": "30"}, statuses(302, 201, 201, 201, 201)),
    ("POST", "tokens.revoke"): (None, statuses(302, 303, 404, 404, 303)),
    ("GET", "tokens.admin_index"): (None, ADMIN_PAGE),
    # the API with the browser's session (tests/test_api.py does every operation with tokens):
    # nobody signed in gets 401 problem+json, not a redirect
    ("GET", "api.me"): (None, API_SIGNED_IN),
    ("GET", "api.jobs_list"): (None, API_SIGNED_IN),
    ("POST", "api.jobs_create"): ({"display_name": ""}, statuses(401, 422, 422, 422, 422)),  # a form, not JSON
    ("GET", "api.job_get"): (None, API_JOB_VIEW),
    ("DELETE", "api.job_delete"): (None, statuses(401, 204, 204, 404, 204)),
    ("POST", "api.job_stop"): (None, statuses(401, 409, 409, 404, 409)),
    ("GET", "api.job_spec"): (None, API_JOB_VIEW),
    ("GET", "api.job_events"): (None, API_JOB_VIEW),
    ("GET", "api.job_logs"): (None, API_JOB_VIEW),
    ("GET", "api.job_jupyter"): (None, statuses(401, 409, 404, 404, 404)),
    ("GET", "api.accounts_list"): (None, API_SIGNED_IN),
    ("GET", "api.gpus"): (None, API_SIGNED_IN),
    ("GET", "api.templates_list"): (None, API_SIGNED_IN),
    ("GET", "api.images_list"): (None, API_SIGNED_IN),
    # restrictions: admins only (`restriction_id` here is nobody's)
    ("GET", "admin_users.restrictions_page"): (None, ADMIN_PAGE),
    ("POST", "admin_users.restrict"): ({"kind": "storage", "reason": "a test"}, ADMIN_ACTION),
    ("POST", "admin_users.lift"): (None, statuses(302, 403, 403, 403, 404)),
    # datasets: every signed-in user registers and lists; `dataset_id` is the plain user's private one
    ("GET", "datasets.index"): (None, SIGNED_IN),
    ("POST", "datasets.create"): ({"name": "x", "kind": "dataset", "path": "nope", "visibility": "private"},
                                  statuses(302, 422, 422, 422, 422)),
    ("GET", "datasets.show"): (None, statuses(302, 200, 404, 404, 200)),
    ("POST", "datasets.update"): ({"description": "d", "visibility": "private"}, statuses(302, 303, 404, 404, 303)),
    ("POST", "datasets.measure"): (None, statuses(302, 303, 404, 404, 303)),
    ("POST", "datasets.share"): ({"user": "alice"}, statuses(302, 303, 404, 404, 303)),
    ("POST", "datasets.unshare"): (None, statuses(302, 404, 404, 404, 404)),
    ("GET", "datasets.confirm_delete"): (None, statuses(302, 200, 404, 404, 200)),
    ("POST", "datasets.delete"): (None, statuses(302, 303, 404, 404, 303)),
    # users' own images: `image_id` is the admins' list's (so nobody's own: 404)
    ("GET", "images.index"): (None, SIGNED_IN),
    ("POST", "images.register"): ({"reference": "busybox:1.36", "job_types": "batch", "visibility": "private"},
                                  statuses(302, 303, 303, 303, 303)),
    ("POST", "images.check"): (None, statuses(302, 404, 404, 404, 404)),
    ("POST", "images.delete"): (None, statuses(302, 404, 404, 404, 404)),
    ("POST", "images.approve"): (None, statuses(302, 403, 403, 403, 404)),
    # files: `path` is the plain user's home; nobody else's but an admin's (tests/test_files.py does every pair)
    ("GET", "files.index"): (None, SIGNED_IN),
    ("GET", "files.browse"): (None, statuses(302, 200, 404, 404, 200)),
    ("POST", "files.act"): ({"op": "mkdir", "name": "new"}, statuses(302, 303, 404, 404, 303)),
    ("GET", "api.openapi"): (None, PUBLIC_200),
    ("GET", "api.docs"): (None, PUBLIC_200),
}


@pytest.fixture
def app_config(oidc_issuer, tmp_path):
    return {"OIDC_ISSUER": oidc_issuer, "OIDC_CLIENT_SECRET": "s", "STORAGE_ROOT": str(tmp_path / "storage")}


@pytest.fixture
def people(make):
    ids = {
        "admin": make.user("root", role="admin"),
        "user": make.user("bob"),
        "mgr_own": make.user("alice"),
        "mgr_other": make.user("carol"),
        "inactive": make.user("gone", active=False),
    }
    make.user("outsider")
    ids["own"] = make.account("own-lab", members={ids["mgr_own"]: "manager", ids["user"]: "member",
                                                  ids["inactive"]: "member"})
    make.account("other-lab", members={ids["mgr_other"]: "manager", ids["user"]: "member"})
    ids["job"] = make.job(ids["user"], ids["own"], job_type="jupyter", last_log="done\n")
    ids["template"] = make.template(ids["user"], ids["own"], shared=True)
    ids["image"] = make.image()
    ids["name"] = make.node("a100-0")
    ids["request_id"] = make.extension_request(ids["job"], ids["user"])
    ids["token_id"] = make.api_token(ids["user"])[0]
    ids["dataset_id"] = make.dataset(ids["user"], "bob-data", "users/bob")
    make.placement("a100-0", ids["job"], gpus=2)
    return ids


def test_every_route_is_in_the_matrix(app):
    routes = {(method, rule.endpoint) for method, rule in rules(app)}
    assert routes == set(MATRIX), f"unclassified: {routes - set(MATRIX)}; stale: {set(MATRIX) - routes}"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method, endpoint", sorted(MATRIX))
def test_route_answers_role_as_expected(app, new_client, people, method, endpoint, role):
    data, expected = MATRIX[(method, endpoint)]
    rule = next(r for m, r in rules(app) if m == method and r.endpoint == endpoint)
    url = fill(rule, {"account_id": people["own"], "user_id": people["user"], "job_id": people["job"],
                      "job_type": "batch", "template_id": people["template"], "image_id": people["image"],
                      "name": people["name"], "request_id": people["request_id"], "decision": "approve",
                      "policy": "extensions", "action": "suspend", "token_id": people["token_id"], "port": 6006,
                      "dataset_id": people["dataset_id"]})
    client = new_client()
    if role != "anon":
        client.login(people[role])
    if method == "GET":
        response = client.get(url)
    else:
        response = client.http.open(url, method=method, data={**(data or {}), "csrf_token": client.csrf()})
    assert response.status_code == expected[role], response.get_data(as_text=True)[:500]
    if response.status_code == 302 and expected[role] == 302 and endpoint not in (
            "auth.login", "auth.login_sso", "auth.logout_post") and (endpoint, role) != ("jobs.admin_index", "admin"):
        assert response.location.startswith("/login")
