"""Usage per job and day (UTC), written by the syncer's usage pass from the job's times and, where
Prometheus has them, its GPUs' utilisation samples: what the usage reports add up. A job that runs
across midnight has a row per day, each with that day's share, so a report over any run of days
counts exactly the part of the job inside it."""
from __future__ import annotations

from datetime import date

from sqlalchemy import Date, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class UsageDay(db.Model):
    __tablename__ = "usage_days"
    __table_args__ = (Index("ix_usage_days_day_user", "day", "user_id"),
                      Index("ix_usage_days_day_account", "day", "account_id"))

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer)
    account_id: Mapped[int] = mapped_column(Integer)
    gpu_model: Mapped[str] = mapped_column(String(128), default="")
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # allocated
    used_gpu_seconds: Mapped[float | None] = mapped_column(Float)  # utilisation x time (None: no metrics)
    idle_gpu_seconds: Mapped[float | None] = mapped_column(Float)  # allocated while idle
    measured_gpu_seconds: Mapped[float | None] = mapped_column(Float)  # allocated with a utilisation sample
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # core-seconds requested
    memory_gib_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    borrowed_gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")  # beyond the guarantee


class _Sums:
    """The figures a usage rollup adds up (seconds; used and idle count measured time only)."""

    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    used_gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    idle_gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    measured_gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    memory_gib_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    borrowed_gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    jobs_started: Mapped[int] = mapped_column(Integer, default=0)


class UsageRollup(_Sums, db.Model):
    """Usage per day, user and account: what the reports read (a handful of rows per active user
    and day, however many jobs), kept in step with usage_days by the usage pass."""

    __tablename__ = "usage_rollups"
    __table_args__ = (Index("ix_usage_rollups_user_day", "user_id", "day"),
                      Index("ix_usage_rollups_account_day", "account_id", "day"))

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    account_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class UsageModelDay(_Sums, db.Model):
    """Usage per day and GPU model (the admins' view per model, and the cluster's daily totals)."""

    __tablename__ = "usage_model_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    gpu_model: Mapped[str] = mapped_column(String(128), primary_key=True)
