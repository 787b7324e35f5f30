"""Rate limits on what attackers and runaway scripts hammer: local sign-in (per client address and
per user name) and job submission (per user). Over a limit: 429 with a page that says to wait and
a Retry-After header, and nothing written."""
import pytest

from portal.models import Job


@pytest.fixture
def app_config():
    return {"RATE_LIMIT_LOGIN": "5 per minute", "RATE_LIMIT_LOGIN_USER": "3 per minute", "RATE_LIMIT_SUBMIT": "2 per minute"}


def test_sign_in_attempts_are_limited_per_user_name_and_per_address(client, make):
    make.user("bob", password="bob-password-secret-1")
    for _ in range(3):
        assert client.post("/login", {"username": "bob", "password": "wrong"}).status_code == 401
    limited = client.post("/login", {"username": "bob", "password": "bob-password-secret-1"})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    page = limited.get_data(as_text=True)
    assert "Too many requests" in page and "Wait a minute and try again." in page
    # Other names from the same address: two more attempts (a refused one does not count), then
    # the address's limit.
    assert client.post("/login", {"username": "carol", "password": "x"}).status_code == 401
    assert client.post("/login", {"username": "dave", "password": "x"}).status_code == 401
    assert client.post("/login", {"username": "erin", "password": "x"}).status_code == 429


def test_submissions_are_limited_per_user_and_nothing_is_written(client, make):
    alice = make.user("alice")
    make.account("vision-lab", gpu_quota=8, members={alice: "member"})
    client.login(alice)
    for _ in range(2):
        assert client.post("/jobs/new/batch", {"display_name": ""}).status_code == 422
    limited = client.post("/jobs/new/batch", {"display_name": "x"})
    assert limited.status_code == 429 and "Too many requests" in limited.get_data(as_text=True)
    assert make.query(lambda s: s.query(Job).count()) == 0
    assert client.get("/jobs/new/batch").status_code == 200  # only the submission is limited
    client.login(make.user("bob"))
    assert client.post("/jobs/new/batch", {"display_name": ""}).status_code == 422  # per user
