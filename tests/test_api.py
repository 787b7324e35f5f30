"""The JSON API (/api/v1) and personal access tokens: the token's life (created on the settings
page and shown once, kept as a hash, used, expired, revoked by its owner or an admin, ended with
its user), scopes, the session with CSRF, problem+json errors, per-token rate limits, cursor
pagination that holds while jobs are added, every operation for every role, and the OpenAPI
description. Jobs go through kubesim with the syncer in the end-to-end tests below."""
import hashlib
import json
import re
from datetime import datetime, timedelta

import pytest
import yaml

from conftest import Factory
from kubesim_fixtures import wait_for
from portal.extensions import db
from portal.models import ApiToken, AuditEntry, Job

TOKEN = re.compile(r"crater_pat_[0-9a-f]{12}_[A-Za-z0-9_-]{40}")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def make_token(app, user_id: int, scope: str = "write", name: str = "laptop", expires_days: int = 30, now=None) -> str:
    return Factory(app).api_token(user_id, name, scope, expires_days, now)[1]


@pytest.fixture
def people(make):
    ids = {"alice": make.user("alice"), "bob": make.user("bob"), "carol": make.user("carol"),
           "root": make.user("root", role="admin")}
    ids["lab"] = make.account("vision-lab", gpu_quota=8, members={ids["alice"]: "member", ids["bob"]: "manager"})
    ids["other"] = make.account("nlp-lab", gpu_quota=8, members={ids["carol"]: "manager"})
    return ids


def is_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:400]
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["title"] and "detail" in body
    return body


# ---- tokens ---------------------------------------------------------------------------------------

def test_a_token_is_shown_once_kept_as_a_hash_and_works_until_revoked(app, new_client, people):
    alice = new_client().login(people["alice"])
    page = alice.post("/settings/tokens", {"name": "laptop", "scope": "read", "expires_days": "30"})
    assert page.status_code == 201 and page.headers["Cache-Control"] == "no-store"
    token = TOKEN.search(page.get_data(as_text=True)).group(0)
    assert TOKEN.search(alice.get("/settings/tokens").get_data(as_text=True)) is None  # never shown again
    with app.app_context():
        row = db.session.query(ApiToken).one()
        assert row.digest == hashlib.sha256(token.encode()).hexdigest() and token not in (row.lookup, row.digest)
        assert row.scope == "read" and row.expires_at - row.created_at == timedelta(days=30) and row.last_used_at is None
    api = app.test_client()
    me = api.get("/api/v1/me", headers=bearer(token))
    assert me.status_code == 200 and me.get_json()["username"] == "alice"
    assert me.get_json()["token"] == {"name": "laptop", "scope": "read", "expires_at": me.get_json()["token"]["expires_at"]}
    assert "Set-Cookie" not in me.headers  # no session for a token
    with app.app_context():
        assert db.session.query(ApiToken).one().last_used_at is not None
    assert "not yet" not in alice.get("/settings/tokens").get_data(as_text=True)
    # read-only: writes are refused before anything happens
    body = is_problem(api.post("/api/v1/jobs", json={"image": "busybox"}, headers=bearer(token)), 403)
    assert "only read" in body["detail"]
    # the same name twice is a field error
    again = alice.post("/settings/tokens", {"name": "laptop", "scope": "read", "expires_days": "30"})
    assert again.status_code == 422 and "already have a token named laptop" in again.get_data(as_text=True)
    with app.app_context():
        token_id = db.session.query(ApiToken.id).scalar()
    assert alice.post(f"/settings/tokens/{token_id}/revoke").status_code == 303
    assert "revoked" in is_problem(api.get("/api/v1/me", headers=bearer(token)), 401)["detail"]
    with app.app_context():
        actions = [a for (a,) in db.session.query(AuditEntry.action).order_by(AuditEntry.id)]
    assert actions[-2:] == ["token.create", "token.revoke"]


