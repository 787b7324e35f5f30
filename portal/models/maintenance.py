"""Maintenance announced by an administrator (a banner on every page while it is planned or under
way, a notice to the owners of the jobs it touches) and drains of a node with a grace period: the
node is cordoned and the owners warned, and its jobs are stopped when the grace ends, by the
leading syncer."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, Select, String, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .job import ACTIVE_STATES, Job
from .node import Placement
from .types import JSONText, utcnow

DRAIN_SCHEDULED, DRAIN_DONE, DRAIN_CANCELLED = "scheduled", "done", "cancelled"


class Maintenance(db.Model):
    __tablename__ = "maintenances"
    __table_args__ = (Index("ix_maintenances_ends_at", "ends_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message: Mapped[str] = mapped_column(String(500))
    starts_at: Mapped[datetime] = mapped_column(DateTime)
    ends_at: Mapped[datetime] = mapped_column(DateTime)
    nodes: Mapped[list] = mapped_column(JSONText, default=list)  # empty: the whole cluster
    drain_minutes: Mapped[int | None] = mapped_column(Integer)  # drain the nodes at the start, warning this long before
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime)

    created_by = relationship("User")

    def touched_jobs(self, *columns) -> Select:
        """A select of `columns` over the active jobs this maintenance touches: those with a pod on
        its nodes, or every active job when it is the whole cluster's."""
        stmt = select(*columns).where(Job.state.in_(ACTIVE_STATES))
        if self.nodes:
            stmt = stmt.join(Placement, Placement.job_id == Job.id).where(Placement.node.in_(self.nodes))
        return stmt


class NodeDrain(db.Model):
    """A drain with a grace period. `warn_at`: when the node is cordoned and the owners of its jobs
    are told (`warned_at` once done, `job_ids` the jobs told); `stop_at`: when those jobs are
    stopped. State scheduled → done, or cancelled by an admin before the stop."""
    __tablename__ = "node_drains"
    __table_args__ = (Index("ix_node_drains_state_node", "state", "node"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(253))
    reason: Mapped[str] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(16), default=DRAIN_SCHEDULED)
    warn_at: Mapped[datetime] = mapped_column(DateTime)
    stop_at: Mapped[datetime] = mapped_column(DateTime)
    warned_at: Mapped[datetime | None] = mapped_column(DateTime)
    job_ids: Mapped[list] = mapped_column(JSONText, default=list)
    stopped: Mapped[list] = mapped_column(JSONText, default=list)
    left_running: Mapped[list] = mapped_column(JSONText, default=list)  # came onto the node after the warning: not stopped
    maintenance_id: Mapped[int | None] = mapped_column(ForeignKey("maintenances.id", ondelete="SET NULL"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(DateTime)

    created_by = relationship("User")
