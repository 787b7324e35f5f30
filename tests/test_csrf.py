"""Every state-changing route refuses a request without a valid CSRF token, and writes nothing."""
import pytest

from portal.models import AuditEntry, Image, Job, JobTemplate, Membership, User
from routes import STATE_CHANGING, fill, rules


@pytest.fixture
def world(make):
    admin = make.user("root", role="admin")
    member = make.user("bob")
    account = make.account("vision", members={admin: "manager", member: "member"})
    job = make.job(admin, account, state="Running")
    return {"admin": admin, "user_id": member, "account_id": account, "job_id": job, "job_type": "batch",
            "request_id": make.extension_request(job, admin),
            "template_id": make.template(admin, account), "image_id": make.image(), "name": make.node("a100-0"),
            "policy": "extensions", "action": "suspend", "decision": "approve", "token_id": make.api_token(admin)[0]}


def snapshot(make):
    return make.query(lambda s: (s.query(AuditEntry).count(), s.query(Membership).count(),
                                 [(u.role, u.active) for u in s.query(User).order_by(User.id)],
                                 [(j.state, j.hidden) for j in s.query(Job).order_by(Job.id)],
                                 s.query(Job).count(), s.query(JobTemplate).count(), s.query(Image).count()))


def test_there_are_state_changing_routes_to_check(app):
    assert len(list(rules(app, STATE_CHANGING))) >= 10


@pytest.mark.parametrize("htmx", [False, True])
def test_every_state_changing_route_rejects_a_missing_token(app, client, make, world, htmx):
    client.login(world["admin"])
    before = snapshot(make)
    checked = []
    for method, rule in rules(app, STATE_CHANGING):
        url = fill(rule, world)
        headers = {"HX-Request": "true"} if htmx else {}
        response = client.http.open(url, method=method, data={"role": "admin", "username": "bob"}, headers=headers)
        if url.startswith("/api/"):  # the API with the browser's session: a problem+json 403
            assert response.status_code == 403 and response.mimetype == "application/problem+json", f"{method} {url}"
            assert "CSRF" in response.get_json()["detail"]
        else:
            assert response.status_code == 400, f"{method} {url} answered {response.status_code} without a CSRF token"
            assert "expired" in response.get_data(as_text=True)
        checked.append(url)
    assert snapshot(make) == before
    assert checked


def test_a_token_from_another_session_is_refused(app, new_client, make, world):
    stranger = new_client()
    foreign_token = stranger.csrf()
    victim = new_client().login(world["admin"])
    response = victim.post(f"/admin/users/{world['user_id']}/deactivate", {"csrf_token": foreign_token})
    assert response.status_code == 400
    assert make.query(lambda s: s.get(User, world["user_id"]).active) is True


def test_the_header_token_is_accepted_for_htmx(app, client, make, world):
    client.login(world["admin"])
    token = client.csrf()
    response = client.http.post(f"/admin/users/{world['user_id']}/deactivate",
                                headers={"HX-Request": "true", "X-CSRFToken": token})
    assert response.status_code == 200
    assert make.query(lambda s: s.get(User, world["user_id"]).active) is False
