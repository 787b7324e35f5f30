"""The university SSO as an OpenID Connect client (Authlib). Discovery, state, nonce and ID-token
checks are Authlib's; this module registers the client and merges ID-token and userinfo claims.
Talks to the provider only during a sign-in."""
from __future__ import annotations

from flask import Flask, current_app

from authlib.integrations.flask_client import OAuth

CLIENT = "sso"
EXTENSION = "crater_sso"


def init_app(app: Flask) -> None:
    """One Authlib registry per app (tests run several apps with different providers).
    Registration only records settings; discovery happens on the first sign-in."""
    registry = OAuth(app)
    cfg = app.config
    if cfg["OIDC_ISSUER"]:
        registry.register(
            CLIENT,
            client_id=cfg["OIDC_CLIENT_ID"],
            client_secret=cfg["OIDC_CLIENT_SECRET"],
            server_metadata_url=cfg["OIDC_ISSUER"] + "/.well-known/openid-configuration",
            client_kwargs={"scope": cfg["OIDC_SCOPE"]},
        )
    app.extensions[EXTENSION] = registry


def enabled(app: Flask | None = None) -> bool:
    return bool((app or current_app).config["OIDC_ISSUER"])


def client():
    return current_app.extensions[EXTENSION].create_client(CLIENT)


def authorize_redirect(redirect_uri: str):
    return client().authorize_redirect(redirect_uri)


def finish_login() -> dict:
    """Exchange the code (state and nonce checked, ID token verified) and return the claims from
    the ID token, completed by the userinfo endpoint (which is where groups often live)."""
    sso = client()
    token = sso.authorize_access_token()
    claims = dict(token.get("userinfo") or {})
    try:
        extra = sso.userinfo(token=token)
    except Exception:  # noqa: BLE001  userinfo is optional; the ID token already identified the user
        extra = {}
    if extra.get("sub") == claims.get("sub"):
        claims.update({k: v for k, v in extra.items() if k not in ("iss", "aud", "exp", "iat", "nonce")})
    return claims
