"""Users: people who sign in, through the university SSO (oidc) or a local password (local)."""
from __future__ import annotations

import enum
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import JSONText, utcnow


class Role(str, enum.Enum):
    USER = "user"
    ADMIN = "admin"


class AuthSource(str, enum.Enum):
    OIDC = "oidc"
    LOCAL = "local"


class User(UserMixin, db.Model):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    role: Mapped[str] = mapped_column(String(16), default=Role.USER.value, index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # some restriction was set (services/restrictions.py reads the rows only then; cleared once none is left)
    restricted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    auth_source: Mapped[str] = mapped_column(String(16), default=AuthSource.LOCAL.value)
    oidc_issuer: Mapped[str | None] = mapped_column(String(255))
    oidc_subject: Mapped[str | None] = mapped_column(String(255))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    language: Mapped[str | None] = mapped_column(String(8))
    mail_prefs: Mapped[dict | None] = mapped_column(JSONText)  # notice kind -> mail it (defaults in services.notify)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime)

    memberships = relationship("Membership", back_populates="user", cascade="all, delete-orphan")

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users at login
        return bool(self.active)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN.value

    @property
    def label(self) -> str:
        return self.display_name or self.username

    def __repr__(self) -> str:
        return f"<User {self.username}>"


class Restriction(db.Model):
    """An admin's restriction of a user: from submitting jobs, from the portal as a whole, or from
    the shared storage, until a time (None: until lifted), with a reason."""

    __tablename__ = "user_restrictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # submit | portal | storage
    reason: Mapped[str] = mapped_column(String(500))
    until: Mapped[datetime | None] = mapped_column(DateTime)
    stop_running: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    lifted_at: Mapped[datetime | None] = mapped_column(DateTime)
    lifted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    def active(self, now: datetime) -> bool:
        return self.lifted_at is None and (self.until is None or self.until > now)
