"""Language choice: the user's saved setting wins, then the session's choice (signed-out visitors),
then the browser's Accept-Language; English is the fallback."""
from __future__ import annotations

from flask import Flask, has_request_context, request, session
from flask_babel import get_locale
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


def init_app(app: Flask) -> None:
    @app.context_processor
    def languages():
        return {"LANGUAGES": LANGUAGES, "current_lang": str(get_locale() or "en")}
