"""Errors mapped to HTTP in one place. Full pages for normal requests; for htmx requests a message
retargeted into the page's flash area, so an error never replaces a table."""
from __future__ import annotations

import json
import logging

from flask import Flask, current_app, g, make_response, render_template, request
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from ..extensions import login_manager
from ..services.errors import DomainError
from ..services.transactions import abandon, error_code
from .context import is_htmx

log = logging.getLogger(__name__)

def render_error(status: int, message: str, errors: dict | None = None):
    if request.path.startswith("/api/"):
        return problem(status, message, errors)
    if is_htmx():
        headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"}
        return render_template("errors/_error.html", status=status, message=message), status, headers
    return render_template("errors/error.html", status=status, title=_title(status), message=message), status


def problem(status: int, message: str, errors: dict | None = None):
    """An API error as application/problem+json (RFC 9457), with field errors when there are."""
    body = {"type": "about:blank", "title": str(_title(status)), "status": status, "detail": str(message),
            "instance": request.path}
    if errors:
        body["errors"] = {name: str(text) for name, text in errors.items()}
    if g.get("request_id"):
        body["request_id"] = g.request_id
    response = current_app.response_class(json.dumps(body, ensure_ascii=False), status=status,
                                          mimetype="application/problem+json")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="crater"'
    return response


def _title(status: int) -> str:
    titles = {
        400: _("Bad request"), 401: _("Please sign in"), 403: _("Not allowed"), 404: _("Not found"),
        405: _("Method not allowed"), 409: _("Not possible now"), 413: _("Too large"),
        422: _("Check your input"), 429: _("Too many requests"), 500: _("Something went wrong"), 502: _("Service unreachable"),
        503: _("Unavailable"),
    }
    return titles.get(status, _("Error"))


def init_app(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError):
        abandon()
        return render_error(exc.status, str(exc) or _title(exc.status), getattr(exc, "errors", None))

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        if request.path.startswith("/api/"):
            return problem(403, _("A write with the browser's session needs the page's CSRF token in the X-CSRFToken "
                                  "header; scripts send a personal access token instead."))
        return render_error(400, _("This form has expired or did not come from this site. "
                                   "Reload the page and try again."))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        messages = {
            403: _("You do not have permission for this."),
            404: _("There is nothing at this address."),
            405: _("This address does not accept that kind of request."),
            413: _("The request is too large."),
            429: _("Too many requests in a short time (at most %(limit)s). Wait a minute and try again.",
                   limit=getattr(exc, "description", "") or "?"),
        }
        response = make_response(render_error(exc.code or 500, messages.get(exc.code, _title(exc.code or 500))))
        if exc.code == 405:  # RFC 9110: a 405 says which methods the address takes
            response.headers["Allow"] = ", ".join(sorted(getattr(exc, "valid_methods", None) or ()))
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    def database_away(exc):
        """The database does not answer (restarting, failing over, overloaded): a "try again" page,
        not a 500. Rendered without the database: the signed-in user cannot be loaded now."""
        log.warning("the database did not answer: %s %s", type(getattr(exc, "orig", None) or exc).__name__,
                    error_code(exc) or "")
        abandon(quietly=True)
        g._login_user = login_manager.anonymous_user()
        response = make_response(render_error(503, _("The database does not answer right now. "
                                                    "Try again in a few seconds; nothing was lost.")))
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(500)
    def server_error(exc):
        abandon()
        return render_error(500, _("The portal hit an unexpected error. It has been logged; "
                                   "please try again or tell the administrators."))

