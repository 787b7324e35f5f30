"""Rate limits (Flask-Limiter): sign-in attempts per client address and per user name
(CRATER_RATE_LIMIT_LOGIN, CRATER_RATE_LIMIT_LOGIN_USER), job submissions per signed-in user
(CRATER_RATE_LIMIT_SUBMIT). Over a limit the request gets 429 with a page that says when to try
again (and a Retry-After header); nothing is written."""
from __future__ import annotations

from flask import current_app, request, session
from flask_limiter.util import get_remote_address

from .extensions import limiter


def _login_limit() -> str:
    return current_app.config["RATE_LIMIT_LOGIN"]


def _login_user_limit() -> str:
    return current_app.config["RATE_LIMIT_LOGIN_USER"]


def _submit_limit() -> str:
    return current_app.config["RATE_LIMIT_SUBMIT"]


def _login_name() -> str:
    return "login:" + (request.form.get("username") or "").strip().lower()[:64]


def _submitter() -> str:
    """The session's user, or the API token (its lookup id: the user is not loaded yet when the
    limit is checked), or the client address."""
    user = session.get("_user_id")
    if user:
        return f"user:{user}"
    from .services.tokens import lookup_in
    lookup = lookup_in(request.headers.get("Authorization", ""))
    return f"token:{lookup}" if lookup else f"addr:{get_remote_address()}"


login_per_address = limiter.limit(_login_limit, key_func=get_remote_address, methods=["POST"])
login_per_user = limiter.limit(_login_user_limit, key_func=_login_name, methods=["POST"])
submissions = limiter.limit(_submit_limit, key_func=_submitter, methods=["POST"])
