"""Language choice: the user's saved setting wins, then the session's choice (signed-out visitors),
then the browser's Accept-Language; English is the fallback."""
from __future__ import annotations

from flask import Flask, g, has_request_context, request, session
from flask_babel import get_locale, get_translations
from flask_login import current_user

from .config import LANGUAGES


def select_locale() -> str:
    if not has_request_context():
        return "en"
    user_lang = getattr(current_user, "language", None) if current_user else None
    if user_lang in LANGUAGES:
        return user_lang
    if session.get("lang") in LANGUAGES:
        return session["lang"]
    return request.accept_languages.best_match(list(LANGUAGES), default="en")


def _translations():
    """The request's catalogue, looked up once per request (Flask-Babel looks it up per call,
    which is most of the cost of rendering a 50-row table)."""
    translations = g.get("_crater_translations")
    if translations is None:
        translations = g._crater_translations = get_translations()
    return translations


def template_gettext(string: str, **variables) -> str:
    text = _translations().ugettext(string)
    return text % variables if variables else text


def template_ngettext(singular: str, plural: str, num: int, **variables) -> str:
    """Jinja's newstyle ngettext calls this with the three first arguments and then formats the
    answer with every variable (num and the others) itself: formatting here too would fail on
    the others (a dataset's "%(size)s in %(num)s files")."""
    text = _translations().ungettext(singular, plural, num)
    if not variables:
        return text
    variables.setdefault("num", num)
    return text % variables


def init_app(app: Flask) -> None:
    app.jinja_env.install_gettext_callables(template_gettext, template_ngettext, newstyle=True)

    @app.context_processor
    def languages():
        return {"LANGUAGES": LANGUAGES, "current_lang": str(get_locale() or "en")}
