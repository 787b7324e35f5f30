"""The cluster's nodes: the nodes page and node detail (from the database: the syncer keeps nodes,
placements and GPU devices current), and node administration (admins; each action calls the
cluster once, updates the row at once so the pages show it before the syncer's echo, and is
audited with its reason): cordon, uncordon, drain (preview, then cordon and stop exactly the
previewed jobs, telling their owners), reserve for an account and release, labels."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from flask_babel import gettext as _
from sqlalchemy import and_, case, delete, func, insert, select, tuple_, update
from sqlalchemy.orm import defer

from ..cluster.client import Cluster, ClusterError
from ..cache import short_cached
from ..extensions import db
from ..models import (ACTIVE_STATES, DRAIN_DONE, DRAIN_SCHEDULED, Account, GpuDevice, Job, JobState, Node, NodeDrain,
                      NodeState, Placement, User, utcnow)
from ..cluster import labels
from ..vocabulary import Reason
from . import accounts, audit, jobs
from .context import Actor
from .errors import Conflict, NotFound, ValidationFailed
from .pagination import Page, paginate

SORTS = {  # name -> order
    "name": (Node.name,),
    "free": ((Node.gpus - Node.gpus_requested).desc(), Node.name),
    "used": (Node.gpus_requested.desc(), Node.name),
    "util": (func.coalesce(Node.gpu_util, -1).desc(), Node.name),
    "jobs": (Node.jobs_count.desc(), Node.name),
    "model": (Node.gpu_model, Node.name),
}
# Labels an admin may set: not the ones Kubernetes, the device plugin or GPU feature discovery own.
PROTECTED_PREFIXES = ("kubernetes.io/", "k8s.io/", "node.kubernetes.io/", "node-role.kubernetes.io/", "nvidia.com/",
                      "feature.node.kubernetes.io/", labels.RESERVED_FOR)
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?)$")
MAX_REASON = 500


# ---- reading ----------------------------------------------------------------------------------

# Built once: GPUs a new job could get on a node (ready, not cordoned, not reserved).
_OPEN = and_(Node.ready.is_(True), Node.unschedulable.is_(False), Node.reserved_for == "")
FREE = case((and_(_OPEN, Node.gpus > Node.gpus_requested), Node.gpus - Node.gpus_requested), else_=0)
_SUMMARY = (select(Node.gpu_model, func.sum(Node.gpus), func.sum(Node.gpus_requested), func.sum(FREE), func.max(FREE),
                   func.sum(case((Node.reserved_for != "", Node.gpus), else_=0)), func.count(Node.name),
                   func.avg(Node.gpu_util))
            .where(Node.gpus > 0).group_by(Node.gpu_model).order_by(Node.gpu_model))
_WAITING = (select(Job.gpu_model, func.sum(Job.gpus)).where(Job.state == JobState.PENDING.value, Job.gpus > 0)
            .group_by(Job.gpu_model))
_VERSION = select(func.coalesce(func.sum(Node.version), 0), func.max(Node.metrics_at), func.count(Node.name))
_PENDING = select(func.count(Job.id), func.max(Job.id)).where(Job.state == JobState.PENDING.value)


def model_summary() -> list[dict]:
    """One line per GPU model: GPUs in total, in use, free (on open nodes), the largest free block
    on one node, reserved GPUs, and the GPUs pending jobs wait for; two grouped queries, read at
    most every CRATER_SHORT_CACHE_SECONDS per process."""
    rows, waiting = short_cached("node-summary", lambda: (
        [tuple(r) for r in db.session.execute(_SUMMARY)], dict(db.session.execute(_WAITING).all())))
    waiting = dict(waiting)
    out = [{"model": m, "label": m or _("unlabelled"), "total": int(t or 0), "used": int(u or 0), "free": int(f or 0),
            "largest": int(mx or 0), "reserved": int(r or 0), "nodes": int(n), "util": util,
            "waiting": int(waiting.pop(m, 0) or 0)} for m, t, u, f, mx, r, n, util in rows]
    any_model = sum(int(v or 0) for v in waiting.values())  # jobs that take any model ("" or a model no node has)
    if any_model:
        out.append({"model": None, "label": _("any model"), "total": None, "used": None, "free": None, "largest": None,
                    "reserved": None, "nodes": None, "util": None, "waiting": any_model})
    return out


@dataclass
class NodeFilter:
    model: str = ""
    state: str = ""
    min_free: int = 0
    sort: str = "name"
    gpu_only: bool = False


def list_nodes(f: NodeFilter, page: int, per_page: int) -> Page:
    # The table shows no conditions, taints or resource maps: not read (nor decoded from JSON).
    stmt = select(Node).options(defer(Node.conditions), defer(Node.taints), defer(Node.capacity), defer(Node.allocatable))
    if f.model:
        stmt = stmt.where(Node.gpu_model == f.model)
    if f.gpu_only:
        stmt = stmt.where(Node.gpus > 0)
    if f.state == NodeState.NOT_READY:
        stmt = stmt.where(Node.ready.is_(False))
    elif f.state == NodeState.CORDONED:
        stmt = stmt.where(Node.ready.is_(True), Node.unschedulable.is_(True))
    elif f.state == NodeState.RESERVED:
        stmt = stmt.where(Node.ready.is_(True), Node.unschedulable.is_(False), Node.reserved_for != "")
    elif f.state == NodeState.READY:
        stmt = stmt.where(Node.ready.is_(True), Node.unschedulable.is_(False), Node.reserved_for == "")
    if f.min_free > 0:
        stmt = stmt.where(f.min_free <= FREE)
    return paginate(stmt.order_by(*SORTS.get(f.sort, SORTS["name"])), page, per_page)


def nodes_version() -> str:
    """Changes whenever anything the nodes page shows changes (a poll that has it gets 204)."""
    def compute() -> str:
        updated, sampled, count = db.session.execute(_VERSION).one()
        waiting = db.session.execute(_PENDING).one()
        return f"{updated}|{sampled}|{count}|{waiting[0]}|{waiting[1]}"
    return short_cached("nodes-version", compute)


@dataclass
class NodeDetail:
    node: Node
    gpus: list[dict] = field(default_factory=list)  # index, uuid, util, memory, job (or holder)
    placements: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class DrainPreview:
    node: Node
    jobs: list
    others: list


def drain_preview(actor: Actor, name: str) -> DrainPreview:
    """What a drain would do now (admins): the jobs it would stop, and the other pods on the node."""
    actor.require_admin()
    node = get_node(name)
    return DrainPreview(node, jobs_on_node(node.name), other_pods_on_node(node.name))


def get_node(name: str) -> Node:
    node = db.session.get(Node, name[:253])
    if node is None:
        raise NotFound(_("No node named %(name)s.", name=name[:253]))
    return node


def node_detail(actor: Actor, name: str, show_names: bool) -> NodeDetail:
    """The node, its GPUs with their holders, and the pods on it with their jobs' owners and
    accounts. Other users' job names only for admins, managers of the job's account, or when the
    deployment shows them (`show_names`). Three queries."""
    node = get_node(name)
    managed = set(_managed_accounts(actor))
    rows = db.session.execute(
        select(Placement.namespace, Placement.pod, Placement.gpus, Placement.cpu_milli, Placement.memory_mib,
               Placement.phase, Job.id.label("job_id"), Job.display_name, Job.state, Job.job_type, Job.user_id,
               Job.account_id, User.username, Account.name.label("account"))
        .outerjoin(Job, Job.id == Placement.job_id).outerjoin(User, User.id == Job.user_id)
        .outerjoin(Account, Account.id == Job.account_id)
        .where(Placement.node == node.name).order_by(Placement.namespace, Placement.pod)).mappings().all()
    placements = []
    for r in rows:
        item = dict(r)
        item["visible"] = bool(r["job_id"]) and (actor.is_admin or r["user_id"] == actor.user.id
                                                 or r["account_id"] in managed)
        item["name_shown"] = bool(r["job_id"]) and (item["visible"] or show_names)
        placements.append(item)
    by_pod = {(p["namespace"], p["pod"]): p for p in placements}
    gpus = []
    for device in db.session.execute(select(GpuDevice).where(GpuDevice.node == node.name).order_by(GpuDevice.index)).scalars():
        gpus.append({"index": device.index, "uuid": device.uuid, "util": device.util, "memory_used": device.memory_used_mib,
                     "memory_total": device.memory_total_mib, "sampled_at": device.sampled_at,
                     "holder": by_pod.get((device.namespace, device.pod)) if device.pod else None,
                     "pod": device.pod, "namespace": device.namespace})
    return NodeDetail(node, gpus, placements)


def _managed_accounts(actor: Actor) -> list[int]:
    if actor.user is None:
        return []
    return [m.account_id for m in accounts.my_memberships(actor.user) if m.role == "manager"]


def jobs_on_node(name: str) -> list[dict]:
    """The active portal jobs with a pod on the node, with owner and account: a drain's impact."""
    return [dict(r) for r in db.session.execute(
        select(Job.id, Job.display_name, Job.state, Job.job_type, Job.gpus, Job.user_id, User.username, User.email,
               Account.name.label("account"), func.count(Placement.id).label("pods"))
        .join(Placement, Placement.job_id == Job.id).join(User, User.id == Job.user_id)
        .join(Account, Account.id == Job.account_id)
        .where(Placement.node == name, Job.state.in_(ACTIVE_STATES))
        .group_by(Job.id, Job.display_name, Job.state, Job.job_type, Job.gpus, Job.user_id, User.username, User.email,
                  Account.name)
        .order_by(Job.id)).mappings()]