def test_bad_expired_and_foreign_tokens_are_refused(app, new_client, people):
    api = app.test_client()
    expired = make_token(app, people["alice"], now=datetime.utcnow() - timedelta(days=31))
    assert "expired" in is_problem(api.get("/api/v1/me", headers=bearer(expired)), 401)["detail"]
    good = make_token(app, people["alice"], name="ci")
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for header in (f"Bearer {forged}", "Bearer nonsense", "Basic YWxpY2U6cHc=", "Bearer ", f"Token {good}"):
        response = api.get("/api/v1/me", headers={"Authorization": header})
        is_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert is_problem(api.get(f"/api/v1/me?access_token={good}"), 401)  # only in the header
    assert api.get("/api/v1/me", headers=bearer(good)).status_code == 200


def test_admins_see_and_revoke_everyones_tokens_and_deactivation_ends_them(app, new_client, people):
    alice_token = make_token(app, people["alice"], name="sweeps")
    carol_token = make_token(app, people["carol"], name="cluster-ci")
    root = new_client().login(people["root"])
    listing = root.get("/admin/tokens").get_data(as_text=True)
    assert "sweeps" in listing and "cluster-ci" in listing and not TOKEN.search(listing)
    assert new_client().login(people["alice"]).get("/admin/tokens").status_code == 403
    with app.app_context():
        carol_id = db.session.query(ApiToken.id).filter_by(name="cluster-ci").scalar()
    assert root.post(f"/settings/tokens/{carol_id}/revoke", {"back": "admin"}).status_code == 303
    api = app.test_client()
    assert api.get("/api/v1/me", headers=bearer(carol_token)).status_code == 401
    # another user cannot revoke alice's token (it is as if it did not exist)
    with app.app_context():
        alice_id = db.session.query(ApiToken.id).filter_by(name="sweeps").scalar()
    assert new_client().login(people["carol"]).post(f"/settings/tokens/{alice_id}/revoke").status_code == 404
    assert api.get("/api/v1/me", headers=bearer(alice_token)).status_code == 200
    assert root.post(f"/admin/users/{people['alice']}/deactivate").status_code == 303
    assert api.get("/api/v1/me", headers=bearer(alice_token)).status_code == 401
    with app.app_context():
        assert db.session.get(ApiToken, alice_id).revoked_by == "root"


def test_the_session_may_call_the_api_but_writes_need_the_csrf_token(app, new_client, people, make):
    job = make.job(people["alice"], people["lab"], state="Running")
    alice = new_client().login(people["alice"])
    assert alice.get("/api/v1/me").get_json()["username"] == "alice"
    body = is_problem(alice.http.post(f"/api/v1/jobs/{job}/stop"), 403)  # e.g. a form on another site
    assert "CSRF" in body["detail"]
    assert is_problem(alice.http.delete(f"/api/v1/jobs/{job}"), 403)
    with app.app_context():
        assert db.session.get(Job, job).state == "Running"
    # with the page's token in the header the write goes through to the service (the job is active: 409)
    assert is_problem(alice.http.delete(f"/api/v1/jobs/{job}", headers={"X-CSRFToken": alice.csrf()}), 409)
    assert is_problem(app.test_client().get("/api/v1/me"), 401)  # signed out


def test_errors_are_problem_json(app, people, new_client):
    api, token = app.test_client(), make_token(app, people["alice"])
    assert is_problem(api.get("/api/v1/no-such-thing", headers=bearer(token)), 404)
    assert is_problem(api.put("/api/v1/jobs", headers=bearer(token)), 405)
    assert is_problem(api.get("/api/v1/jobs/999999", headers=bearer(token)), 404)["detail"] == "No such job."
    huge = "/api/v1/jobs/" + "9" * 25  # beyond any id: a 404, not a driver overflow (nor a 405 for DELETE)
    assert is_problem(api.get(huge, headers=bearer(token)), 404) and is_problem(api.delete(huge, headers=bearer(token)), 404)
    assert new_client().login(people["alice"]).get("/jobs/" + "9" * 25).status_code == 404  # the pages' routes too
    body = is_problem(api.post("/api/v1/jobs", json={"image": 5, "gpus": "two", "privileged": True},
                               headers=bearer(token)), 422)
    assert set(body["errors"]) == {"image", "gpus", "privileged"} and "Unknown field privileged" in body["errors"]["privileged"]
    body = is_problem(api.post("/api/v1/jobs", json={"image": "pytorch/pytorch:2.4", "gpus": 999, "cpu_milli": 0},
                               headers=bearer(token)), 422)
    assert {"gpus", "cpu_milli"} <= set(body["errors"])  # the form's own rules, per field
    assert is_problem(api.post("/api/v1/jobs", data="not json", headers=bearer(token)), 422)["errors"]["body"]
    assert is_problem(api.get("/api/v1/jobs?limit=0", headers=bearer(token)), 422)["errors"]["limit"]
    assert is_problem(api.get("/api/v1/jobs?cursor=garbage!", headers=bearer(token)), 422)["errors"]["cursor"]
    assert is_problem(api.get("/api/v1/jobs?scope=all", headers=bearer(token)), 403)
    with app.app_context():
        assert db.session.query(Job).count() == 0  # nothing half-written


