"""Configuration: development defaults, and production refusing unsafe settings by name."""
import pytest

from portal import create_app
from portal.config import ConfigError, load_config

MYSQL = "mysql+pymysql://u:p@127.0.0.1:3306/crater"
GOOD_KEY = "k" * 40


def production(**env):
    base = {"CRATER_ENV": "production", "CRATER_SECRET_KEY": GOOD_KEY, "CRATER_DATABASE_URL": MYSQL}
    base.update(env)
    return {k: v for k, v in base.items() if v is not None}


def start(env, monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("CRATER_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return create_app()


def test_development_defaults_to_sqlite_under_instance(monkeypatch):
    app = start({}, monkeypatch)
    assert app.config["CRATER_ENV"] == "development"
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("instance/crater.sqlite3")
    assert app.config["SECRET_KEY"]  # a random one, for development only
    assert app.config["SESSION_COOKIE_SECURE"] is False


def test_production_starts_with_a_key_and_mysql(monkeypatch):
    app = start(production(), monkeypatch)
    assert app.config["SESSION_COOKIE_SECURE"] is True
    engine = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    assert engine["pool_pre_ping"] is True and 0 < engine["pool_recycle"] < 3600


@pytest.mark.parametrize("env, wrong", [
    (production(CRATER_SECRET_KEY=None), "CRATER_SECRET_KEY is not set"),
    (production(CRATER_SECRET_KEY="short"), "CRATER_SECRET_KEY is shorter"),
    (production(CRATER_DATABASE_URL="sqlite:////tmp/x.db"), "SQLite"),
    (production(CRATER_DATABASE_URL=None), "SQLite"),
    (production(CRATER_DEBUG_HEADER_LOGIN="1"), "CRATER_DEBUG_HEADER_LOGIN"),
    (production(CRATER_SECURE_COOKIES="0"), "CRATER_SECURE_COOKIES"),
    (production(CRATER_OIDC_ISSUER="https://sso.example.edu"), "CRATER_OIDC_CLIENT_SECRET"),
    (production(CRATER_LOCAL_LOGIN="0"), "nobody could sign in"),
    ({"CRATER_ENV": "staging"}, "CRATER_ENV must be one of"),
    (production(CRATER_SECRET_KEY="CHANGE-ME-openssl-rand-hex-32-0123456789"), "CRATER_SECRET_KEY still holds"),
    (production(CRATER_METRICS_TOKEN="CHANGE-ME"), "CRATER_METRICS_TOKEN still holds"),
])
def test_production_refuses_to_start_and_names_the_setting(env, wrong, monkeypatch):
    with pytest.raises(ConfigError) as err:
        start(env, monkeypatch)
    assert wrong in str(err.value)


def test_every_problem_is_listed_at_once(monkeypatch):
    with pytest.raises(ConfigError) as err:
        start({"CRATER_ENV": "production", "CRATER_DEBUG_HEADER_LOGIN": "1"}, monkeypatch)
    message = str(err.value)
    for wrong in ("CRATER_SECRET_KEY", "SQLite", "CRATER_DEBUG_HEADER_LOGIN"):
        assert wrong in message


def test_bad_integer_setting_is_reported():
    with pytest.raises(ConfigError, match="CRATER_PROXY_COUNT"):
        load_config({"CRATER_PROXY_COUNT": "two"})


def test_create_app_does_no_io(monkeypatch, tmp_path):
    # An unreachable database and SSO must not matter until a request needs them.
    app = start(production(CRATER_DATABASE_URL="mysql+pymysql://u:p@127.0.0.1:1/none",
                           CRATER_OIDC_ISSUER="http://127.0.0.1:1", CRATER_OIDC_CLIENT_SECRET="s"), monkeypatch)
    assert app.url_map is not None
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
