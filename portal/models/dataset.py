"""Datasets and models: a folder on the shared storage that its owner registered, shared with users
or accounts (or public), mounted read-only into the jobs that ask for it."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import utcnow

DATASET_KINDS = ("dataset", "model")
VISIBILITIES = ("private", "shared", "public")


class Dataset(db.Model):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)  # the mount's folder: /datasets/<name>
    kind: Mapped[str] = mapped_column(String(16), default="dataset")
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[str] = mapped_column(String(255), default="")  # comma-separated
    path: Mapped[str] = mapped_column(String(1024))  # on the shared storage, e.g. users/alice/imagenet
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    visibility: Mapped[str] = mapped_column(String(16), default="private")
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    files: Mapped[int | None] = mapped_column(Integer)
    sized_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    owner = relationship("User")
    shares = relationship("DatasetShare", cascade="all, delete-orphan", order_by="DatasetShare.id")

    @property
    def mount_path(self) -> str:
        return f"/{'models' if self.kind == 'model' else 'datasets'}/{self.name}"

    @property
    def tag_list(self) -> list[str]:
        return [t for t in (x.strip() for x in self.tags.split(",")) if t]


class DatasetShare(db.Model):
    """A dataset shared with one user or with every member of one account."""

    __tablename__ = "dataset_shares"
    __table_args__ = (UniqueConstraint("dataset_id", "user_id", "account_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)

    user = relationship("User")
    account = relationship("Account")


class JobDataset(db.Model):
    """Which datasets a job mounted (a dataset's page lists its jobs)."""

    __tablename__ = "job_datasets"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True, index=True)
