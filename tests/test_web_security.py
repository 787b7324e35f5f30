"""Headers, cookies, error pages and their htmx fragment forms, expired sessions under htmx,
ProxyFix, and the request size limit."""
import pytest

from conftest import Client, base_config
from portal import create_app


def test_security_headers_on_every_page(client):
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_pages_have_no_inline_scripts_or_styles(client, make):
    client.login(make.user("root", role="admin"))
    account = make.account("vision-lab")
    for url in ("/", "/admin/users", "/admin/accounts", f"/admin/accounts/{account}", "/admin/audit",
                "/admin/accounts/new", "/login", "/logout"):
        body = client.get(url).get_data(as_text=True)
        assert "<script>" not in body and "<style" not in body and " style=" not in body, url
        assert " onclick=" not in body and " onchange=" not in body, url


def test_session_cookie_flags(client, make):
    response = client.get("/login")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_production_cookies_are_secure(schema):
    app = create_app(base_config(schema, SESSION_COOKIE_SECURE=True))
    cookie = app.test_client().get("/login", base_url="https://localhost").headers["Set-Cookie"]
    assert "Secure" in cookie


def test_expired_session_on_htmx_gets_401_and_hx_redirect(client):
    response = client.get("/admin/users?q=x", headers={"HX-Request": "true",
                                                        "HX-Current-URL": "http://localhost/admin/users?q=x"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=/admin/users?q%3Dx"
    assert "<html" not in response.get_data(as_text=True)


def test_htmx_redirect_ignores_foreign_current_url(client):
    response = client.get("/admin/users", headers={"HX-Request": "true", "HX-Current-URL": "https://evil.example/x"})
    assert response.headers["HX-Redirect"] == "/login?next=/"


@pytest.mark.parametrize("status, url, method", [(404, "/no/such/page", "GET"), (405, "/healthz", "POST")])
def test_error_pages_and_fragments(client, make, status, url, method):
    client.login(make.user("bob"))
    token = client.csrf()
    page = client.http.open(url, method=method, data={"csrf_token": token})
    assert page.status_code == status and "<html" in page.get_data(as_text=True)
    fragment = client.http.open(url, method=method, data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert fragment.status_code == status
    assert fragment.headers["HX-Retarget"] == "#flash"
    body = fragment.get_data(as_text=True)
    assert "<html" not in body and 'class="flash error"' in body


def test_forbidden_page_and_fragment(client, make):
    client.login(make.user("bob"))
    assert client.get("/admin/users").status_code == 403
    fragment = client.get("/admin/users", headers={"HX-Request": "true"})
    assert fragment.status_code == 403 and fragment.headers["HX-Retarget"] == "#flash"


def test_unexpected_error_gives_a_500_page_without_details(schema):
    app = create_app(base_config(schema, PROPAGATE_EXCEPTIONS=False, TESTING=False))

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    client = app.test_client()
    response = client.get("/boom")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "secret internals" not in body and "unexpected error" in body
    fragment = client.get("/boom", headers={"HX-Request": "true"})
    assert fragment.status_code == 500 and fragment.headers["HX-Retarget"] == "#flash"


def test_oversized_request_is_413(client, make):
    client.login(make.user("root", role="admin"))
    response = client.post("/admin/accounts/new", {"name": "x", "description": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413


def test_proxy_fix_trusts_only_configured_proxies(schema, make):
    from portal.models import AuditEntry
    make.user("root", role="admin", password="a long password 1")
    for count, expected in ((0, "127.0.0.1"), (1, "203.0.113.9")):
        app = create_app(base_config(schema, PROXY_COUNT=count))
        client = Client(app)
        token = client.csrf()
        client.http.post("/login", data={"username": "root", "password": "a long password 1", "csrf_token": token},
                         headers={"X-Forwarded-For": "203.0.113.9"}, environ_base={"REMOTE_ADDR": "127.0.0.1"})
        ip = make.query(lambda s: s.query(AuditEntry).filter_by(action="user.login")
                        .order_by(AuditEntry.id.desc()).first().client_ip)
        assert ip == expected
