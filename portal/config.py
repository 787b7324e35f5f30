"""Configuration from CRATER_* environment variables.

`load_config(environ, overrides)` turns the environment (plus explicit overrides, e.g. from tests)
into the dict Flask reads, with defaults per environment. `check_config` lists everything a
production deployment must not run with; `create_app` refuses to start when the list is not empty.
Reads the environment only; no files, no network.
"""
from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

ENVIRONMENTS = ("development", "production")
LANGUAGES = {"en": "English", "zh": "简体中文"}
PLACEHOLDER = "CHANGE-ME"  # what deploy/k8s/overlays/example/secret.yaml holds until edited


class ConfigError(RuntimeError):
    """The configuration is unusable; the message names every wrong setting."""


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _int(environ, name: str, default: int) -> int:
    raw = environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


from .vocabulary import JOB_TYPES, JobType  # noqa: E402
DEFAULT_TIME_LIMITS = {JobType.JUPYTER.value: (24, 168), JobType.BATCH.value: (72, 336), JobType.DISTRIBUTED.value: (72, 336)}  # hours: default, max


def parse_time_limits(raw: str) -> dict[str, tuple[float, float]]:
    """CRATER_TIME_LIMITS, e.g. "jupyter=24/168,batch=72/336": default/maximum hours per job type."""
    limits = dict(DEFAULT_TIME_LIMITS)
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, _, values = part.partition("=")
        default, _, maximum = values.partition("/")
        try:
            default_h, max_h = float(default), float(maximum or default)
        except ValueError:
            raise ConfigError(f"CRATER_TIME_LIMITS: {part!r} is not TYPE=DEFAULT/MAX hours") from None
        if name.strip() not in JOB_TYPES or not 0 < default_h <= max_h:
            raise ConfigError(f"CRATER_TIME_LIMITS: {part!r} needs a job type and 0 < default <= max")
        limits[name.strip()] = (default_h, max_h)
    return limits


def _seconds(environ, name: str, default: float) -> float:
    raw = environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 < value < 86400 * 30:
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def default_database_url(instance_path: str) -> str:
    return "sqlite:///" + str(Path(instance_path) / "crater.sqlite3")


