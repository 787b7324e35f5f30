"""Maintenance, announced (admins): a message with a start and an end, for the whole cluster or
some nodes, shown as a banner on every page until it ends, told to the owners of the jobs it
touches (a notice, and a mail as their settings say), and optionally a drain of its nodes at its
start, with the owners warned a grace period before.

Drains with a grace period: the node is cordoned and the owners of its jobs are warned when the
drain is scheduled (or, for a maintenance, the grace period before its start); the leading
syncer's reconciler stops the warned jobs when the grace ends (`run_due`). Jobs that came onto the
node after the warning are left running and reported, as the immediate drain does."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import selectinload

from ..cache import short_cached
from ..cluster.client import Cluster
from ..extensions import db
from ..models import ACTIVE_STATES, Job, Maintenance, Node, NodeDrain, Notification, OutboxMessage, utcnow
from ..models import DRAIN_CANCELLED as CANCELLED
from ..models import DRAIN_DONE as DONE
from ..models import DRAIN_SCHEDULED as SCHEDULED
from . import audit, nodes, notify
from .context import SYSTEM, Actor
from .errors import Conflict, NotFound, ValidationFailed
from .pagination import Page, paginate

log = logging.getLogger("crater.sync")
MAX_MESSAGE = 500
MAX_NODES = 200
MAX_GRACE_MINUTES = 7 * 24 * 60
MAX_LENGTH = timedelta(days=31)
MAX_AHEAD = timedelta(days=366)
BANNER_LIMIT = 3
_WHEN = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::\d{2})?\s*$")


def parse_when(text: str, field: str) -> datetime:
    """A time an admin typed, in UTC: "2026-12-24T08:00" (the browser's datetime field) or "2026-12-24 08:00"."""
    m = _WHEN.match(text or "")
    if not m:
        raise ValidationFailed({field: _("Give a date and time, e.g. 2026-12-24 08:00 (UTC).")})
    try:
        return datetime(*(int(g) for g in m.groups()))
    except ValueError:
        raise ValidationFailed({field: _("Give a date and time, e.g. 2026-12-24 08:00 (UTC).")}) from None


def _when_or_error(text: str, field: str, errors: dict) -> datetime | None:
    """parse_when, its refusal added to `errors` (every field's at once)."""
    try:
        return parse_when(text, field)
    except ValidationFailed as exc:
        errors.update(exc.errors)
        return None


def grace_minutes(text: str | int | None, field: str = "grace") -> int:
    try:
        value = int(str(text if text not in (None, "") else 0).strip())
    except ValueError:
        raise ValidationFailed({field: _("Give a whole number of minutes.")}) from None
    if not 0 <= value <= MAX_GRACE_MINUTES:
        raise ValidationFailed({field: _("Between 0 and %(n)s minutes.", n=MAX_GRACE_MINUTES)})
    return value


# ---- announcements ----------------------------------------------------------------------------

def announce(actor: Actor, message: str, starts: str, ends: str, node_names: list[str], drain: bool,
             drain_grace: str | int | None, now: datetime | None = None) -> Maintenance:
    actor.require_admin()
    now = now or utcnow()
    errors = {}
    message = " ".join((message or "").split())
    if not message:
        errors["message"] = _("Say what happens (every user reads it).")
    elif len(message) > MAX_MESSAGE:
        errors["message"] = _("At most %(n)s characters.", n=MAX_MESSAGE)
    start, end = _when_or_error(starts, "starts", errors), _when_or_error(ends, "ends", errors)
    if start and end:
        if end <= start:
            errors["ends"] = _("The end must come after the start.")
        elif end - start > MAX_LENGTH:
            errors["ends"] = _("At most %(n)s days; announce a longer one in parts.", n=MAX_LENGTH.days)
        elif end <= now:
            errors["ends"] = _("This time has passed.")
        elif start > now + MAX_AHEAD:
            errors["starts"] = _("At most a year ahead.")
    names = sorted({n.strip() for n in node_names if n and n.strip()})
    if len(names) > MAX_NODES:
        errors["nodes"] = _("At most %(n)s nodes.", n=MAX_NODES)
    elif names:
        known = set(db.session.execute(select(Node.name).where(Node.name.in_(names))).scalars())
        unknown = [n for n in names if n not in known]
        if unknown:
            errors["nodes"] = _("No node named %(name)s.", name=", ".join(unknown[:5]))
    grace = None
    if drain:
        try:
            grace = grace_minutes(drain_grace, "drain_grace")
        except ValidationFailed as exc:
            errors.update(exc.errors)
        if not names:
            errors["nodes"] = _("Choose the nodes to drain (a drain of the whole cluster is not offered).")
    if errors:
        raise ValidationFailed(errors)
    row = Maintenance(message=message, starts_at=start, ends_at=end, nodes=names, drain_minutes=grace,
                      created_by_id=actor.user.id if actor.user else None, created_at=now)
    db.session.add(row)
    db.session.flush()
    if grace is not None:
        reason = _("Maintenance: %(message)s", message=message)[:MAX_MESSAGE]
        for name in names:
            if scheduled_on(name) is None:
                db.session.add(NodeDrain(node=name, reason=reason, warn_at=max(now, start - timedelta(minutes=grace)),
                                         stop_at=max(now, start), maintenance_id=row.id, created_by_id=row.created_by_id,
                                         created_at=now))
    told = _tell_owners(row)
    audit.record(actor, "maintenance.announce", "maintenance", row.id,
                 {"starts": start.isoformat(), "ends": end.isoformat(), "nodes": names, "drain_minutes": grace, "told": told})
    db.session.commit()
    return row


def _tell_owners(row: Maintenance) -> int:
    """A notice (and a mail, as each owner's settings say) to every owner of an active job the
    maintenance touches: on its nodes, or anywhere for the whole cluster. One per owner."""
    owners = set(db.session.execute(row.touched_jobs(Job.user_id).distinct()).scalars())
    mail = notify.wants_mail_of(owners, "maintenance")
    for user_id in sorted(owners):
        key = f"maintenance:{row.id}:{user_id}"
        db.session.add(Notification(user_id=user_id, kind="maintenance", dedupe_key=key, maintenance_id=row.id))
        if mail[user_id]:
            db.session.add(OutboxMessage(kind="maintenance", dedupe_key=key, user_id=user_id))
    return len(owners)


def told(maintenance_id: int) -> int:
    """How many owners were told of an announcement."""
    return int(db.session.execute(select(func.count(Notification.id)).where(
        Notification.maintenance_id == maintenance_id)).scalar() or 0)


def node_names() -> list[str]:
    """The nodes an announcement may name (the form's list)."""
    return list(db.session.execute(select(Node.name).order_by(Node.name).limit(MAX_NODES * 5)).scalars())


def cancel(actor: Actor, maintenance_id: int, now: datetime | None = None) -> Maintenance:
    actor.require_admin()
    row = get(maintenance_id)
    if row.cancelled_at is not None:
        raise Conflict(_("This maintenance was already cancelled."))
    row.cancelled_at = now or utcnow()
    dropped = db.session.execute(update(NodeDrain).where(NodeDrain.maintenance_id == row.id, NodeDrain.state == SCHEDULED)
                                 .values(state=CANCELLED, done_at=row.cancelled_at)).rowcount
    audit.record(actor, "maintenance.cancel", "maintenance", row.id, {"drains_cancelled": dropped})
    db.session.commit()
    return row


def get(maintenance_id: int) -> Maintenance:
    row = db.session.get(Maintenance, maintenance_id)
    if row is None:
        raise NotFound(_("No such maintenance."))
    return row


def page(actor: Actor, page_no: int, per_page: int) -> Page:
    actor.require_admin()
    stmt = select(Maintenance).options(selectinload(Maintenance.created_by)).order_by(Maintenance.starts_at.desc(),
                                                                                      Maintenance.id.desc())
    return paginate(stmt, page_no, per_page)


@dataclass(frozen=True)
class Announcement:
    id: int
    message: str
    starts_at: datetime
    ends_at: datetime
    nodes: tuple[str, ...]
    under_way: bool


def current(now: datetime | None = None) -> list[Announcement]:
    """The banner: maintenance planned or under way (not cancelled, not ended), the soonest first.
    One indexed query, cached for a few seconds."""
    def compute():
        at = now or utcnow()
        rows = db.session.execute(select(Maintenance).where(Maintenance.ends_at > at, Maintenance.cancelled_at.is_(None))
                                  .order_by(Maintenance.starts_at, Maintenance.id).limit(BANNER_LIMIT)).scalars()
        return [Announcement(r.id, r.message, r.starts_at, r.ends_at, tuple(r.nodes or ()), r.starts_at <= at) for r in rows]
    if now is not None:
        return compute()
    return short_cached(("maintenance-banner",), compute)


@dataclass(frozen=True)
class JobNotice:
    maintenances: list[Announcement]
    drain: NodeDrain | None


def for_job(job: Job, now: datetime | None = None) -> JobNotice:
    """What the job's page says of maintenance: announcements that name a node its pods run on,
    and a scheduled drain that will stop it. No query for a job without a pod on a node (the
    job's row says where its pods are), two otherwise (the announcements are short-cached)."""
    on = {p.get("node") for p in job.pods or [] if isinstance(p, dict) and p.get("node")}
    if job.state not in ACTIVE_STATES or not on:
        return JobNotice([], None)
    touching = [a for a in current(now) if set(a.nodes) & on]
    drain = None
    for d in db.session.execute(select(NodeDrain).where(NodeDrain.state == SCHEDULED, NodeDrain.node.in_(sorted(on)))
                                .order_by(NodeDrain.stop_at)).scalars():
        if d.warned_at is None or job.id in (d.job_ids or []):
            drain = d
            break
    if drain is not None:  # the drain's own maintenance is said with the drain
        touching = [a for a in touching if a.id != drain.maintenance_id]
    return JobNotice(touching, drain)


# ---- drains with a grace period -------------------------------------------------------------

def scheduled_on(node: str) -> NodeDrain | None:
    """The node's drain that is scheduled and not yet carried out (at most one)."""
    return db.session.execute(select(NodeDrain).where(NodeDrain.state == SCHEDULED, NodeDrain.node == node)
                              .order_by(NodeDrain.id).limit(1)).scalar()


def schedule_drain(actor: Actor, cluster: Cluster, name: str, job_ids: list[int], reason: str, grace: int,
                   now: datetime | None = None) -> NodeDrain:
    """Cordon the node now, warn the owners of the previewed jobs still on it, and stop those jobs
    `grace` minutes from now (the syncer does, `run_due`)."""
    actor.require_admin()
    now = now or utcnow()
    node, reason = nodes.get_node(name), nodes.check_reason(reason)
    if not 0 < grace <= MAX_GRACE_MINUTES:
        raise ValidationFailed({"grace": _("Between 0 and %(n)s minutes.", n=MAX_GRACE_MINUTES)})
    existing = scheduled_on(node.name)
    if existing is not None:
        raise Conflict(_("A drain of %(node)s is already scheduled (its jobs stop at %(when)s UTC); cancel it first, "
                         "or drain now.", node=node.name, when=existing.stop_at.strftime("%Y-%m-%d %H:%M")))
    nodes.cordon_for_drain(actor, cluster, node.name, reason)
    drain = NodeDrain(node=node.name, reason=reason, warn_at=now, stop_at=now + timedelta(minutes=grace),
                      created_by_id=actor.user.id if actor.user else None, created_at=now)
    db.session.add(drain)
    db.session.flush()
    _warn(drain, now, only=set(job_ids))
    audit.record(actor, "node.drain_scheduled", "node", node.name,
                 {"reason": reason, "grace_minutes": grace, "jobs": drain.job_ids})
    db.session.commit()
    return drain


def _warn(drain: NodeDrain, now: datetime, only: set[int] | None = None) -> None:
    """Record the jobs now on the node (those previewed, when `only`) and tell their owners."""
    warned = [j for j in nodes.jobs_on_node(drain.node) if only is None or j["id"] in only]
    drain.job_ids, drain.warned_at = [j["id"] for j in warned], now
    for j in warned:
        notify.notice(j["id"], j["user_id"], "drain_warning", f"drain:{drain.id}:{j['id']}")


def cancel_drain(actor: Actor, drain_id: int, node: str) -> NodeDrain:
    """The jobs keep running; the node stays cordoned (uncordon it when it may take jobs again)."""
    actor.require_admin()
    drain = db.session.get(NodeDrain, drain_id)
    if drain is None or drain.node != node:
        raise NotFound(_("No such drain."))
    changed = db.session.execute(update(NodeDrain).where(NodeDrain.id == drain.id, NodeDrain.state == SCHEDULED)
                                 .values(state=CANCELLED, done_at=utcnow())).rowcount
    if not changed:
        db.session.rollback()
        raise Conflict(_("This drain has already been carried out or cancelled."))
    audit.record(actor, "node.drain_cancel", "node", drain.node, {"drain": drain.id})
    db.session.commit()
    return drain


def run_due(cluster: Cluster, now: datetime) -> dict[str, list[int]]:
    """The syncer's pass: warn (cordon first) where the warning is due, stop where the grace has
    ended. Each drain is finished in its own transactions; a failing cluster call leaves it
    scheduled for the next pass."""
    due = db.session.execute(select(NodeDrain).where(NodeDrain.state == SCHEDULED,
                                                     or_(NodeDrain.warn_at <= now, NodeDrain.stop_at <= now))
                             .order_by(NodeDrain.id)).scalars().all()
    out: dict[str, list[int]] = {"warned": [], "done": []}
    for drain in due:
        drain_id = drain.id
        if drain.warned_at is None:
            try:
                nodes.cordon_for_drain(SYSTEM, cluster, drain.node, drain.reason)
            except NotFound:
                _finish(drain_id, [], [], now)
                out["done"].append(drain_id)
                continue
            except Conflict as exc:
                log.warning("drain %s: the node could not be cordoned now: %s", drain_id, exc.message)
                continue
            drain = db.session.get(NodeDrain, drain_id)
            if drain.state != SCHEDULED:
                continue
            _warn(drain, now)
            db.session.commit()
            out["warned"].append(drain_id)
            if drain.stop_at > now:
                continue
        drain = db.session.get(NodeDrain, drain_id)
        if drain.stop_at > now or drain.state != SCHEDULED:
            continue
        result = nodes.stop_drained(SYSTEM, cluster, drain.node, drain.job_ids or [], drain.reason)
        db.session.rollback()
        failed = list(db.session.execute(select(Job.id).where(
            Job.id.in_(sorted(result.failed)), Job.state.in_(ACTIVE_STATES))).scalars()) if result.failed else []
        if failed:  # the cluster did not answer for them: tried again next pass
            out.setdefault("failed", []).extend(failed)
            continue
        _finish(drain_id, result.stopped, result.new_since_preview, now)
        out["done"].append(drain_id)
    return out


def _finish(drain_id: int, stopped: list[int], left: list[int], now: datetime) -> None:
    changed = db.session.execute(update(NodeDrain).where(NodeDrain.id == drain_id, NodeDrain.state == SCHEDULED)
                                 .values(state=DONE, done_at=now, stopped=stopped, left_running=left)).rowcount
    drain = db.session.get(NodeDrain, drain_id)
    if changed:
        audit.record(SYSTEM, "node.drain", "node", drain.node, {"reason": drain.reason, "stopped": stopped,
                                                                "not_warned": left, "scheduled": drain.id})
    db.session.commit()
