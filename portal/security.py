"""Response headers that every page gets: CSP without inline code, no framing, no sniffing."""
from __future__ import annotations

from flask import Flask

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
       "form-action 'self'; frame-ancestors 'none'")


def init_app(app: Flask) -> None:
    secure = app.config["SESSION_COOKIE_SECURE"]

    @app.after_request
    def security_headers(response):
        h = response.headers
        h.setdefault("Content-Security-Policy", CSP)
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        if secure:
            h.setdefault("Strict-Transport-Security", "max-age=31536000")
        if response.mimetype == "text/html":
            h.setdefault("Cache-Control", "no-store")
            h.add("Vary", "Cookie")
        return response
