"""Flask-Login wiring: loading the session's user, the development-only header login, and what an
anonymous request gets (a redirect to /login, or 401 + HX-Redirect for htmx requests)."""
from __future__ import annotations

from flask import Flask, current_app, redirect, request, url_for
from flask_babel import lazy_gettext as _l

from ..extensions import login_manager
from ..services import users

DEBUG_HEADER = "X-Debug-Username"


def init_app(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("Please sign in to see this page.")
    login_manager.login_message_category = "info"
    login_manager.session_protection = "basic"
    login_manager.user_loader(users.get_active_user)

    @login_manager.request_loader
    def header_login(req):
        """The original system's debugging shortcut, only with CRATER_DEBUG_HEADER_LOGIN=1
        (the configuration check refuses that switch outside development)."""
        if not current_app.config["DEBUG_HEADER_LOGIN"]:
            return None
        name = req.headers.get(DEBUG_HEADER)
        user = users.find_by_username(name) if name else None
        return user if user is not None and user.active else None

    @login_manager.unauthorized_handler
    def unauthorized():
        target = url_for("auth.login", next=_current_path())
        if request.headers.get("HX-Request"):
            # An htmx request from an expired session: send the whole page to the login form
            # instead of swapping a login page into a table.
            return "", 401, {"HX-Redirect": url_for("auth.login", next=_page_path())}
        return redirect(target)


def _current_path() -> str:
    return request.full_path.rstrip("?") if request.method == "GET" else "/"


def _page_path() -> str:
    """The page the user is on (htmx sends it), as a same-site path."""
    url = request.headers.get("HX-Current-URL", "")
    from .views import safe_next
    if url.startswith(request.host_url):
        return safe_next("/" + url[len(request.host_url):])
    return "/"
