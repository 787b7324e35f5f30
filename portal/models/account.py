"""Accounts (labs / projects) with their quotas, and who belongs to them.

A quota field that is NULL means "no limit". Per-GPU-model quotas live in their own rows so the job
admission (a later issue) can lock the account row and read them in one transaction.
"""
from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Boolean, Date, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import utcnow

DEFAULT_ACCOUNT = "default"
DEFAULT_DESCRIPTION = "Every user belongs to this account."  # stored; pages say it in their language


class MemberRole(str, enum.Enum):
    MEMBER = "member"
    MANAGER = "manager"


class Account(db.Model):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    gpu_quota: Mapped[int | None] = mapped_column(Integer)
    cpu_quota: Mapped[int | None] = mapped_column(Integer)  # cores
    memory_quota_gib: Mapped[int | None] = mapped_column(Integer)
    max_jobs: Mapped[int | None] = mapped_column(Integer)  # concurrent (pending + running)
    expires_on: Mapped[date | None] = mapped_column(Date)
    # Borrowing (services/scheduling): gpu_quota is the account's guaranteed share. Its jobs may run
    # beyond it on idle GPUs, at most `borrow_limit` GPUs at once (NULL: as many as are idle; 0:
    # never); `lend_limit` GPUs of its unused guarantee are never lent to others (NULL: lends all);
    # JupyterLab jobs borrow only where `borrow_jupyter` allows.
    borrow_limit: Mapped[int | None] = mapped_column(Integer)
    lend_limit: Mapped[int | None] = mapped_column(Integer)
    borrow_jupyter: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    gpu_model_quotas = relationship(
        "AccountGpuQuota", back_populates="account", cascade="all, delete-orphan",
        order_by="AccountGpuQuota.gpu_model",
    )
    memberships = relationship("Membership", back_populates="account", cascade="all, delete-orphan")

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_ACCOUNT

    @property
    def label(self) -> str:
        return self.display_name or self.name

    def is_expired(self, today: date) -> bool:
        return self.expires_on is not None and self.expires_on < today

    def __repr__(self) -> str:
        return f"<Account {self.name}>"


class AccountGpuQuota(db.Model):
    """At most `gpus` GPUs of one model (the node label nvidia.com/gpu.product) for an account."""

    __tablename__ = "account_gpu_quotas"
    __table_args__ = (UniqueConstraint("account_id", "gpu_model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    gpu_model: Mapped[str] = mapped_column(String(128))
    gpus: Mapped[int] = mapped_column(Integer)

    account = relationship("Account", back_populates="gpu_model_quotas")


class Membership(db.Model):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("account_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default=MemberRole.MEMBER.value)
    gpu_cap: Mapped[int | None] = mapped_column(Integer)  # NULL = only the account's quota applies
    # the account's share on the shared storage (accounts/<name>): managers write, members read,
    # and write too where a manager granted it
    files_write: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    account = relationship("Account", back_populates="memberships")
    user = relationship("User", back_populates="memberships")

    @property
    def is_manager(self) -> bool:
        return self.role == MemberRole.MANAGER.value
