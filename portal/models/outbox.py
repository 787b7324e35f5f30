"""The mail outbox: a notice is a row written in the same transaction as the change it tells of,
and the syncer's sender delivers it with retries. `dedupe_key` is unique, so the same notice can
never be queued twice (e.g. two writers racing to end the same job)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import utcnow


class OutboxMessage(db.Model):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "sent_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # job_ended, ...
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)  # e.g. job_ended:42
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # A sender claims a message until claimed_until before it talks to the mail server, so no two
    # senders (an old leader and a new one) ever deliver it at the same time.
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str] = mapped_column(String(200), default="")

    user = relationship("User")
    job = relationship("Job")


class Notification(db.Model):
    """A notice in the portal (the notifications page, the unread count in the navigation); the
    mail of the same notice, if the user wants it, goes through the outbox."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_read", "user_id", "read_at", "id"),
                      UniqueConstraint("dedupe_key"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(DateTime)
    # A maintenance notice names the announcement (its message and times are shown with it).
    maintenance_id: Mapped[int | None] = mapped_column(ForeignKey("maintenances.id", ondelete="CASCADE"))

    job = relationship("Job")
    maintenance = relationship("Maintenance")
