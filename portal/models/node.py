"""The node inventory, as the syncer sees the cluster: what each node offers (allocatable), what
pods on it request, its GPU model and its condition, who holds what on it (placements: one row per
pod, from the pods the syncer watches; GPU devices: one row per GPU, from the DCGM exporter's
metrics, which alone know which GPU index a pod got). Pages, drain and the home page's free-GPU
counts read these tables; they never ask the cluster."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..vocabulary import NodeState
from .types import JSONText



class Node(db.Model):
    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(253), primary_key=True)
    gpu_model: Mapped[str] = mapped_column(String(128), default="", index=True)
    gpu_memory_mib: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # per GPU
    gpus: Mapped[int] = mapped_column(Integer, default=0)  # allocatable
    gpus_requested: Mapped[int] = mapped_column(Integer, default=0)
    cpu_milli: Mapped[int] = mapped_column(Integer, default=0)
    cpu_requested_milli: Mapped[int] = mapped_column(Integer, default=0)
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    memory_requested_mib: Mapped[int] = mapped_column(Integer, default=0)
    ready: Mapped[bool] = mapped_column(Boolean, default=False)
    unschedulable: Mapped[bool] = mapped_column(Boolean, default=False)
    cordon_reason: Mapped[str] = mapped_column(String(500), default="", server_default="")
    reserved_for: Mapped[str] = mapped_column(String(64), default="", server_default="")  # account name
    reserve_reason: Mapped[str] = mapped_column(String(500), default="", server_default="")  # the admin's reason
    pods_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # pods holding resources
    jobs_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # portal jobs among them
    gpu_util: Mapped[float | None] = mapped_column(Float)  # mean over its GPUs, last sample (None: no metrics)
    metrics_at: Mapped[datetime | None] = mapped_column(DateTime)
    capacity: Mapped[dict | None] = mapped_column(JSONText)
    allocatable: Mapped[dict | None] = mapped_column(JSONText)
    labels: Mapped[dict | None] = mapped_column(JSONText)
    taints: Mapped[list | None] = mapped_column(JSONText)
    conditions: Mapped[list | None] = mapped_column(JSONText)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Bumped on every change a page shows (the syncer's writes, an admin's action, a new GPU
    # sample): the nodes page's rendered table is keyed by the sum over all nodes.
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @property
    def schedulable(self) -> bool:
        return self.ready and not self.unschedulable

    @property
    def gpus_free(self) -> int:
        return max(0, self.gpus - self.gpus_requested) if self.schedulable else 0

    @property
    def state(self) -> str:
        if not self.ready:
            return NodeState.NOT_READY
        if self.unschedulable:
            return NodeState.CORDONED
        if self.reserved_for:
            return NodeState.RESERVED
        return NodeState.READY


class Placement(db.Model):
    """A pod that holds resources on a node (bound and not ended), and the portal job it belongs
    to (None for other workloads). Kept by the syncer from the pods it watches."""

    __tablename__ = "placements"
    __table_args__ = (UniqueConstraint("namespace", "pod"), Index("ix_placements_node", "node"),
                      Index("ix_placements_job", "job_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(253))
    pod: Mapped[str] = mapped_column(String(253))
    node: Mapped[str] = mapped_column(String(253))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    cpu_milli: Mapped[int] = mapped_column(Integer, default=0)
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    phase: Mapped[str] = mapped_column(String(16), default="")


class GpuDevice(db.Model):
    """One GPU of a node as the DCGM exporter last reported it: utilisation, memory, and the pod
    (hence the job) that holds it."""

    __tablename__ = "gpu_devices"
    __table_args__ = (Index("ix_gpu_devices_job", "job_id"),)

    node: Mapped[str] = mapped_column(String(253), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    uuid: Mapped[str] = mapped_column(String(64), default="")
    model: Mapped[str] = mapped_column(String(128), default="")
    util: Mapped[float | None] = mapped_column(Float)
    memory_used_mib: Mapped[int | None] = mapped_column(Integer)
    memory_total_mib: Mapped[int | None] = mapped_column(Integer)
    namespace: Mapped[str] = mapped_column(String(253), default="")
    pod: Mapped[str] = mapped_column(String(253), default="")
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    sampled_at: Mapped[datetime | None] = mapped_column(DateTime)