def other_pods_on_node(name: str) -> int:
    return int(db.session.execute(select(func.count(Placement.id)).where(
        Placement.node == name, Placement.job_id.is_(None))).scalar() or 0)


# ---- administration -------------------------------------------------------------------------

def check_reason(reason: str) -> str:
    reason = " ".join((reason or "").split())
    if not reason:
        raise ValidationFailed({"reason": _("Say why (users see it).")})
    if len(reason) > MAX_REASON:
        raise ValidationFailed({"reason": _("At most %(n)s characters.", n=MAX_REASON)})
    return reason


def _patch(cluster: Cluster, name: str, patch: dict) -> dict:
    db.session.commit()  # no transaction stays open while the cluster is called
    try:
        return cluster.patch_node(name, patch)
    except ClusterError as exc:
        if exc.status == 404:
            raise NotFound(_("The cluster has no node named %(name)s (any more).", name=name)) from None
        if exc.status == 409:
            raise Conflict(_("The node changed meanwhile; look again and retry.")) from None
        raise Conflict(_("The cluster could not change the node now: %(error)s Try again in a minute.",
                         error=exc.message)) from None


def _read(cluster: Cluster, name: str) -> dict:
    db.session.commit()
    try:
        return cluster.read_node(name)
    except ClusterError as exc:
        if exc.status == 404:
            raise NotFound(_("The cluster has no node named %(name)s (any more).", name=name)) from None
        raise Conflict(_("The cluster could not answer now: %(error)s Try again in a minute.", error=exc.message)) from None


