"""SQLAlchemy models: schema and small invariants. No network, no config lookups, no commits."""
from .account import Account, AccountGpuQuota, Membership, MemberRole
from .audit import AuditEntry
from .dav import DavLock
from .dataset import DATASET_KINDS, VISIBILITIES, Dataset, DatasetShare, JobDataset
from .fair_use import ExtensionRequest, ExtensionState, JobWarning, PolicyRun, PolicySetting
from .job import ACTIVE_STATES, FINAL_STATES, OPEN_STATES, Image, Job, JobEvent, JobState, JobTemplate, Preemption, QueueUsage
from .maintenance import DRAIN_CANCELLED, DRAIN_DONE, DRAIN_SCHEDULED, Maintenance, NodeDrain
from .node import GpuDevice, Node, NodeState, Placement
from .outbox import Notification, OutboxMessage
from .sync import SyncHeartbeat
from .terminal import JobPort, TerminalSession
from .token import ApiToken
from .types import MAX_ID, utcnow  # noqa: F401  (re-exported)
from .usage import UsageDay, UsageModelDay, UsageRollup
from .user import AuthSource, Restriction, Role, User

__all__ = [
    "DRAIN_CANCELLED", "DRAIN_DONE", "DRAIN_SCHEDULED", "Maintenance", "NodeDrain",
    "DavLock", "DATASET_KINDS", "VISIBILITIES", "Dataset", "DatasetShare", "JobDataset", "ApiToken", "TerminalSession", "JobPort", "ACTIVE_STATES", "FINAL_STATES", "OPEN_STATES", "QueueUsage", "Preemption", "ExtensionRequest", "ExtensionState", "JobWarning", "PolicyRun", "PolicySetting", "Account", "AccountGpuQuota", "AuditEntry", "AuthSource", "Image", "Job", "JobEvent", "JobState", "JobTemplate",
    "GpuDevice", "Membership", "MemberRole", "Node", "NodeState", "Placement", "UsageDay", "UsageModelDay", "UsageRollup", "Notification", "OutboxMessage", "Restriction", "Role", "SyncHeartbeat", "User", "utcnow",
]
