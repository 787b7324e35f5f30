"""The audit trail: `record` adds an entry in the caller's transaction (so the entry and the change
commit together); `list_entries` serves the admin audit page. Touches the DB only."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from ..extensions import db
from ..models import AuditEntry
from .context import Actor
from .pagination import Page, paginate


def record(actor: Actor, action: str, target_type: str = "", target_id="", detail: dict | None = None) -> None:
    db.session.add(AuditEntry(
        actor_id=actor.user.id if actor.user else None,
        actor_name=actor.name,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        detail=({**(detail or {}), "token": actor.token} if actor.token else detail) or None,
        client_ip=actor.client_ip[:45],
    ))


@dataclass
class AuditFilter:
    actor: str = ""
    action: str = ""
    target_type: str = ""
    target_id: str = ""
    since: datetime | None = None
    until: datetime | None = None


def list_entries(actor: Actor, filters: AuditFilter, page: int, per_page: int) -> Page:
    actor.require_admin()
    stmt = select(AuditEntry)
    if filters.actor:
        stmt = stmt.where(AuditEntry.actor_name == filters.actor)
    if filters.action:
        stmt = stmt.where(AuditEntry.action == filters.action)
    if filters.target_type:
        stmt = stmt.where(AuditEntry.target_type == filters.target_type)
    if filters.target_id:
        stmt = stmt.where(AuditEntry.target_id == filters.target_id)
    if filters.since:
        stmt = stmt.where(AuditEntry.created_at >= filters.since)
    if filters.until:
        stmt = stmt.where(AuditEntry.created_at < filters.until)
    return paginate(stmt.order_by(AuditEntry.id.desc()), page, per_page)


def known_actions() -> list[str]:
    """Actions for the filter's drop-down: a fixed list, so the page needs no DISTINCT scan."""
    return sorted(ACTIONS)


WARNING_KINDS = ("idle_gpu", "time_limit")  # the policies' warnings (job.warned.<kind>, job.warning_cleared.<kind>)
ACTIONS = {
    "user.create", "user.login", "user.login_refused", "user.role", "user.deactivate", "user.reactivate",
    "user.create_admin", "user.settings", "user.restrict", "user.unrestrict", "account.create", "account.update", "account.delete",
    "member.add", "member.update", "member.remove",
    "job.submit", "job.submit_failed", "job.submit_abandoned", "job.stop", "job.delete", "job.orphan_removed",
    "job.queue", "job.admit", "job.cancel", "job.requeue", "job.extend", "job.extension_requested",
    "job.extension_rejected", "job.extension_cancelled", "job.lock", "job.unlock", "job.preempt", "job.reclaim",
    "job.reclassify", "job.terminal_open", "job.terminal_close", "job.port_open", "job.port_close",
    *(f"job.warned.{kind}" for kind in WARNING_KINDS), *(f"job.warning_cleared.{kind}" for kind in WARNING_KINDS),
    "node.cordon", "node.uncordon", "node.drain", "node.drain_scheduled", "node.drain_cancel", "node.reserve", "node.release", "node.label", "node.unlabel",
    "policy.update", "policy.suspend", "policy.resume", "policy.run_now",
    "template.create", "template.delete", "image.add", "image.delete", "image.register", "image.approve", "image.decline", "token.create", "token.revoke",
    "file.upload", "file.mkdir", "file.move", "file.delete",
    "dataset.create", "dataset.update", "dataset.delete", "dataset.share", "dataset.unshare",
    "maintenance.announce", "maintenance.cancel",
}
TARGET_TYPES = ("user", "account", "job", "node", "policy", "template", "image", "token", "file", "dataset", "maintenance")


def known_target_types() -> list[str]:
    return list(TARGET_TYPES)
