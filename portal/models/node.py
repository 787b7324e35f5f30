"""The node inventory, as the syncer sees the cluster: what each node offers (allocatable), what
pods on it request, its GPU model and its condition. Pages and the home page's free-GPU counts
read this table; they never ask the cluster."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import JSONText


class Node(db.Model):
    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(253), primary_key=True)
    gpu_model: Mapped[str] = mapped_column(String(128), default="", index=True)
    gpus: Mapped[int] = mapped_column(Integer, default=0)  # allocatable
    gpus_requested: Mapped[int] = mapped_column(Integer, default=0)
    cpu_milli: Mapped[int] = mapped_column(Integer, default=0)
    cpu_requested_milli: Mapped[int] = mapped_column(Integer, default=0)
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    memory_requested_mib: Mapped[int] = mapped_column(Integer, default=0)
    ready: Mapped[bool] = mapped_column(Boolean, default=False)
    unschedulable: Mapped[bool] = mapped_column(Boolean, default=False)
    labels: Mapped[dict | None] = mapped_column(JSONText)
    taints: Mapped[list | None] = mapped_column(JSONText)
    conditions: Mapped[list | None] = mapped_column(JSONText)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)

    @property
    def gpus_free(self) -> int:
        return max(0, self.gpus - self.gpus_requested) if self.ready and not self.unschedulable else 0
