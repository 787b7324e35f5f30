"""Personal access tokens for the API and craterctl. The token itself is shown once and never
stored: a row keeps its public lookup id (part of the token), a SHA-256 of the whole token, the
scope, the expiry, and when it was last used."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import utcnow

TOKEN_PREFIX = "crater_pat_"  # recognisable in a code search or a secret scanner
SCOPES = ("read", "write")  # write includes read


class ApiToken(db.Model):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    lookup: Mapped[str] = mapped_column(String(16), unique=True)  # the token's public part
    digest: Mapped[str] = mapped_column(String(64))  # sha256 hex of the whole token
    scope: Mapped[str] = mapped_column(String(8), default="read")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)  # None: until revoked
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_used_ip: Mapped[str] = mapped_column(String(45), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_by: Mapped[str] = mapped_column(String(64), default="")

    user = relationship("User", lazy="joined")

    @property
    def shown_prefix(self) -> str:
        """What lists show of a token: enough to recognise it, nothing to use it."""
        return f"{TOKEN_PREFIX}{self.lookup}…"

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def allows(self, write: bool) -> bool:
        return self.scope == "write" or not write