def cordon(actor: Actor, cluster: Cluster, name: str, reason: str) -> Node:
    actor.require_admin()
    node, reason = get_node(name), check_reason(reason)
    _patch(cluster, node.name, labels.cordon_patch(reason, actor.name))
    node = get_node(name)
    node.unschedulable, node.cordon_reason, node.updated_at, node.version = True, reason, utcnow(), node.version + 1
    audit.record(actor, "node.cordon", "node", node.name, {"reason": reason})
    db.session.commit()
    return node


def uncordon(actor: Actor, cluster: Cluster, name: str, reason: str) -> Node:
    actor.require_admin()
    node, reason = get_node(name), check_reason(reason)
    _patch(cluster, node.name, labels.uncordon_patch())
    node = get_node(name)
    node.unschedulable, node.cordon_reason, node.updated_at, node.version = False, "", utcnow(), node.version + 1
    audit.record(actor, "node.uncordon", "node", node.name, {"reason": reason})
    db.session.commit()
    return node


@dataclass
class DrainResult:
    stopped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # job id -> why it could not be stopped
    ended_meanwhile: list[int] = field(default_factory=list)
    new_since_preview: list[int] = field(default_factory=list)


def drain(actor: Actor, cluster: Cluster, name: str, job_ids: list[int], reason: str) -> DrainResult:
    """Cordon the node, then stop exactly the previewed jobs that are still on it (reason Evicted,
    the owner told by mail whatever their mail setting). Jobs that came onto the node after the
    preview are not touched: they are reported, for another look."""
    actor.require_admin()
    node, reason = get_node(name), check_reason(reason)
    cordon_for_drain(actor, cluster, node.name, reason)
    result = stop_drained(actor, cluster, node.name, job_ids, reason)
    # A drain scheduled with a grace period is done by this one.
    db.session.execute(update(NodeDrain).where(NodeDrain.node == node.name, NodeDrain.state == DRAIN_SCHEDULED)
                       .values(state=DRAIN_DONE, done_at=utcnow(), stopped=result.stopped))
    audit.record(actor, "node.drain", "node", node.name, {"reason": reason, "stopped": result.stopped,
                                                         "failed": sorted(result.failed),
                                                         "not_previewed": result.new_since_preview})
    db.session.commit()
    return result


