"""Account members: add by username, change role and GPU cap, remove. Admins manage every account,
managers only their own; every change is audited."""
import pytest

from portal.models import AuditEntry, Membership


@pytest.fixture
def lab(make):
    ids = {"manager": make.user("alice"), "bob": make.user("bob"), "carol": make.user("carol"),
           "admin": make.user("root", role="admin")}
    ids["lab"] = make.account("vision-lab", gpu_quota=16, members={ids["manager"]: "manager", ids["bob"]: "member"})
    ids["other"] = make.account("nlp-lab", members={ids["carol"]: "manager"})
    return ids


def members(make, account_id):
    return make.query(lambda s: sorted((m.user.username, m.role, m.gpu_cap)
                                       for m in s.query(Membership).filter_by(account_id=account_id)))


def test_manager_adds_a_member_with_htmx(client, make, lab):
    client.login(lab["manager"])
    response = client.post(f"/admin/accounts/{lab['lab']}/members",
                           {"username": "carol", "role": "member", "gpu_cap": "4"}, htmx=True)
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<section id="members">') and "carol added." in body
    assert ("carol", "member", 4) in members(make, lab["lab"])
    entry = make.query(lambda s: s.query(AuditEntry).filter_by(action="member.add").one())
    assert entry.actor_name == "alice" and entry.detail["username"] == "carol"


def test_add_member_without_js_redirects_to_the_account(client, make, lab):
    client.login(lab["admin"])
    response = client.post(f"/admin/accounts/{lab['lab']}/members", {"username": "carol", "role": "manager"})
    assert response.status_code == 303 and response.location.endswith(f"/admin/accounts/{lab['lab']}")
    assert ("carol", "manager", None) in members(make, lab["lab"])


@pytest.mark.parametrize("data, message", [
    ({"username": "nobody", "role": "member"}, "No user named nobody."),
    ({"username": "bob", "role": "member"}, "bob is already a member of vision-lab."),
    ({"username": "", "role": "member"}, "This field is required."),
    ({"username": "carol", "role": "owner"}, "Not a valid choice."),
    ({"username": "carol", "role": "member", "gpu_cap": "-1"}, "Number must be between 0 and 4096."),
    ({"username": "carol", "role": "member", "gpu_cap": "17"}, "above the account&#39;s GPU quota (16)"),
])
@pytest.mark.parametrize("htmx", [True, False])
def test_bad_member_input_is_422_and_writes_nothing(client, make, lab, data, message, htmx):
    client.login(lab["manager"])
    before = members(make, lab["lab"])
    response = client.post(f"/admin/accounts/{lab['lab']}/members", data, htmx=htmx)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert members(make, lab["lab"]) == before


def test_manager_changes_role_and_cap(client, make, lab):
    client.login(lab["manager"])
    response = client.post(f"/admin/accounts/{lab['lab']}/members/{lab['bob']}",
                           {"role": "manager", "gpu_cap": "2"}, htmx=True)
    assert response.status_code == 200
    assert ("bob", "manager", 2) in members(make, lab["lab"])
    detail = make.query(lambda s: s.query(AuditEntry).filter_by(action="member.update").one().detail)
    assert detail["from"] == {"role": "member", "gpu_cap": None, "files_write": False}
    assert detail["to"] == {"role": "manager", "gpu_cap": 2, "files_write": False}


def test_manager_cannot_demote_or_remove_themselves(client, make, lab):
    client.login(lab["manager"])
    url = f"/admin/accounts/{lab['lab']}/members/{lab['manager']}"
    assert client.post(url, {"role": "member"}, htmx=True).status_code == 409
    assert client.post(url + "/remove", htmx=True).status_code == 409
    assert ("alice", "manager", None) in members(make, lab["lab"])


def test_manager_removes_a_member(client, make, lab):
    client.login(lab["manager"])
    assert client.get(f"/admin/accounts/{lab['lab']}/members/{lab['bob']}/remove").status_code == 200
    response = client.post(f"/admin/accounts/{lab['lab']}/members/{lab['bob']}/remove", htmx=True)
    assert response.status_code == 200 and "bob removed." in response.get_data(as_text=True)
    assert [m[0] for m in members(make, lab["lab"])] == ["alice"]
    assert make.query(lambda s: s.query(AuditEntry).filter_by(action="member.remove").count()) == 1


def test_manager_cannot_touch_another_account(client, make, lab):
    client.login(lab["manager"])
    other = lab["other"]
    assert client.get(f"/admin/accounts/{other}").status_code == 403
    assert client.post(f"/admin/accounts/{other}/members", {"username": "bob", "role": "member"}).status_code == 403
    assert client.post(f"/admin/accounts/{other}/members/{lab['carol']}/remove").status_code == 403
    assert members(make, other) == [("carol", "manager", None)]


def test_member_of_another_account_is_not_found_here(client, make, lab):
    client.login(lab["admin"])
    assert client.post(f"/admin/accounts/{lab['lab']}/members/{lab['carol']}", {"role": "member"}).status_code == 404


def test_nobody_is_removed_from_the_default_account(client, make, lab):
    client.login(lab["admin"])
    default_id = make.query(lambda s: s.query(Membership).filter_by(user_id=lab["bob"]).first().account_id)
    default_id = make.query(lambda s: __import__("portal.models", fromlist=["Account"]).Account.query
                            .filter_by(name="default").one().id)
    assert client.post(f"/admin/accounts/{default_id}/members/{lab['bob']}/remove").status_code == 409


def test_member_list_shows_deactivated_users(client, make, lab):
    client.login(lab["admin"])
    make.query(lambda s: s.add(Membership(account_id=lab["lab"], user_id=make_inactive(s), role="member")) or s.commit())
    assert "deactivated" in client.get(f"/admin/accounts/{lab['lab']}").get_data(as_text=True)


def make_inactive(session):
    from portal.models import User
    user = User(username="sleepy", active=False)
    session.add(user)
    session.flush()
    return user.id


def test_user_input_in_error_messages_is_escaped(client, make, lab):
    client.login(lab["manager"])
    response = client.post(f"/admin/accounts/{lab['lab']}/members",
                           {"username": "<script>alert(1)</script>", "role": "member"}, htmx=True)
    body = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;" in body
