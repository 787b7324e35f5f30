"""Sign-in pages: /login (SSO button and, when enabled, the local form), /login/sso,
/auth/callback, /logout. Every sign-in path ends in `_signed_in`."""
from __future__ import annotations

from urllib.parse import urlsplit

from authlib.integrations.base_client import OAuthError
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user

from .. import limits
from ..services import users
from ..services.errors import AuthenticationFailed, Forbidden
from ..views.forms import CsrfOnlyForm, LoginForm
from . import oidc

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this site, or a page behind the portal's ingress (a notebook or a
    job's port, CRATER_INGRESS_URL), else "/": no open redirects (//evil, \\evil, schemes)."""
    ingress = (current_app.config.get("INGRESS_URL") or "").rstrip("/")
    if target and ingress and target.startswith(ingress + "/") and not any(c in target for c in "\r\n\t\\"):
        return target
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(c in target for c in "\r\n\t\\"):
        return "/"
    return target


@bp.get("/login")
def login():
    """The sign-in page. Already signed-in users go straight on."""
    nxt = safe_next(request.args.get("next") or request.args.get("rd"))  # rd: where an ingress's sign-in sends back
    if current_user.is_authenticated:
        return redirect(nxt)
    return render_template("auth/login.html", form=LoginForm(next=nxt), **_login_options())


@bp.post("/login")
@limits.login_per_address
@limits.login_per_user
def login_post():
    """Local password sign-in (bootstrap and break-glass admins)."""
    form = LoginForm()
    if not current_app.config["LOCAL_LOGIN"]:
        abort(404)
    if not form.validate_on_submit():
        return render_template("auth/login.html", form=form, **_login_options()), 422
    try:
        user = users.authenticate_local(form.username.data, form.password.data, request.remote_addr or "")
    except (AuthenticationFailed, Forbidden) as exc:
        form.form_errors.append(str(exc.message))
        return render_template("auth/login.html", form=form, **_login_options()), exc.status
    return _signed_in(user, form.next.data)


@bp.get("/login/sso")
def login_sso():
    """Send the browser to the university SSO; the callback finishes the sign-in."""
    if not oidc.enabled():
        abort(404)
    session["login_next"] = safe_next(request.args.get("next") or request.args.get("rd"))
    try:
        return oidc.authorize_redirect(url_for("auth.callback", _external=True))
    except (OAuthError, OSError, ValueError) as exc:
        current_app.logger.warning("SSO discovery failed: %s", exc)
        return _sso_error(_("The sign-in service cannot be reached. Try again in a minute."), 502)


@bp.get("/auth/callback")
def callback():
    """The SSO's answer: an error (denied, tampered state) gives a 400 page, never a 500."""
    if not oidc.enabled():
        abort(404)
    if request.args.get("error"):
        return _sso_error(_("Sign-in was cancelled or refused by the sign-in service (%(error)s).",
                            error=request.args.get("error")[:100]), 400)
    try:
        claims = oidc.finish_login()
        identity = users.identity_from_claims(current_app.config["OIDC_ISSUER"], claims)
        user = users.login_from_oidc(identity, current_app.config["OIDC_ADMIN_GROUP"], request.remote_addr or "")
    except OAuthError as exc:
        current_app.logger.info("SSO callback refused: %s", exc.error)
        return _sso_error(_("The sign-in could not be completed (%(error)s). Please start again.",
                            error=exc.error), 400)
    except (AuthenticationFailed, Forbidden) as exc:
        return _sso_error(str(exc.message), exc.status)
    except (OSError, ValueError) as exc:
        current_app.logger.warning("SSO token exchange failed: %s", exc)
        return _sso_error(_("The sign-in service cannot be reached. Try again in a minute."), 502)
    return _signed_in(user, session.pop("login_next", "/"))


@bp.get("/logout")
def logout():
    """A confirmation page: signing out changes state, so it needs a POST."""
    return render_template("auth/logout.html", form=CsrfOnlyForm())


@bp.post("/logout")
def logout_post():
    """Sign out and forget the session (language choice survives)."""
    lang = session.get("lang")
    logout_user()
    session.clear()
    if lang:
        session["lang"] = lang
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"))


def _signed_in(user, nxt):
    lang = session.get("lang")
    session.clear()  # a fresh session on sign-in: no fixation, no stale state or CSRF token
    if lang:
        session["lang"] = lang
    login_user(user)
    session.permanent = True
    return redirect(safe_next(nxt))


def _login_options() -> dict:
    cfg = current_app.config
    return {"sso_enabled": oidc.enabled(), "local_enabled": cfg["LOCAL_LOGIN"],
            "sso_name": cfg["OIDC_PROVIDER_NAME"]}


def _sso_error(message: str, status: int):
    return render_template("auth/sso_error.html", message=message), status
