"""Fair use: extension requests for a job's time limit, the warnings the policies gave (one row per
job and kind, so a notice never goes out twice), each policy's settings and the log of its runs."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import JSONText, utcnow


class ExtensionState:
    PENDING = "pending"
    GRANTED = "granted"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class ExtensionRequest(db.Model):
    __tablename__ = "extension_requests"
    __table_args__ = (Index("ix_extension_requests_state_job", "state", "job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    hours: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(500), default="")
    state: Mapped[str] = mapped_column(String(16), default=ExtensionState.PENDING)
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    decided_by: Mapped[str] = mapped_column(String(64), default="")
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime)

    job = relationship("Job")
    user = relationship("User")


class JobWarning(db.Model):
    """A policy's warning about a job: when it was given and when the job is stopped unless what
    the warning is about changes (cleared, the row is deleted; a new episode warns anew)."""

    __tablename__ = "job_warnings"
    __table_args__ = (UniqueConstraint("job_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # idle_gpu, time_limit
    warned_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    act_at: Mapped[datetime | None] = mapped_column(DateTime)  # the stop (idle) or the limit (time)
    episode: Mapped[int] = mapped_column(Integer, default=1)  # for the notice's dedupe key


class PolicySetting(db.Model):
    __tablename__ = "policy_settings"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    params: Mapped[dict | None] = mapped_column(JSONText)
    suspended: Mapped[bool] = mapped_column(Boolean, default=False)
    run_now: Mapped[bool] = mapped_column(Boolean, default=False)  # an admin asked for a run at the next tick
    updated_by: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class PolicyRun(db.Model):
    __tablename__ = "policy_runs"
    __table_args__ = (Index("ix_policy_runs_policy_id", "policy", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy: Mapped[str] = mapped_column(String(32))
    runner: Mapped[str] = mapped_column(String(128), default="")  # the syncer replica that ran it (the Lease holder)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    looked_at: Mapped[int] = mapped_column(Integer, default=0)
    warned: Mapped[list | None] = mapped_column(JSONText)  # job ids
    stopped: Mapped[list | None] = mapped_column(JSONText)
    cleared: Mapped[list | None] = mapped_column(JSONText)
    error: Mapped[str] = mapped_column(Text, default="")
