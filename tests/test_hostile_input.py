"""Hostile input, everywhere: every form of the portal (every state-changing route in the URL map,
found by walking it, so a new form is covered the day it appears) is posted with every field set
to hostile values: empty, huge, negative, non-numeric, non-finite, control characters, markup,
very long Unicode, repeated fields, fields no form has. The portal never answers 5xx, and a
refused request writes nothing (the audit log aside: refused sign-ins are audited on purpose)."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.models import (Account, ApiToken, ExtensionRequest, Image, Job, JobTemplate, Membership, Node, OutboxMessage,
                           PolicySetting, User)
from portal.views.forms import AccountForm, LoginForm, MemberForm, MemberUpdateForm, RoleForm
from portal.views.job_forms import JobForm
from routes import STATE_CHANGING, fill, rules

HOSTILE = ["", " ", "0", "-1", "-0", "1.5", "1e309", "-1e309", "1e999999999", "NaN", "nan", "Infinity", "-inf", "sNaN",
           "9" * 400, "99999999999999999999", "0x10", "1_000", "<script>alert(1)</script>", "\"><img src=x onerror=1>",
           "\x00", "a\x00b", "\x1b[31mred", "\r\nSet-Cookie: x=1", "../../etc/passwd", "' OR 1=1 --", "%00", "\u202egnp.exe",
           "训练" * 3000, "💥" * 1500, "a" * 20000, "true", "y", "on", "None", "[]", "{}", "MASTER_ADDR=evil", "A=1\nA=2",
           "/", "//evil.example/", "https://evil.example/", "javascript:alert(1)"]
FIELDS = sorted({name for form in (LoginForm, AccountForm, MemberForm, MemberUpdateForm, RoleForm, JobForm)
                 for name in form.__dict__ if not name.startswith("_") and hasattr(form.__dict__[name], "field_class")}
                | {"name", "shared", "reference", "description", "job_types", "lang", "next", "privileged", "hostPath",
                   "hostNetwork", "serviceAccountName", "role", "username", "password", "reason", "key", "value",
                   "account", "job", "start", "end", "hours", "group", "note", "forever", "auto_max_hours",
                   "batch.window_minutes", "minutes", "hours_before", "language", "mail", "scope",
                   "expires_days", "back"})
value = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=300))
form_data = st.dictionaries(st.sampled_from(FIELDS), st.one_of(value, st.lists(value, min_size=2, max_size=3)), max_size=12)


@pytest.fixture
def app_config(fresh_sim, tmp_path):
    sim = fresh_sim()[0]
    return {"KUBECONFIG": str(sim.write_kubeconfig(tmp_path / "kc")), "CLUSTER_TIMEOUT": 3.0}


@pytest.fixture
def world(make):
    admin = make.user("root", role="admin")
    member = make.user("bob")
    account = make.account("vision", gpu_quota=4, members={admin: "manager", member: "member"})
    job = make.job(admin, account, state="Running")
    return {"admin": admin, "user_id": member, "account_id": account, "job_id": job, "request_id": make.extension_request(job, admin),
            "job_type": "batch", "template_id": make.template(admin, account), "image_id": make.image(), "name": make.node("a100-0"),
            "policy": "extensions", "action": "suspend", "decision": "approve", "token_id": make.api_token(admin)[0]}


def snapshot(make):
    """Everything a refused request must leave as it was (not the audit log)."""
    return make.query(lambda s: (
        [(u.id, u.role, u.active, u.language, u.display_name, u.mail_prefs) for u in s.query(User).order_by(User.id)],
        [(a.id, a.name, a.display_name, a.gpu_quota, a.cpu_quota) for a in s.query(Account).order_by(Account.id)],
        [(m.id, m.role, m.gpu_cap) for m in s.query(Membership).order_by(Membership.id)],
        [(j.id, j.state, j.hidden) for j in s.query(Job).order_by(Job.id)],
        s.query(JobTemplate).count(), s.query(Image).count(), s.query(OutboxMessage).count(),
        [(n.name, n.unschedulable, n.cordon_reason, n.reserved_for, n.labels) for n in s.query(Node).order_by(Node.name)],
        [(r.id, r.state, r.hours) for r in s.query(ExtensionRequest).order_by(ExtensionRequest.id)],
        [(p.name, p.params, p.suspended, p.run_now) for p in s.query(PolicySetting).order_by(PolicySetting.name)],
        [(j.id, j.locked_until, j.lock_reason, j.time_limit_seconds) for j in s.query(Job).order_by(Job.id)],
        [(t.id, t.name, t.revoked_at) for t in s.query(ApiToken).order_by(ApiToken.id)]))


def targets(app, world):
    """(method, url) of every state-changing route; a job type route for each type."""
    found = []
    for method, rule in rules(app, STATE_CHANGING):
        if "job_type" in rule.arguments:
            found += [(method, fill(rule, dict(world, job_type=t))) for t in ("jupyter", "batch", "distributed")]
        else:
            found.append((method, fill(rule, world)))
    return found


def test_the_walk_finds_the_forms(app, world):
    urls = {url for _m, url in targets(app, world)}
    assert {"/login", "/jobs/new/batch", "/admin/accounts/new", "/admin/images"} <= urls and len(urls) >= 15


def test_every_form_survives_hostile_values(app, client, make, world):
    checked = []

    # Fresh examples on every developer run; the same ones in CI, so a run there is reproducible.
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=bool(os.environ.get("CI")))
    @given(data=form_data)
    def post_everywhere(data):
        for method, url in targets(app, world):
            client.login(world["admin"])
            before = snapshot(make)
            body = dict(data, csrf_token=client.csrf())
            response = client.http.open(url, method=method, data=body)
            assert response.status_code < 500, (method, url, data, response.get_data(as_text=True)[:500])
            if 400 <= response.status_code < 500:
                assert snapshot(make) == before, (method, url, data, response.status_code)
            checked.append(url)

    post_everywhere()
    assert len(set(checked)) >= 15


QUERY = st.dictionaries(st.sampled_from(["model", "state", "free", "sort", "gpu", "page", "start", "end", "scope", "account",
                                         "group", "hours", "part", "v"]), value, max_size=6)


def test_every_page_with_a_query_survives_hostile_values(app, client, make, world):
    """The GET forms (node filters, usage periods, chart ranges) with hostile query strings: a
    page or a 4xx with a message, never a 5xx."""
    pages = ["/nodes", "/admin/nodes", "/nodes/a100-0", "/nodes/a100-0/gpu.json", "/nodes/-/gpu.json", "/usage", "/usage.csv",
             f"/jobs/{world['job_id']}/gpu.json", "/nodes/a100-0/drain", "/queues", f"/queues/{world['account_id']}"]
    checked = []

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=bool(os.environ.get("CI")))
    @given(query=QUERY)
    def get_everywhere(query):
        client.login(world["admin"])
        for url in pages:
            response = client.http.get(url, query_string=query)
            assert response.status_code < 500, (url, query, response.get_data(as_text=True)[:500])
            checked.append(url)

    get_everywhere()
    assert set(checked) == set(pages)