def cordon_for_drain(actor: Actor, cluster: Cluster, name: str, reason: str) -> Node:
    """The cordon a drain starts with, now or when a scheduled drain's warning is due."""
    return cordon(actor, cluster, name, _("Drained: %(reason)s", reason=reason)[:MAX_REASON])


def stop_drained(actor: Actor, cluster: Cluster, name: str, job_ids: list[int], reason: str) -> DrainResult:
    """Stop exactly those of `job_ids` that are still on the node (reason Evicted, the owner told by
    mail whatever their mail setting); jobs on it that are not among them are reported, untouched.
    A job that could not be stopped is in `failed` with why."""
    wanted = sorted(set(job_ids))
    now_on = {j["id"] for j in jobs_on_node(name)}
    result = DrainResult(new_since_preview=sorted(now_on - set(wanted)))
    message = _("Node %(node)s was drained by an administrator: %(reason)s", node=name, reason=reason)
    for job_id in wanted:
        if job_id not in now_on:
            result.ended_meanwhile.append(job_id)
            continue
        try:
            jobs.stop_job(actor, job_id, cluster, reason=Reason.EVICTED, message=message, tell_owner=True)
            result.stopped.append(job_id)
        except (Conflict, NotFound) as exc:
            result.failed[job_id] = exc.message
    return result


def reserve(actor: Actor, cluster: Cluster, name: str, account_id: int | None, reason: str) -> Node:
    """Reserve the node for one account: a NoSchedule taint that only that account's jobs
    tolerate (the portal adds the toleration to every job of the account). Jobs already on the
    node keep running."""
    actor.require_admin()
    node, reason = get_node(name), check_reason(reason)
    account = db.session.get(Account, account_id) if account_id else None
    if account is None:
        raise ValidationFailed({"account": _("Choose an account.")})
    patch, taints = labels.reserve_patch(_read(cluster, node.name), account.name, reason)
    _patch(cluster, node.name, patch)
    node = get_node(name)
    node.reserved_for, node.taints, node.updated_at, node.version = account.name, taints, utcnow(), node.version + 1
    node.reserve_reason = reason[:500]
    audit.record(actor, "node.reserve", "node", node.name, {"account": account.name, "reason": reason})
    db.session.commit()
    return node


def release(actor: Actor, cluster: Cluster, name: str, reason: str) -> Node:
    actor.require_admin()
    node, reason = get_node(name), check_reason(reason)
    patch, taints = labels.unreserve_patch(_read(cluster, node.name))
    _patch(cluster, node.name, patch)
    node = get_node(name)
    was, node.reserved_for, node.taints, node.updated_at, node.version = node.reserved_for, "", taints, utcnow(), node.version + 1
    node.reserve_reason = ""
    audit.record(actor, "node.release", "node", node.name, {"account": was, "reason": reason})
    db.session.commit()
    return node