@pytest.fixture
def tight_limit(app_config):
    app_config["RATE_LIMIT_API"] = "5 per minute"  # before `app` is made from it


def test_each_token_has_its_own_rate_limit(tight_limit, app, people):
    api = app.test_client()
    first, second = make_token(app, people["alice"], name="one"), make_token(app, people["alice"], name="two")
    assert [api.get("/api/v1/me", headers=bearer(first)).status_code for _ in range(5)] == [200] * 5
    body = is_problem(over := api.get("/api/v1/me", headers=bearer(first)), 429)
    assert int(over.headers["Retry-After"]) > 0 and body["detail"]
    assert api.get("/api/v1/me", headers=bearer(second)).status_code == 200


def test_cursor_pages_hold_while_jobs_are_added(app, make, people):
    token = make_token(app, people["alice"])
    api = app.test_client()
    first = [make.job(people["alice"], people["lab"], display_name=f"job-{n:02d}") for n in range(25)]

    def walk(sort, limit=10, between=None):
        seen, url = [], f"/api/v1/jobs?sort={sort}&limit={limit}"
        while url:
            page = api.get(url, headers=bearer(token))
            assert page.status_code == 200, page.get_data(as_text=True)
            body = page.get_json()
            seen += [j["id"] for j in body["items"]]
            url = body["links"].get("next")
            assert (page.headers.get("Link") is not None) == bool(url)
            if between and url:
                between()
        return seen

    added = []
    newest = walk("newest", between=lambda: added.append(make.job(people["alice"], people["lab"], display_name="new")))
    assert newest == sorted(first, reverse=True)  # the new ones are newer than the first page: no shift, no repeat
    assert len(added) == 2
    by_name = walk("name", limit=7)
    names = {j: n for j, n in zip(first, range(25))}
    assert [j for j in by_name if j in names] == first and len(by_name) == len(set(by_name)) == 27
    mine_only = api.get("/api/v1/jobs?scope=mine&state=Succeeded&limit=200", headers=bearer(token)).get_json()
    assert len(mine_only["items"]) == 27 and mine_only["next_cursor"] is None
    other = make_token(app, people["carol"], name="c")
    assert api.get("/api/v1/jobs", headers=bearer(other)).get_json()["items"] == []  # carol sees none of them


# ---- every operation for every role -------------------------------------------------------------

