"""Personal access tokens: created by their owner (name, scope, expiry), shown once, kept only as
a SHA-256 digest under a public lookup id; revoked by their owner or an admin, and all of a user's
when the user is deactivated. `authenticate` is what every API request with a Bearer token costs:
one indexed lookup and one hash (a token is 180 random bits, so a fast hash is enough; a slow
password hash would cost every call), and a last-used write at most once a minute per token."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import or_, select, update

from ..extensions import db
from ..models import ApiToken, User, utcnow
from ..models.token import SCOPES, TOKEN_PREFIX
from . import audit
from .context import Actor
from .errors import AuthenticationFailed, Conflict, Forbidden, NotFound, ValidationFailed
from .pagination import Page, paginate

EXPIRY_DAYS = (7, 30, 90, 365)  # the choices; 0 = until revoked
MAX_PER_USER = 20  # usable tokens at once
TOKEN_FORMAT = re.compile(rf"^{TOKEN_PREFIX}([0-9a-f]{{12}})_([A-Za-z0-9_-]{{40}})$")
LAST_USED_EVERY = timedelta(seconds=60)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def lookup_in(authorization: str) -> str | None:
    """The public lookup id of the token an Authorization header carries (no database; for rate
    limits, which are checked before the token is), or None."""
    scheme, _sep, raw = (authorization or "").partition(" ")
    match = TOKEN_FORMAT.match(raw.strip()) if scheme.lower() == "bearer" else None
    return match.group(1) if match else None


def create(actor: Actor, name: str, scope: str, expires_days: int, now: datetime | None = None) -> tuple[ApiToken, str]:
    """A new token of the acting user; returns the row and the token itself (shown once)."""
    now = now or utcnow()
    name = (name or "").strip()
    errors = {}
    if not name or len(name) > 64:
        errors["name"] = _("Give the token a name of 1 to 64 characters, e.g. the machine it is for.")
    if scope not in SCOPES:
        errors["scope"] = _("Choose read, or read and write.")
    if expires_days not in (*EXPIRY_DAYS, 0):
        errors["expires_days"] = _("Choose one of the offered expiry times.")
    mine = usable_of(actor.user.id, now)
    if name and any(t.name == name for t in mine):
        errors["name"] = _("You already have a token named %(name)s.", name=name)
    if errors:
        raise ValidationFailed(errors)
    if len(mine) >= MAX_PER_USER:
        raise Conflict(_("You have %(n)s tokens: revoke one you no longer use first.", n=len(mine)))
    lookup = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{lookup}_{secrets.token_urlsafe(30)}"
    row = ApiToken(user_id=actor.user.id, name=name, lookup=lookup, digest=_digest(token), scope=scope, created_at=now,
                   expires_at=now + timedelta(days=expires_days) if expires_days else None)
    db.session.add(row)
    db.session.flush()
    audit.record(actor, "token.create", "token", row.id, {"name": name, "scope": scope,
                                                           "expires": row.expires_at.isoformat() if row.expires_at else None})
    db.session.commit()
    return row, token


def authenticate(raw: str, client_ip: str = "", now: datetime | None = None) -> tuple[ApiToken, User]:
    """The token's row and its user, or AuthenticationFailed (malformed, unknown, wrong, revoked,
    expired, or its user deactivated: one message for all but the last two)."""
    now = now or utcnow()
    match = TOKEN_FORMAT.match(raw or "")
    row = db.session.execute(select(ApiToken).where(ApiToken.lookup == match.group(1))).scalar_one_or_none() \
        if match else None
    if row is None or not hmac.compare_digest(row.digest, _digest(raw)):
        raise AuthenticationFailed(_("This token is not valid."))
    if row.revoked_at is not None:
        raise AuthenticationFailed(_("This token was revoked."))
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationFailed(_("This token expired on %(when)s.", when=row.expires_at.strftime("%Y-%m-%d")))
    if not row.user.active:
        raise AuthenticationFailed(_("This token's user is deactivated."))
    from .restrictions import PORTAL, check
    check(row.user, PORTAL, now)  # Restricted (403) with the reason
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
        db.session.execute(update(ApiToken).where(ApiToken.id == row.id, or_(
            ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USED_EVERY))
            .values(last_used_at=now, last_used_ip=client_ip[:45]))
        db.session.commit()
    return row, row.user


def usable_of(user_id: int, now: datetime | None = None) -> list[ApiToken]:
    now = now or utcnow()
    return [t for t in db.session.execute(select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
                                          .order_by(ApiToken.id.desc())).scalars() if t.usable(now)]


def list_mine(actor: Actor) -> list[ApiToken]:
    """The acting user's tokens, newest first, the revoked and expired ones of the last 30 days too."""
    since = utcnow() - timedelta(days=30)
    return list(db.session.execute(select(ApiToken).where(
        ApiToken.user_id == actor.user.id,
        or_(ApiToken.revoked_at.is_(None), ApiToken.revoked_at >= since)).order_by(ApiToken.id.desc()).limit(100)).scalars())


def list_all(actor: Actor, page: int, per_page: int, q: str = "") -> Page:
    """Everyone's tokens that are not revoked (admins)."""
    actor.require_admin()
    stmt = select(ApiToken).join(User, User.id == ApiToken.user_id).where(ApiToken.revoked_at.is_(None))
    if q:
        stmt = stmt.where(User.username == q.strip())
    return paginate(stmt.order_by(ApiToken.id.desc()), page, per_page)


def revoke(actor: Actor, token_id: int, now: datetime | None = None) -> ApiToken:
    """Its owner or an admin; revoking twice is harmless."""
    row = db.session.get(ApiToken, token_id)
    if row is None or (row.user_id != actor.user.id and not actor.is_admin):
        raise NotFound(_("No such token."))
    if actor.token and row.user_id == actor.user.id and row.name == actor.token:
        raise Forbidden(_("A token cannot revoke itself: use the settings page or another token."))
    if row.revoked_at is None:
        row.revoked_at, row.revoked_by = now or utcnow(), actor.name
        audit.record(actor, "token.revoke", "token", row.id, {"name": row.name, "owner": row.user.username})
        db.session.commit()
    return row


def revoke_all_of(actor: Actor, user_id: int) -> int:
    """Every token of a user (deactivation); the caller commits."""
    result = db.session.execute(update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
                                .values(revoked_at=utcnow(), revoked_by=actor.name))
    return result.rowcount or 0
