"""SSO end to end against a real OpenID Connect provider on loopback (oidc-provider-mock):
discovery, authorize, token, JWKS-verified ID token, userinfo; denied logins and tampered state."""
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from portal.models import Account, Membership, User

pytestmark = pytest.mark.oidc


@pytest.fixture
def app_config(oidc_issuer):
    return {"OIDC_ISSUER": oidc_issuer, "OIDC_CLIENT_SECRET": "test-secret", "OIDC_ADMIN_GROUP": "gpu-admins"}


def set_claims(issuer, sub, **claims):
    requests.put(f"{issuer}/users/{sub}", json=claims, timeout=5).raise_for_status()


def start_login(client, next_="/"):
    response = client.get(f"/login/sso?next={next_}")
    assert response.status_code == 302
    return response.location  # the provider's authorize URL


def provider_answer(authorize_url, sub=None, deny=False):
    """What the browser would do on the provider's page: approve as `sub`, or deny."""
    data = {"action": "deny"} if deny else {"sub": sub}
    response = requests.post(authorize_url, data=data, allow_redirects=False, timeout=5)
    assert response.status_code == 302, response.text
    return response.headers["Location"]


def finish(client, callback_url):
    parts = urlsplit(callback_url)
    return client.get(parts.path + "?" + parts.query)


def sso_login(client, issuer, sub, next_="/"):
    return finish(client, provider_answer(start_login(client, next_), sub))


def test_login_page_offers_sso(client):
    assert 'id="sso-login"' in client.get("/login").get_data(as_text=True)


def test_first_login_creates_the_user_from_claims(client, make, oidc_issuer):
    set_claims(oidc_issuer, "u-1001", preferred_username="Wei.Zhang", name="张伟", email="wei@example.edu")
    authorize = start_login(client, "/admin/accounts")
    query = parse_qs(urlsplit(authorize).query)
    assert query["response_type"] == ["code"] and "openid" in query["scope"][0]
    assert query["state"] and query["nonce"]
    response = finish(client, provider_answer(authorize, "u-1001"))
    assert response.status_code == 302 and response.location == "/admin/accounts"
    user = make.query(lambda s: s.query(User).filter_by(oidc_subject="u-1001").one())
    assert (user.username, user.display_name, user.email) == ("wei.zhang", "张伟", "wei@example.edu")
    assert user.auth_source == "oidc" and user.oidc_issuer == oidc_issuer and user.role == "user"
    default = make.query(lambda s: s.query(Membership).join(Account).filter(
        Membership.user_id == user.id, Account.name == "default").count())
    assert default == 1
    assert "张伟" in client.get("/").get_data(as_text=True)


def test_later_login_updates_claims_and_keeps_the_row(client, new_client, make, oidc_issuer):
    set_claims(oidc_issuer, "u-2", preferred_username="li", name="Li Old", email="old@example.edu")
    sso_login(client, oidc_issuer, "u-2")
    set_claims(oidc_issuer, "u-2", preferred_username="li", name="Li New", email="new@example.edu")
    sso_login(new_client(), oidc_issuer, "u-2")
    users = make.query(lambda s: [(u.username, u.display_name, u.email) for u in s.query(User)])
    assert users == [("li", "Li New", "new@example.edu")]


def test_admin_group_makes_an_admin_and_leaving_it_removes_admin(client, new_client, make, oidc_issuer):
    set_claims(oidc_issuer, "boss", preferred_username="boss", groups=["staff", "gpu-admins"])
    sso_login(client, oidc_issuer, "boss")
    assert client.get("/admin/users").status_code == 200
    set_claims(oidc_issuer, "boss", preferred_username="boss", groups=["staff"])
    later = new_client()
    sso_login(later, oidc_issuer, "boss")
    assert later.get("/admin/users").status_code == 403


def test_username_taken_by_another_person_gets_a_suffix(client, make, oidc_issuer):
    make.user("chen", password="local password 1")
    set_claims(oidc_issuer, "u-3", preferred_username="chen")
    sso_login(client, oidc_issuer, "u-3")
    names = make.query(lambda s: sorted(u.username for u in s.query(User)))
    assert names == ["chen", "chen-2"]


def test_denied_login_gives_a_clear_400(client, make, oidc_issuer):
    response = finish(client, provider_answer(start_login(client), deny=True))
    assert response.status_code == 400
    assert "access_denied" in response.get_data(as_text=True)
    assert make.query(lambda s: s.query(User).count()) == 0


def test_tampered_state_gives_400_not_500(client, make, oidc_issuer):
    callback = provider_answer(start_login(client), "u-4")
    tampered = callback.replace("state=", "state=x")
    response = finish(client, tampered)
    assert response.status_code == 400
    assert "mismatching_state" in response.get_data(as_text=True) or "state" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302
    assert make.query(lambda s: s.query(User).count()) == 0


def test_callback_without_a_login_in_progress_gives_400(client):
    assert client.get("/auth/callback?code=abc&state=def").status_code == 400


def test_deactivated_sso_user_is_refused(client, make, oidc_issuer):
    make.user("gone", active=False, oidc_issuer=oidc_issuer, oidc_subject="u-5")
    response = sso_login(client, oidc_issuer, "u-5")
    assert response.status_code == 403
    assert client.get("/").status_code == 302


def test_unreachable_provider_gives_a_page_not_a_500(schema):
    from conftest import Client, base_config

    from portal import create_app
    app = create_app(base_config(schema, OIDC_ISSUER="http://localhost:9", OIDC_CLIENT_SECRET="s"))
    response = Client(app).get("/login/sso")
    assert response.status_code == 502
    assert "cannot be reached" in response.get_data(as_text=True)


def test_concurrent_first_sign_ins_create_one_user(app, oidc_issuer, make):
    """Two first sign-ins of the same person racing: one row, both signed in. (On MySQL: SQLite
    serialises writers and answers a racing upgrade with "database is locked".)"""
    import threading

    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("a MySQL concurrency property")

    from portal.extensions import db
    from portal.services import users

    identity = users.identity_from_claims(oidc_issuer, {"sub": "race", "preferred_username": "racer"})
    results, barrier = [], threading.Barrier(2)

    def sign_in():
        with app.app_context():
            barrier.wait()
            try:
                results.append(users.login_from_oidc(identity).id)
            except Exception as exc:  # noqa: BLE001  recorded for the assertion
                results.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=sign_in) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and isinstance(results[0], int), results
    assert make.query(lambda s: s.query(User).filter_by(oidc_subject="race").count()) == 1
