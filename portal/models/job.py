"""Jobs: what a user asked the cluster to run, and what became of it.

The syncer writes state, reason and times from the cluster; the quota admission sums the
requests of active jobs (`ACTIVE_STATES`) per account, so the resource totals are stored per job.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import JSONText, utcnow


from ..vocabulary import ACTIVE_STATES, FINAL_STATES, OPEN_STATES, JobState  # noqa: F401  (re-exported)


class Job(db.Model):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_account_state", "account_id", "state"),
        Index("ix_jobs_user_state", "user_id", "state"),
        Index("ix_jobs_state_id", "state", "id"),
        Index("ix_jobs_user_hidden_id", "user_id", "hidden", "id"),
        Index("ix_jobs_account_hidden_id", "account_id", "hidden", "id"),
        Index("ix_jobs_model_state", "gpu_model", "state"),
        Index("ix_jobs_gpus_id", "gpus", "id"),  # the job list sorted by GPUs
        Index("ix_jobs_name_id", "display_name", "id"),  # ... and by name
        Index("ix_jobs_usage_state", "usage_state", "state"),  # the usage pass's work
        Index("ix_jobs_borrowed_state", "borrowed", "state"),  # reclaim and reclassification
        UniqueConstraint("user_id", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    job_type: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str] = mapped_column(String(128), default="")
    state: Mapped[str] = mapped_column(String(16), default=JobState.SUBMITTING.value)
    reason: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    image: Mapped[str] = mapped_column(String(512), default="")
    gpu_model: Mapped[str] = mapped_column(String(128), default="")
    gpus: Mapped[int] = mapped_column(Integer, default=0)  # in total (all workers)
    cpu_milli: Mapped[int] = mapped_column(Integer, default=0)  # in total
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)  # in total
    workers: Mapped[int] = mapped_column(Integer, default=1)
    time_limit_seconds: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict | None] = mapped_column(JSONText, deferred=True)  # the submitted form, for clone and the YAML view
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    notify: Mapped[bool] = mapped_column(Boolean, default=False)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)  # deleted from lists; the audit keeps it
    last_log: Mapped[str | None] = mapped_column(Text, deferred=True)  # the last lines, kept when the job ends
    pods: Mapped[list | None] = mapped_column(JSONText)  # [{name, node, phase, reason, restarts, exit_code, started_at}]
    notified_at: Mapped[datetime | None] = mapped_column(DateTime)  # the end-of-job mail went out
    # Moved on every change the detail page shows (state, pods, events), by services.job_states
    # alone: a poll that already has this version gets 204 No Content without rendering anything.
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The GPU summary (the syncer's usage pass; refreshed while running, kept once ended):
    gpu_util_mean: Mapped[float | None] = mapped_column(Float)
    gpu_util_peak: Mapped[float | None] = mapped_column(Float)
    gpu_memory_peak_mib: Mapped[int | None] = mapped_column(Integer)
    gpu_seconds: Mapped[float | None] = mapped_column(Float)  # allocated
    gpu_seconds_used: Mapped[float | None] = mapped_column(Float)
    gpu_seconds_idle: Mapped[float | None] = mapped_column(Float)
    # "" not yet, "running" refreshed while active, "final" kept, "no-metrics" kept without metrics
    usage_state: Mapped[str] = mapped_column(String(16), default="", server_default="")
    usage_at: Mapped[datetime | None] = mapped_column(DateTime)
    # An admin's lock: exempt from every clean-up until then (LOCKED_FOREVER: indefinitely).
    locked_until: Mapped[datetime | None] = mapped_column(DateTime)
    lock_reason: Mapped[str] = mapped_column(String(500), default="", server_default="")
    # The queue (services/scheduling): when the job left Queued, and while Queued, what the admitter
    # last found: its place among the account's queued jobs, what it waits for (a structured
    # blocker, put in words by the pages), an estimated start, and since when it holds the head
    # of the queue with a reservation (jobs behind it may not delay it).
    admitted_at: Mapped[datetime | None] = mapped_column(DateTime)
    queue_position: Mapped[int | None] = mapped_column(Integer)
    queue_blocker: Mapped[dict | None] = mapped_column(JSONText)
    queue_estimate: Mapped[datetime | None] = mapped_column(DateTime)
    queue_reserved_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The wait the first estimate predicted, before calibration (seconds; kept once admitted): the
    # estimates learn their own bias from it (services.scheduling.estimates.RunTimes.wait_ratio).
    queue_first_wait: Mapped[int | None] = mapped_column(Integer)
    # Borrowing: `borrow` is the owner's choice (run beyond the account's guarantee on idle GPUs);
    # `borrowed` says the job runs (or last ran) beyond the guarantee and may be preempted; how
    # often it was preempted, when last, and not to be admitted as borrowed again before
    # `not_before` (the backoff after a preemption).
    borrow: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    borrowed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    preemptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    preempted_at: Mapped[datetime | None] = mapped_column(DateTime)
    not_before: Mapped[datetime | None] = mapped_column(DateTime)

    user = relationship("User")
    account = relationship("Account")

    @property
    def is_open(self) -> bool:
        """Not ended: queued, or admitted and not final (may be stopped, is polled)."""
        return self.state in OPEN_STATES

    @property
    def is_queued(self) -> bool:
        return self.state == JobState.QUEUED.value

    def locked_at(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def deadline(self) -> datetime | None:
        """When the time limit stops it (None: not started, or no limit)."""
        if self.started_at is None or not self.time_limit_seconds:
            return None
        from datetime import timedelta
        return self.started_at + timedelta(seconds=self.time_limit_seconds)

    @property
    def gpus_per_worker(self) -> int:
        return self.gpus // max(1, self.workers)


class Preemption(db.Model):
    """One preemption: a borrowed job (`job_id`) suspended so that another account's in-quota job
    (`by_job_id`) could use its guaranteed GPUs; what the preempted job had run and lost; when
    the job that reclaimed the GPUs started running (for the reclaim latency)."""

    __tablename__ = "preemptions"
    __table_args__ = (Index("ix_preemptions_at", "at"), Index("ix_preemptions_by", "by_job_id"),
                      Index("ix_preemptions_job", "job_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    account: Mapped[str] = mapped_column(String(63))
    by_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    by_account: Mapped[str] = mapped_column(String(63), default="")
    reason: Mapped[str] = mapped_column(String(32), default="Reclaim")
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    ran_seconds: Mapped[int] = mapped_column(Integer, default=0)
    gpu_seconds_lost: Mapped[float] = mapped_column(Float, default=0.0)
    grace_seconds: Mapped[int] = mapped_column(Integer, default=0)
    waited_since: Mapped[datetime | None] = mapped_column(DateTime)  # the reclaiming job waited since
    bound_at: Mapped[datetime | None] = mapped_column(DateTime)  # the reclaiming job ran from


class QueueUsage(db.Model):
    """A member's recent GPU use in an account, in GPU-seconds decayed exponentially (half-life
    CRATER_QUEUE_HALF_LIFE_HOURS): the admitter orders an account's queue by it, least first.
    `as_of` is when the value was last brought up to date."""

    __tablename__ = "queue_usage"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    as_of: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class JobEvent(db.Model):
    """The latest Kubernetes events of a job and its pods (the syncer keeps the newest few)."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_seen", "job_id", "last_seen"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    uid: Mapped[str] = mapped_column(String(64), unique=True)  # the Event object's uid
    type: Mapped[str] = mapped_column(String(16), default="Normal")
    reason: Mapped[str] = mapped_column(String(128), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    object_name: Mapped[str] = mapped_column(String(253), default="")
    count: Mapped[int] = mapped_column(Integer, default=1)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime)


class JobTemplate(db.Model):
    """A saved submission form: the owner's, and shared with an account's members when `shared`."""

    __tablename__ = "job_templates"
    __table_args__ = (Index("ix_job_templates_account_shared", "account_id", "shared"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    job_type: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict] = mapped_column(JSONText)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    user = relationship("User")
    account = relationship("Account")


class Image(db.Model):
    """A container image offered in the submission forms: the admin-kept list (no owner, public),
    and users' own (private, shared with an account, or public once an admin approves)."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("reference", "owner_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(512))
    description: Mapped[str] = mapped_column(String(256), default="")
    job_types: Mapped[str] = mapped_column(String(64), default="jupyter,batch,distributed")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    visibility: Mapped[str] = mapped_column(String(16), default="public", server_default="public")  # private | account | public
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    approved: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())  # a user's public image: by an admin
    check_state: Mapped[str] = mapped_column(String(16), default="", server_default="")  # found | missing | unknown
    check_message: Mapped[str] = mapped_column(String(256), default="", server_default="")
    checked_at: Mapped[datetime | None] = mapped_column(DateTime)

    owner = relationship("User")
    account = relationship("Account")

    def offered_for(self, job_type: str) -> bool:
        return job_type in self.job_types.split(",")