def test_every_operation_for_every_role(app, make, people):
    """(method, path) -> status per role; alice owns the job in vision-lab, bob manages it, carol
    manages another account, root is an admin."""
    ended = make.job(people["alice"], people["lab"], state="Succeeded", last_log="done\n")
    running = make.job(people["alice"], people["lab"], state="Running", job_type="jupyter")
    cases = {
        ("GET", "/api/v1/me"): dict(alice=200, bob=200, carol=200, root=200),
        ("GET", "/api/v1/jobs"): dict(alice=200, bob=200, carol=200, root=200),
        ("GET", "/api/v1/jobs?scope=account"): dict(alice=403, bob=200, carol=200, root=200),
        ("GET", "/api/v1/jobs?scope=all"): dict(alice=403, bob=403, carol=403, root=200),
        ("GET", f"/api/v1/jobs/{ended}"): dict(alice=200, bob=200, carol=404, root=200),
        ("GET", f"/api/v1/jobs/{ended}/spec"): dict(alice=200, bob=200, carol=404, root=200),
        ("GET", f"/api/v1/jobs/{ended}/events"): dict(alice=200, bob=200, carol=404, root=200),
        ("GET", f"/api/v1/jobs/{ended}/logs"): dict(alice=200, bob=200, carol=404, root=200),
        ("GET", f"/api/v1/jobs/{running}/jupyter"): dict(alice=409, bob=404, carol=404, root=404),  # owner only
        ("POST", f"/api/v1/jobs/{ended}/stop"): dict(alice=409, bob=409, carol=404, root=409),
        ("DELETE", "/api/v1/jobs/999999"): dict(alice=404, bob=404, carol=404, root=404),
        ("POST", "/api/v1/jobs"): dict(alice=422, bob=422, carol=422, root=422),  # an empty spec
        ("GET", "/api/v1/accounts"): dict(alice=200, bob=200, carol=200, root=200),
        ("GET", "/api/v1/accounts?all=true"): dict(alice=403, bob=403, carol=403, root=200),
        ("GET", "/api/v1/gpus"): dict(alice=200, bob=200, carol=200, root=200),
        ("GET", "/api/v1/templates"): dict(alice=200, bob=200, carol=200, root=200),
        ("GET", "/api/v1/images"): dict(alice=200, bob=200, carol=200, root=200),
        ("GET", "/api/v1/openapi.json"): dict(alice=200, bob=200, carol=200, root=200),
        ("GET", "/api/v1/docs"): dict(alice=200, bob=200, carol=200, root=200),
    }
    tokens = {name: make_token(app, people[name], name=f"t-{name}") for name in ("alice", "bob", "carol", "root")}
    api = app.test_client()
    got = {}
    for (method, path), _expected in cases.items():
        for name, token in tokens.items():
            response = api.open(path, method=method, headers=bearer(token), json={} if method == "POST" else None)
            got[(method, path, name)] = response.status_code
            if response.status_code >= 400:
                assert response.mimetype == "application/problem+json", (method, path)
    assert got == {(m, p, n): s for (m, p), e in cases.items() for n, s in e.items()}
    for (method, path) in cases:
        if path.endswith(("openapi.json", "/docs")):
            continue
        assert api.open(path, method=method).status_code == 401  # nobody
    # delete and stop for real: the owner stops nothing ended, deletes her ended job; the list no longer has it
    assert api.delete(f"/api/v1/jobs/{ended}", headers=bearer(tokens["alice"])).status_code == 204
    assert api.get(f"/api/v1/jobs/{ended}", headers=bearer(tokens["alice"])).status_code == 404
    with app.app_context():
        entry = db.session.query(AuditEntry).filter_by(action="job.delete").one()
        assert entry.actor_name == "alice" and entry.detail["token"] == "t-alice"  # audited as her, token named


def test_accounts_me_and_gpus_say_what_a_script_needs(app, make, people):
    make.job(people["alice"], people["lab"], state="Running", gpus=2, gpu_model="NVIDIA-A100-SXM4-80GB")
    make.job(people["alice"], people["lab"], state="Queued", gpus=8)
    make.node("a100-0", gpus=8)
    api, token = app.test_client(), make_token(app, people["alice"])
    me = api.get("/api/v1/me", headers=bearer(token)).get_json()
    assert {"account": "vision-lab", "account_id": people["lab"], "role": "member", "gpu_cap": None,
            "files_write": False} in me["memberships"]
    accounts = {a["name"]: a for a in api.get("/api/v1/accounts", headers=bearer(token)).get_json()["items"]}
    assert (accounts["vision-lab"]["quota"]["gpus"], accounts["vision-lab"]["queued"]) == (8, 1)
    assert accounts["vision-lab"]["used"]["gpus"] == 2
    gpus = api.get("/api/v1/gpus", headers=bearer(token)).get_json()["items"]
    assert gpus[0]["model"] == "NVIDIA-A100-SXM4-80GB" and gpus[0]["total"] == 8


