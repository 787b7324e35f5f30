"""The API blueprint and how a request authenticates: a personal access token (Bearer), or the
browser's session with its CSRF token for writes; a read-only token cannot write; every response
is uncached and varies on the credentials."""
from __future__ import annotations

from flask import Blueprint, current_app, g, request, session
from flask_babel import gettext as _
from flask_limiter.util import get_remote_address
from flask_login import current_user

from ..extensions import csrf
from ..models.token import TOKEN_PREFIX
from ..services import tokens
from ..services.context import Actor
from ..services.errors import AuthenticationFailed, Forbidden

bp = Blueprint("api", __name__, url_prefix="/api/v1")
PUBLIC = {"api.openapi", "api.docs"}
SAFE = ("GET", "HEAD", "OPTIONS")


def api_actor() -> Actor:
    token = g.get("api_token")
    return Actor(current_user._get_current_object(), request.remote_addr or "", token=token.name if token else "")


def rate_key() -> str:
    """The caller's rate-limit bucket: its token's lookup id, else its session user, else its address."""
    lookup = tokens.lookup_in(request.headers.get("Authorization", ""))
    if lookup:
        return f"api-token:{lookup}"
    user = session.get("_user_id")
    return f"api-user:{user}" if user else f"api-addr:{get_remote_address()}"


def api_limit() -> str:
    return current_app.config["RATE_LIMIT_API"]


@bp.before_request
def authenticate():
    g.api_token = None
    if request.endpoint in PUBLIC:
        return None
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _sep, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise AuthenticationFailed(_("Send the token as: Authorization: Bearer %(prefix)s…", prefix=TOKEN_PREFIX))
        token, user = tokens.authenticate(raw.strip(), request.remote_addr or "")
        g._login_user, g.api_token = user, token  # this request only: no session, no cookie
        if request.method not in SAFE and not token.allows(write=True):
            raise Forbidden(_("This token may only read; create one with the read and write scope."))
        return None
    if not current_user.is_authenticated:
        raise AuthenticationFailed(_("Sign in, or send a personal access token: Authorization: Bearer %(prefix)s…",
                                     prefix=TOKEN_PREFIX))
    if request.method not in SAFE:
        csrf.protect()  # the browser's session: writes need the page's CSRF token (X-CSRFToken)
    return None


@bp.after_request
def no_cache(response):
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["Vary"] = "Authorization, Cookie"
    return response