def check_label_key(key: str) -> str:
    key = (key or "").strip()
    prefix, _sep, name = key.rpartition("/")
    if not key or not LABEL_NAME.match(name) or (prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix))):
        raise ValidationFailed({"key": _("Not a Kubernetes label key (e.g. lab.example.edu/rack or rack).")})
    if any(key.startswith(p) or key == p.rstrip("/") for p in PROTECTED_PREFIXES):
        raise ValidationFailed({"key": _("%(key)s belongs to Kubernetes or the GPU operator; the portal does not change it.",
                                         key=key)})
    return key


def set_label(actor: Actor, cluster: Cluster, name: str, key: str, value: str) -> Node:
    actor.require_admin()
    node, key, value = get_node(name), check_label_key(key), (value or "").strip()
    if len(value) > 63 or not LABEL_VALUE.match(value):
        raise ValidationFailed({"value": _("A label value is at most 63 letters, digits, '-', '_' or '.', "
                                           "starting and ending with a letter or digit.")})
    _patch(cluster, node.name, labels.label_patch(key, value))
    node = get_node(name)
    node.labels, node.updated_at, node.version = {**(node.labels or {}), key: value}, utcnow(), node.version + 1
    audit.record(actor, "node.label", "node", node.name, {"key": key, "value": value})
    db.session.commit()
    return node


def remove_label(actor: Actor, cluster: Cluster, name: str, key: str) -> Node:
    actor.require_admin()
    node, key = get_node(name), check_label_key(key)
    if key not in (node.labels or {}):
        raise ValidationFailed({"key": _("The node has no label %(key)s.", key=key)})
    _patch(cluster, node.name, labels.label_patch(key, None))
    node = get_node(name)
    node.labels, node.updated_at, node.version = {k: v for k, v in (node.labels or {}).items() if k != key}, utcnow(), node.version + 1
    audit.record(actor, "node.unlabel", "node", node.name, {"key": key})
    db.session.commit()
    return node


def account_choices() -> list[tuple[int, str]]:
    return [(a.id, a.name) for a in db.session.execute(select(Account).order_by(Account.name)).scalars()]




# ---- for the syncer's GPU sampling pass -------------------------------------------------------

def record_gpu_devices(devices: list, now) -> int:
    """Replace the GPU devices with what the exporters report now (holders resolved through the
    placements), and each node's mean utilisation. Returns how many GPUs were written."""
    held = {(d.namespace, d.pod) for d in devices if d.pod}
    jobs_of: dict[tuple[str, str], int | None] = {}
    pods = sorted(held)
    for i in range(0, len(pods), 500):
        part = pods[i:i + 500]
        jobs_of.update({(ns, pod): job for ns, pod, job in db.session.execute(
            select(Placement.namespace, Placement.pod, Placement.job_id).where(
                tuple_(Placement.namespace, Placement.pod).in_(part)))})
    db.session.execute(delete(GpuDevice))
    rows = [dict(node=d.node, index=d.index, uuid=d.uuid[:64], model=d.model[:128], util=d.util,
                 memory_used_mib=d.memory_used_mib, memory_total_mib=d.memory_total_mib, namespace=d.namespace[:253],
                 pod=d.pod[:253], job_id=jobs_of.get((d.namespace, d.pod)), sampled_at=now) for d in devices]
    for i in range(0, len(rows), 500):
        db.session.execute(insert(GpuDevice), rows[i:i + 500])
    per_node: dict[str, list[float]] = {}
    for d in devices:
        if d.util is not None:
            per_node.setdefault(d.node, []).append(d.util)
    current = dict(db.session.execute(select(Node.name, Node.gpu_util)).all())
    sampled = sorted(n for n in per_node if n in current)
    for name in sampled:  # only the nodes whose mean changed get their own update
        util = round(sum(per_node[name]) / len(per_node[name]), 1)
        if util != current[name]:
            db.session.execute(update(Node).where(Node.name == name).values(gpu_util=util, version=Node.version + 1))
    for i in range(0, len(sampled), 500):
        db.session.execute(update(Node).where(Node.name.in_(sampled[i:i + 500])).values(metrics_at=now))
    unsampled = [Node.metrics_at.is_not(None)] + ([Node.name.notin_(sampled)] if sampled else [])
    db.session.execute(update(Node).where(*unsampled).values(gpu_util=None, metrics_at=None, version=Node.version + 1))
    db.session.commit()
    return len(rows)