def load_config(environ=None, overrides: dict | None = None, instance_path: str = "instance") -> dict:
    """Build the Flask config from the environment; `overrides` win over everything."""
    env = os.environ if environ is None else environ
    name = env.get("CRATER_ENV", "development")
    production = name == "production"
    issuer = env.get("CRATER_OIDC_ISSUER", "").rstrip("/")
    cfg = {
        "CRATER_ENV": name,
        "SECRET_KEY": env.get("CRATER_SECRET_KEY") or None,
        "SQLALCHEMY_DATABASE_URI": env.get("CRATER_DATABASE_URL") or default_database_url(instance_path),
        "OIDC_ISSUER": issuer,
        "OIDC_CLIENT_ID": env.get("CRATER_OIDC_CLIENT_ID", "crater-portal"),
        "OIDC_CLIENT_SECRET": env.get("CRATER_OIDC_CLIENT_SECRET", ""),
        "OIDC_ADMIN_GROUP": env.get("CRATER_OIDC_ADMIN_GROUP", ""),
        "OIDC_SCOPE": env.get("CRATER_OIDC_SCOPE", "openid profile email groups"),
        "OIDC_PROVIDER_NAME": env.get("CRATER_OIDC_PROVIDER_NAME", ""),
        "LOCAL_LOGIN": _flag(env.get("CRATER_LOCAL_LOGIN"), default=True),
        "DEBUG_HEADER_LOGIN": _flag(env.get("CRATER_DEBUG_HEADER_LOGIN")),
        "PROXY_COUNT": _int(env, "CRATER_PROXY_COUNT", 0),
        "PAGE_SIZE": _int(env, "CRATER_PAGE_SIZE", 50),
        "JOB_NAMESPACE": env.get("CRATER_JOB_NAMESPACE", "crater-jobs"),
        "KUBECONFIG": env.get("CRATER_KUBECONFIG", ""),
        "SHARED_PVC": env.get("CRATER_SHARED_PVC", ""),
        # where the web pods mount that claim, for /files and WebDAV; development keeps a folder
        # under instance/, production has none unless it is set (the pages then say so)
        "STORAGE_ROOT": env.get("CRATER_STORAGE_ROOT") or ("" if production else str(Path(instance_path) / "storage")),
        "UPLOAD_MAX_BYTES": _int(env, "CRATER_UPLOAD_MAX_BYTES", 20 * 1024 ** 3),  # one upload request
        "FILES_PAGE_SIZE": _int(env, "CRATER_FILES_PAGE_SIZE", 200),
        "INGRESS_HOST": env.get("CRATER_INGRESS_HOST", ""),
        "INGRESS_CLASS": env.get("CRATER_INGRESS_CLASS", ""),
        # Where notebook links point (scheme, host and port; default https://CRATER_INGRESS_HOST), the
        # portal's URL the ingress controller calls to ask whether a request may pass (external
        # auth: set it and notebooks need the portal's sign-in, never a token in a link); the
        # sign-in redirect goes to CRATER_PUBLIC_URL/login.
        "INGRESS_URL": env.get("CRATER_INGRESS_URL", ""),
        "INGRESS_AUTH_URL": env.get("CRATER_INGRESS_AUTH_URL", ""),
        "PROMETHEUS_URL": env.get("CRATER_PROMETHEUS_URL", ""),
        "SMTP_URL": env.get("CRATER_SMTP_URL", ""),
        "SMTP_FROM": env.get("CRATER_SMTP_FROM", "crater@localhost"),
        "PUBLIC_URL": env.get("CRATER_PUBLIC_URL", "").rstrip("/"),  # for links in mails
        "TIME_LIMITS": parse_time_limits(env.get("CRATER_TIME_LIMITS", "")),
        "CUSTOM_IMAGES": _flag(env.get("CRATER_CUSTOM_IMAGES"), default=True),  # free text besides the list
        "MAX_JUPYTER_PER_USER": _int(env, "CRATER_MAX_JUPYTER_PER_USER", 2),
        "LOG_TAIL_LINES": _int(env, "CRATER_LOG_TAIL_LINES", 500),
        "SYNC_STALE_SECONDS": _int(env, "CRATER_SYNC_STALE_SECONDS", 60),
        "SHORT_CACHE_SECONDS": _int(env, "CRATER_SHORT_CACHE_SECONDS", 2),
        # Every call to another system has a timeout (seconds).
        "CLUSTER_TIMEOUT": _seconds(env, "CRATER_CLUSTER_TIMEOUT", 5.0),
        "SMTP_TIMEOUT": _seconds(env, "CRATER_SMTP_TIMEOUT", 10.0),
        # The syncer.
        "LEASE_SECONDS": _seconds(env, "CRATER_LEASE_SECONDS", 15.0),
        "WATCH_TIMEOUT": _seconds(env, "CRATER_WATCH_TIMEOUT", 300.0),
        "RECONCILE_SECONDS": _seconds(env, "CRATER_RECONCILE_SECONDS", 10.0),
        "ORPHAN_GRACE_SECONDS": _seconds(env, "CRATER_ORPHAN_GRACE_SECONDS", 300.0),
        # GPU metrics (Prometheus with the DCGM exporter's series) and usage.
        "PROMETHEUS_TIMEOUT": _seconds(env, "CRATER_PROMETHEUS_TIMEOUT", 5.0),
        "REGISTRY_TIMEOUT": _seconds(env, "CRATER_REGISTRY_TIMEOUT", 5.0),  # an image's reachability check
        "PROMETHEUS_STEP": _seconds(env, "CRATER_PROMETHEUS_STEP", 15.0),  # the DCGM exporter's scrape interval
        "GPU_IDLE_PERCENT": _int(env, "CRATER_GPU_IDLE_PERCENT", 0),  # utilisation at or below it is idle
        "USAGE_REFRESH_SECONDS": _seconds(env, "CRATER_USAGE_REFRESH_SECONDS", 300.0),
        "POLICY_SECONDS": _seconds(env, "CRATER_POLICY_SECONDS", 60.0),  # how often the fair-use policies run
        # The queue: how often the admitter looks (it is also woken when a job ends), the half-life
        # of the member usage that orders an account's queue, and the GPU-hours an admission
        # charges at once (so one member does not take every freed GPU in a single pass).
        "QUEUE_SECONDS": _seconds(env, "CRATER_QUEUE_SECONDS", 1.0),
        "QUEUE_HALF_LIFE_HOURS": _seconds(env, "CRATER_QUEUE_HALF_LIFE_HOURS", 24.0),
        "QUEUE_ENTRY_PENALTY_HOURS": _seconds(env, "CRATER_QUEUE_ENTRY_PENALTY_HOURS", 1.0),
        # Borrowing: the Default account's guaranteed GPUs (beyond them its GPU jobs borrow idle
        # GPUs and are the first to give them back).
        "DEFAULT_ACCOUNT_GUARANTEE_GPUS": _int(env, "CRATER_DEFAULT_ACCOUNT_GUARANTEE_GPUS", 0),
        # Rate limits (Flask-Limiter notation): sign-in attempts per client address and per user
        # name, job submissions per user. Storage: memory:// counts per process (so per gunicorn
        # worker); redis://... or memcached://... share one count between workers and replicas.
        "RATE_LIMIT_LOGIN": env.get("CRATER_RATE_LIMIT_LOGIN", "20 per minute; 200 per hour"),
        "RATE_LIMIT_LOGIN_USER": env.get("CRATER_RATE_LIMIT_LOGIN_USER", "10 per minute"),
        "RATE_LIMIT_SUBMIT": env.get("CRATER_RATE_LIMIT_SUBMIT", "120 per minute"),
        "RATE_LIMIT_API": env.get("CRATER_RATE_LIMIT_API", "600 per minute"),  # per token (or signed-in user)
        "LOG_FOLLOW_SECONDS": _seconds(env, "CRATER_LOG_FOLLOW_SECONDS", 300.0),  # one streamed `logs -f` request
        # Web terminals (/jobs/<id>/terminal): closed after this long without a keystroke or output,
        # and after this long in all; at most this many open per user; a ping to the browser this often.
        "TERMINAL_IDLE_SECONDS": _seconds(env, "CRATER_TERMINAL_IDLE_SECONDS", 1800.0),
        "TERMINAL_MAX_SECONDS": _seconds(env, "CRATER_TERMINAL_MAX_SECONDS", 8 * 3600.0),
        "TERMINAL_MAX_PER_USER": _int(env, "CRATER_TERMINAL_MAX_PER_USER", 3),
        "TERMINAL_PING_SECONDS": _seconds(env, "CRATER_TERMINAL_PING_SECONDS", 25.0),
        "RATELIMIT_STORAGE_URI": env.get("CRATER_RATE_LIMIT_STORAGE", "memory://"),
        "RATELIMIT_HEADERS_ENABLED": True,
        "SYNC_METRICS_PORT": _int(env, "CRATER_SYNC_METRICS_PORT", 0),  # `crater sync` serves its metrics here (0: off)
        "SYNC_METRICS_ADDR": env.get("CRATER_SYNC_METRICS_ADDR", "127.0.0.1"),
        "METRICS_TOKEN": env.get("CRATER_METRICS_TOKEN", ""),  # /metrics: this bearer token, else loopback only
        "LOG_FORMAT": env.get("CRATER_LOG_FORMAT", "text").strip().lower() or "text",  # text | json
        "SHOW_JOB_NAMES": _flag(env.get("CRATER_SHOW_JOB_NAMES")),  # other users' job names on node pages
        "DCGM_POD_LABELS": env.get("CRATER_DCGM_POD_LABELS", ""),  # "exported": exported_pod / exported_namespace
        # Flask and extensions
        "SESSION_COOKIE_NAME": "crater_session",
        # Sessions end CRATER_SESSION_HOURS after sign-in, however active: no re-signed cookie on
        # every request (cheaper, and an absolute lifetime is the safer default).
        "SESSION_REFRESH_EACH_REQUEST": False,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": _flag(env.get("CRATER_SECURE_COOKIES"), default=production),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=_int(env, "CRATER_SESSION_HOURS", 12)),
        "WTF_CSRF_TIME_LIMIT": None,  # a token lives as long as the session it belongs to
        "WTF_CSRF_HEADERS": ["X-CSRFToken"],
        "WTF_CSRF_SSL_STRICT": True,
        "BABEL_DEFAULT_LOCALE": "en",
        "BABEL_TRANSLATION_DIRECTORIES": str(Path(__file__).resolve().parent.parent / "translations"),
        "SQLALCHEMY_ENGINE_OPTIONS": {},
        "MAX_CONTENT_LENGTH": 1024 * 1024,
    }
    if overrides:
        cfg.update(overrides)
    uri = cfg["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("mysql"):
        engine = dict(cfg["SQLALCHEMY_ENGINE_OPTIONS"])
        engine.setdefault("pool_pre_ping", True)
        engine.setdefault("pool_recycle", 280)  # below MySQL's and most proxies' idle cut-off
        cfg["SQLALCHEMY_ENGINE_OPTIONS"] = engine
    if not cfg["SECRET_KEY"] and cfg["CRATER_ENV"] != "production":
        # Development only: a random key means sessions end when the process restarts.
        cfg["SECRET_KEY"] = secrets.token_hex(32)
    return cfg


def check_config(cfg: dict) -> list[str]:
    """Return the problems that stop the portal from starting (empty list = fine)."""
    problems = []
    if cfg["CRATER_ENV"] not in ENVIRONMENTS:
        problems.append(f"CRATER_ENV must be one of {', '.join(ENVIRONMENTS)}, got {cfg['CRATER_ENV']!r}")
    if cfg.get("LOG_FORMAT", "text") not in ("text", "json"):
        problems.append(f"CRATER_LOG_FORMAT must be text or json, got {cfg['LOG_FORMAT']!r}")
    if cfg["PROXY_COUNT"] < 0:
        problems.append("CRATER_PROXY_COUNT must not be negative")
    if cfg["CRATER_ENV"] != "production":
        return problems
    key = cfg.get("SECRET_KEY") or ""
    if not key:
        problems.append("CRATER_SECRET_KEY is not set (use a random string of 32+ characters)")
    elif len(key) < 32:
        problems.append("CRATER_SECRET_KEY is shorter than 32 characters")
    if cfg["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        problems.append("CRATER_DATABASE_URL points at SQLite; production needs MySQL/MariaDB")
    if cfg["DEBUG_HEADER_LOGIN"]:
        problems.append("CRATER_DEBUG_HEADER_LOGIN is a development-only switch; unset it")
    if cfg.get("TESTING"):
        problems.append("TESTING is a development-only switch")
    if not cfg["SESSION_COOKIE_SECURE"]:
        problems.append("CRATER_SECURE_COOKIES=0 is a development-only switch; production cookies are Secure")
    if not cfg["OIDC_ISSUER"] and not cfg["LOCAL_LOGIN"]:
        problems.append("neither CRATER_OIDC_ISSUER nor CRATER_LOCAL_LOGIN is set: nobody could sign in")
    if cfg["OIDC_ISSUER"] and not cfg["OIDC_CLIENT_SECRET"]:
        problems.append("CRATER_OIDC_CLIENT_SECRET is not set while CRATER_OIDC_ISSUER is")
    for name, key in (("CRATER_SECRET_KEY", "SECRET_KEY"), ("CRATER_DATABASE_URL", "SQLALCHEMY_DATABASE_URI"),
                      ("CRATER_OIDC_CLIENT_SECRET", "OIDC_CLIENT_SECRET"), ("CRATER_METRICS_TOKEN", "METRICS_TOKEN"),
                      ("CRATER_SMTP_URL", "SMTP_URL")):
        if PLACEHOLDER in (cfg.get(key) or ""):  # deploy/k8s's Secret template, applied unedited
            problems.append(f"{name} still holds the Secret template's {PLACEHOLDER} placeholder")
    return problems