# ---- the description --------------------------------------------------------------------------------

def test_the_openapi_description_is_valid_and_covers_every_route(app):
    from openapi_spec_validator import validate

    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    described = {(m.upper(), "/api/v1" + re.sub(r"\{(\w+)\}", r"<int:\1>", p)) for p, item in spec["paths"].items()
                 for m in item if m != "parameters"}
    routes = {(m, r.rule) for r in app.url_map.iter_rules() if r.rule.startswith("/api/v1")
              for m in r.methods - {"HEAD", "OPTIONS"} if not r.rule.endswith(("openapi.json", "/docs"))}
    assert routes == described
    docs = app.test_client().get("/api/v1/docs").get_data(as_text=True)
    assert all(op["operationId"] in docs for item in spec["paths"].values() for m, op in item.items() if m != "parameters")


# ---- end to end, against kubesim with the syncer ------------------------------------------------------

@pytest.fixture
def live(fresh_sim, tmp_path, app_config):
    sim = fresh_sim()
    app_config.update(KUBECONFIG=str(sim[0].write_kubeconfig(tmp_path / "kc")), RATE_LIMIT_API="600 per minute")
    return sim


SPEC = {"job_type": "batch", "display_name": "训练 from the API", "account": "vision-lab", "image": "pytorch/pytorch:2.4",
        "command": "python train.py", "gpus": 1, "gpu_model": "NVIDIA-A100-SXM4-80GB", "cpu_milli": 2000,
        "memory_mib": 8192, "time_limit_seconds": 3600, "env": {"SEED": "1"}}


def test_submit_follow_logs_stop_and_a_spec_from_the_page_round_trips(live, app, people, new_client):
    from portal.cluster.setup import cluster_for
    from portal.sync.syncer import SyncSettings, Syncer
    syncer = Syncer(app, cluster_for(app), settings=SyncSettings(lease_seconds=3, watch_timeout=5)).start()
    try:
        api, token = app.test_client(), make_token(app, people["alice"])
        wait_for(lambda: api.get("/api/v1/gpus", headers=bearer(token)).get_json()["items"], timeout=15, what="inventory")
        created = api.post("/api/v1/jobs", json=dict(SPEC, idempotency_key="api-test-0001"), headers=bearer(token))
        assert created.status_code == 201, created.get_data(as_text=True)
        job = created.get_json()
        assert created.headers["Location"] == f"/api/v1/jobs/{job['id']}" and job["state"] == "Pending"
        again = api.post("/api/v1/jobs", json=dict(SPEC, idempotency_key="api-test-0001"), headers=bearer(token))
        assert again.status_code == 200 and again.get_json()["id"] == job["id"]  # the same submission: one job
        wait_for(lambda: api.get(f"/api/v1/jobs/{job['id']}", headers=bearer(token)).get_json()["state"] == "Running",
                 timeout=30, what="running")
        streamed = api.get(f"/api/v1/jobs/{job['id']}/logs?follow=true&tail=5", headers=bearer(token))
        assert streamed.headers["X-Crater-Log"] == "follow"
        text = streamed.get_data(as_text=True)  # the stream ends when the job's container does
        assert text.strip()
        wait_for(lambda: api.get(f"/api/v1/jobs/{job['id']}", headers=bearer(token)).get_json()["state"] == "Succeeded",
                 timeout=30, what="succeeded")
        # the spec the job page shows, submitted again unchanged (as YAML)
        page = new_client().login(people["alice"]).get(f"/jobs/{job['id']}").get_data(as_text=True)
        import html
        shown = html.unescape(re.search(r'<pre[^>]*id="job-spec"[^>]*>(.*?)</pre>', page, re.S).group(1))
        assert yaml.safe_load(shown) == api.get(f"/api/v1/jobs/{job['id']}/spec", headers=bearer(token)).get_json()
        clone = api.post("/api/v1/jobs", data=shown.encode(), headers={**bearer(token), "Content-Type": "application/yaml"})
        assert clone.status_code == 201, clone.get_data(as_text=True)
        cloned = clone.get_json()
        assert cloned["id"] != job["id"] and (cloned["name"], cloned["gpus"], cloned["account"]) == (SPEC["display_name"], 1, "vision-lab")
        with app.app_context():
            assert db.session.get(Job, cloned["id"]).spec == db.session.get(Job, job["id"]).spec
        stopped = api.post(f"/api/v1/jobs/{cloned['id']}/stop", headers=bearer(token))
        assert stopped.status_code == 200 and stopped.get_json()["state"] == "Stopped"
        assert is_problem(api.post(f"/api/v1/jobs/{cloned['id']}/stop", headers=bearer(token)), 409)
        with app.app_context():
            submit_audit = db.session.query(AuditEntry).filter_by(action="job.submit").first()
            assert submit_audit.detail["token"] == "laptop"
        # over quota, refused when asked: 409 and nothing written
        holder = api.post("/api/v1/jobs", json=dict(SPEC, gpus=2, command="sleep infinity", display_name="holder"),
                          headers=bearer(token)).get_json()
        before = len(api.get("/api/v1/jobs?limit=200", headers=bearer(token)).get_json()["items"])
        body = is_problem(api.post("/api/v1/jobs", json=dict(SPEC, gpus=8, when_full="refuse", display_name="big"),
                                   headers=bearer(token)), 409)
        assert "GPU" in body["detail"]
        assert len(api.get("/api/v1/jobs?limit=200", headers=bearer(token)).get_json()["items"]) == before
        queued = api.post("/api/v1/jobs", json=dict(SPEC, gpus=8, display_name="waits"), headers=bearer(token))
        assert queued.status_code == 201 and queued.get_json()["state"] == "Queued"
        assert "uses 2 of 8 GPUs" in queued.get_json()["queue"]["waiting_for"]
        assert api.post(f"/api/v1/jobs/{queued.get_json()['id']}/stop", headers=bearer(token)).get_json()["reason"] == "Cancelled"
        assert api.post(f"/api/v1/jobs/{holder['id']}/stop", headers=bearer(token)).status_code == 200
        json.dumps(body)
    finally:
        syncer.stop()


