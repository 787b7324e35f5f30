"""Open web terminals and opened job ports. Terminals: one row per terminal into a job's pod, so that the cap per user holds across
web workers and replicas (a row whose bridge stopped beating no longer counts), and so that an
admin can see who is inside which job."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import utcnow


class TerminalSession(db.Model):
    __tablename__ = "terminal_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    pod: Mapped[str] = mapped_column(String(253))
    opened_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)  # the bridge's last beat
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)
    close_reason: Mapped[str] = mapped_column(String(32), default="")


class JobPort(db.Model):
    """A port of a running job that its owner opened at a per-job address behind the portal's
    sign-in (a Service and an Ingress of its own in the cluster, owned by the Job)."""
    __tablename__ = "job_ports"
    __table_args__ = (UniqueConstraint("job_id", "port", name="uq_job_ports_job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    port: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(32), default="")
    opened_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    opened_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
