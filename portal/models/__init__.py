"""SQLAlchemy models: schema and small invariants. No network, no config lookups, no commits."""
from .account import Account, AccountGpuQuota, Membership, MemberRole
from .audit import AuditEntry
from .job import ACTIVE_STATES, Job, JobEvent, JobState
from .node import Node
from .sync import SyncHeartbeat
from .types import utcnow
from .user import AuthSource, Role, User

__all__ = [
    "ACTIVE_STATES", "Account", "AccountGpuQuota", "AuditEntry", "AuthSource", "Job", "JobEvent", "JobState",
    "Membership", "MemberRole", "Node", "Role", "SyncHeartbeat", "User", "utcnow",
]
