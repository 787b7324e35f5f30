"""Local password sign-in, sign-out, safe `next`, deactivation, the create-admin command and the
development-only header login."""
import pytest

from portal import create_app
from portal.models import AuditEntry, User

PASSWORD = "correct horse battery staple"


def login(client, username, password, next_="/"):
    return client.post("/login", {"username": username, "password": password, "next": next_})


def test_local_login_signs_in_and_goes_to_next(client, make):
    make.user("root", role="admin", password=PASSWORD)
    response = login(client, "root", PASSWORD, "/admin/users?q=x")
    assert response.status_code == 302 and response.location == "/admin/users?q=x"
    assert client.get("/admin/users").status_code == 200


def test_login_records_last_login_and_audit(client, make):
    uid = make.user("root", role="admin", password=PASSWORD)
    login(client, "root", PASSWORD)
    assert make.query(lambda s: s.get(User, uid).last_login_at) is not None
    actions = make.query(lambda s: [e.action for e in s.query(AuditEntry).filter_by(actor_id=uid)])
    assert "user.login" in actions


@pytest.mark.parametrize("username, password", [("root", "wrong-password"), ("nobody", PASSWORD), ("", "")])
def test_wrong_credentials_are_refused_with_a_message(client, make, username, password):
    make.user("root", password=PASSWORD)
    response = login(client, username, password)
    assert response.status_code in (401, 422)
    assert client.get("/").status_code == 302  # still signed out
    if username and password:
        assert "Wrong username or password." in response.get_data(as_text=True)


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example",
                                    "javascript:alert(1)", "http:/evil", "/ok\r\nLocation: x"])
def test_next_never_leaves_the_site(client, make, target):
    make.user("root", password=PASSWORD)
    response = login(client, "root", PASSWORD, target)
    assert response.status_code == 302
    assert response.location == "/"


def test_deactivated_user_cannot_sign_in(client, make):
    make.user("gone", password=PASSWORD, active=False)
    response = login(client, "gone", PASSWORD)
    assert response.status_code == 403
    assert "deactivated" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_deactivation_ends_existing_sessions(client, new_client, make):
    admin = make.user("root", role="admin")
    victim = make.user("bob")
    bob = new_client().login(victim)
    assert bob.get("/").status_code == 200
    client.login(admin).post(f"/admin/users/{victim}/deactivate")
    response = bob.get("/")
    assert response.status_code == 302 and response.location.startswith("/login")


def test_logout_needs_post_and_ends_the_session(client, make):
    client.login(make.user("bob"))
    assert client.get("/logout").status_code == 200  # a confirmation page, nothing changes
    assert client.get("/").status_code == 200
    assert client.post("/logout").status_code == 302
    assert client.get("/").status_code == 302


def test_local_form_can_be_switched_off(app_config, schema):
    from conftest import Client, base_config
    app = create_app(base_config(schema, LOCAL_LOGIN=False))
    client = Client(app)
    page = client.get("/login").get_data(as_text=True)
    assert 'name="password"' not in page
    assert client.post("/login", {"username": "x", "password": "y"}).status_code == 404


# ---- crater create-admin ----------------------------------------------------------------------

def test_create_admin_command_reads_password_from_stdin(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-admin", "breakglass"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "Created local administrator breakglass" in result.output
    assert login(client, "breakglass", PASSWORD).status_code == 302
    assert client.get("/admin/users").status_code == 200


def test_create_admin_resets_password_of_existing_local_user(app, make):
    make.user("breakglass", password="old password 123")
    result = app.test_cli_runner().invoke(args=["create-admin", "breakglass"], input=PASSWORD + "\n")
    assert result.exit_code == 0 and "Updated" in result.output
    assert make.query(lambda s: s.query(User).filter_by(username="breakglass").one().role) == "admin"


@pytest.mark.parametrize("name, password, message", [
    ("Bad Name", PASSWORD, "username"), ("ok", "short", "password")])
def test_create_admin_rejects_bad_input(app, make, name, password, message):
    result = app.test_cli_runner().invoke(args=["create-admin", name], input=password + "\n")
    assert result.exit_code == 2
    assert message in result.output
    assert make.query(lambda s: s.query(User).count()) == 0


# ---- X-Debug-Username ---------------------------------------------------------------------------

def test_debug_header_login_works_only_when_switched_on(schema, make):
    from conftest import base_config
    make.user("alice")
    off = create_app(base_config(schema)).test_client()
    assert off.get("/", headers={"X-Debug-Username": "alice"}).status_code == 302
    on = create_app(base_config(schema, DEBUG_HEADER_LOGIN=True)).test_client()
    response = on.get("/", headers={"X-Debug-Username": "alice"})
    assert response.status_code == 200 and "Alice" in response.get_data(as_text=True)
    assert on.get("/", headers={"X-Debug-Username": "nobody"}).status_code == 302


def test_debug_header_login_is_refused_in_production(schema):
    from portal.config import ConfigError
    with pytest.raises(ConfigError, match="CRATER_DEBUG_HEADER_LOGIN"):
        create_app({"CRATER_ENV": "production", "SECRET_KEY": "k" * 40, "DEBUG_HEADER_LOGIN": True,
                    "SQLALCHEMY_DATABASE_URI": "mysql+pymysql://u:p@127.0.0.1/x", "SESSION_COOKIE_SECURE": True})
