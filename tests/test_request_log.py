"""Logs people can search: one line per request with method, route, path, status, duration, user
id and request id; the request id returned in X-Request-ID (the caller's, when it is a sane token)
and shown on error pages; JSON lines when CRATER_LOG_FORMAT=json; and never a password, a token,
a query string or the session in any line."""
import json
import logging

import pytest

from portal import logs


def lines(caplog):
    return [r for r in caplog.records if r.name == "crater.request"]


def test_one_line_per_request_with_its_fields_and_the_request_id_in_a_header(app, client, make, caplog):
    user = make.user("alice")
    client.login(user)
    caplog.set_level(logging.INFO, logger="crater.request")
    response = client.get("/jobs/12345")
    assert response.status_code == 404
    rid = response.headers["X-Request-ID"]
    assert len(rid) == 32
    (record,) = lines(caplog)
    assert (record.method, record.route, record.path, record.status, record.user_id, record.request_id) == (
        "GET", "/jobs/<int:job_id>", "/jobs/12345", 404, user, rid)
    assert record.duration_ms >= 0
    page = response.get_data(as_text=True)
    assert f"Request id: {rid}" in page  # shown on the error page, to quote to the admins


def test_a_callers_request_id_is_kept_and_a_bad_one_replaced(client, caplog):
    caplog.set_level(logging.INFO, logger="crater.request")
    assert client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.01"}).headers["X-Request-ID"] == "lb-7f3a.01"
    for bad in ("<script>alert(1)</script>", "a" * 65, "id with spaces"):
        replaced = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert replaced != bad and len(replaced) == 32
    assert [r.user_id for r in lines(caplog)] == [None] * 4


def test_no_password_token_query_or_session_reaches_a_log_line(app, client, make, caplog):
    make.user("bob", password="bob-password-secret-1")
    caplog.set_level(logging.DEBUG)
    client.post("/login", {"username": "bob", "password": "bob-password-secret-1"})
    client.get("/jobs?token=crt_leaked_token_value&q=x")
    cookie = client.http.get_cookie("crater_session")
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "bob-password-secret-1" not in text and "crt_leaked_token_value" not in text
    assert cookie is not None and cookie.value not in text
    assert any(r.path == "/jobs" for r in lines(caplog))


def test_json_lines_parse_and_carry_the_fields(app, client):
    record = logging.LogRecord("crater.request", logging.INFO, __file__, 1, "GET %s", ("/healthz",), None)
    for name, value in {"method": "GET", "route": "/healthz", "path": "/healthz", "status": 200, "duration_ms": 0.4,
                        "user_id": None, "request_id": "abc"}.items():
        setattr(record, name, value)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "GET /healthz" and line["status"] == 200 and line["request_id"] == "abc"
    assert line["level"] == "INFO" and line["logger"] == "crater.request" and line["time"].endswith("Z")


def test_a_log_format_other_than_text_or_json_refuses_to_start():
    from portal import create_app
    from portal.config import ConfigError
    with pytest.raises(ConfigError, match="CRATER_LOG_FORMAT must be text or json"):
        create_app({"LOG_FORMAT": "xml", "TESTING": True})
