"""A user's notices in the portal (the notifications page, the unread count) and their mail
preferences per kind of notice. Only ever the actor's own."""
from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import selectinload

from ..config import LANGUAGES
from ..extensions import db
from ..models import Notification, utcnow
from . import audit, notify
from .context import Actor
from .errors import ValidationFailed
from .pagination import Page, paginate


def mine(actor: Actor, page: int, per_page: int) -> Page:
    stmt = (select(Notification).options(selectinload(Notification.job), selectinload(Notification.maintenance))
            .where(Notification.user_id == actor.user.id).order_by(Notification.id.desc()))
    return paginate(stmt, page, per_page)


def unread(actor: Actor) -> int:
    return int(db.session.execute(select(func.count(Notification.id)).where(
        Notification.user_id == actor.user.id, Notification.read_at.is_(None))).scalar() or 0)


def mark_all_read(actor: Actor) -> int:
    changed = db.session.execute(update(Notification).where(Notification.user_id == actor.user.id,
                                                            Notification.read_at.is_(None)).values(read_at=utcnow()))
    db.session.commit()
    return changed.rowcount


def preferences(actor: Actor) -> dict[str, bool]:
    prefs = actor.user.mail_prefs or {}
    return {kind: bool(prefs.get(kind, default)) for kind, default in notify.MAIL_DEFAULTS.items()}


def save_settings(actor: Actor, language: str, mail: set[str]) -> None:
    if language not in LANGUAGES:
        raise ValidationFailed({"language": "unknown language"})
    unknown = mail - set(notify.MAIL_DEFAULTS)
    if unknown:
        raise ValidationFailed({"mail": "unknown kind of notice"})
    user = actor.user
    user.language = language
    user.mail_prefs = {kind: kind in mail for kind in notify.MAIL_DEFAULTS}
    audit.record(actor, "user.settings", "user", user.id, {"language": language, "mail": sorted(mail)})
    db.session.commit()
