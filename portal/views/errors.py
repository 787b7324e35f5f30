"""Errors mapped to HTTP in one place. Full pages for normal requests; for htmx requests a message
retargeted into the page's flash area, so an error never replaces a table."""
from __future__ import annotations

from flask import Flask, render_template
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from ..extensions import db
from ..services.errors import DomainError
from .context import is_htmx

def render_error(status: int, message: str):
    if is_htmx():
        headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"}
        return render_template("errors/_error.html", status=status, message=message), status, headers
    return render_template("errors/error.html", status=status, title=_title(status), message=message), status


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
        db.session.rollback()
        return render_error(exc.status, str(exc) or _title(exc.status))

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
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
        return render_error(exc.code or 500, messages.get(exc.code, _title(exc.code or 500)))

    @app.errorhandler(500)
    def server_error(exc):
        db.session.rollback()
        return render_error(500, _("The portal hit an unexpected error. It has been logged; "
                                   "please try again or tell the administrators."))