def test_the_kept_log_of_an_ended_job_honours_tail_and_pod_and_a_queued_job_says_it_has_none(app, make, people, new_client):
    """A distributed job keeps a section per pod: ?pod= gives that pod's lines, ?tail= the last of
    them; a pod it never had is said in words (and the header craterctl prints); a queued job has
    no log yet, said so."""
    kept = "==> crater-7-worker-0 <==\na\nb\nc\n\n==> crater-7-worker-1 <==\nx\ny\nz\n"
    ended = make.job(people["alice"], people["lab"], state="Succeeded", last_log=kept,
                     pods=[{"name": "crater-7-worker-0"}, {"name": "crater-7-worker-1"}])
    queued = make.job(people["alice"], people["lab"], state="Queued")
    api, headers = new_client(), bearer(make_token(app, people["alice"]))
    one = api.get(f"/api/v1/jobs/{ended}/logs?pod=crater-7-worker-1&tail=2", headers=headers)
    assert one.status_code == 200 and one.get_data(as_text=True) == "y\nz\n"
    both = api.get(f"/api/v1/jobs/{ended}/logs?tail=1", headers=headers).get_data(as_text=True)
    assert both.splitlines() == ["==> crater-7-worker-0 <==", "c", "", "==> crater-7-worker-1 <==", "z"]
    nope = api.get(f"/api/v1/jobs/{ended}/logs?pod=other", headers=headers)
    assert nope.get_data(as_text=True) == ""
    assert nope.headers["X-Crater-Log-Unavailable"] == \
        "No lines were kept for pod other (this job's: crater-7-worker-0, crater-7-worker-1)."
    waiting = api.get(f"/api/v1/jobs/{queued}/logs", headers=headers)
    assert waiting.status_code == 200 and waiting.headers["X-Crater-Log-Unavailable"] == \
        f"Job {queued} is Queued: it has no log yet."
