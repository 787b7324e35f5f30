"""The JSON API under /api/v1 for scripts and craterctl: the same services and authorization as
the pages. A request authenticates with `Authorization: Bearer <personal access token>` (never a
token in the URL), or with the browser's session, which then needs the CSRF token (X-CSRFToken)
for every write, so no other site can act for a signed-in user. A read-only token cannot write.
Errors are application/problem+json (RFC 9457; portal.views.errors renders them for every /api/
path). Each token (or session user) has its own rate limit, CRATER_RATE_LIMIT_API. The
description is /api/v1/openapi.json; /api/v1/docs is a page for reading it."""
from __future__ import annotations

from flask import Flask

from ..extensions import csrf, limiter
from . import v1  # noqa: F401  (the routes)
from .auth import api_limit, bp, rate_key


def init_app(app: Flask) -> None:
    csrf.exempt(bp)  # checked in `authenticate` for session writes; a Bearer token is no ambient credential
    limiter.limit(api_limit, key_func=rate_key)(bp)
    app.register_blueprint(bp)
