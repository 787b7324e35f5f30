"""What the job pages and the home page read: job lists with filters and sorting, a pending job's
outlook (its place in the queue and an estimated start), quota usage, free GPUs per model and the
age of the cluster data. Reads the DB only: the syncer keeps it current, no request asks Kubernetes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import bindparam, func, select

from ..extensions import db
from ..models import ACTIVE_STATES, OPEN_STATES, Account, Job, JobEvent, JobState, Membership, MemberRole, Node, SyncHeartbeat, User, utcnow
from ..cache import short_cached
from ..vocabulary import Reason
from .context import Actor
from .errors import Forbidden
from .scheduling.state import under_maintenance
from .pagination import Page, contains_text, like_pattern, page_statements, run_page

SCOPES = ("mine", "account", "all")
SORTS = {  # name -> (column, descending first)
    "newest": (Job.id, True), "oldest": (Job.id, False), "name": (Job.display_name, False),
    "state": (Job.state, False), "gpus": (Job.gpus, True),
}
LIST_COLUMNS = (Job.id, Job.display_name, Job.job_type, Job.state, Job.reason, Job.gpus, Job.gpu_model, Job.created_at,
                Job.started_at, Job.time_limit_seconds, Job.queue_position, Job.queue_estimate, Job.borrowed)


@dataclass(frozen=True)
class JobFilter:
    scope: str = "mine"
    state: str = ""  # a JobState value, or "active"
    job_type: str = ""
    account_id: int | None = None
    text: str = ""
    sort: str = "newest"


def my_account_choices(actor: Actor) -> list:
    """(id, name, role) of the accounts I belong to, for the list's filter and scope tabs (may be
    a few seconds old: the scopes themselves are checked in `list_jobs`)."""
    return short_cached(("accounts-of", actor.user.id), lambda: [dict(r) for r in db.session.execute(
        select(Account.id, Account.name, Membership.role).join(Membership, Membership.account_id == Account.id)
        .where(Membership.user_id == actor.user.id).order_by(Account.name)).mappings()])


def managed_account_ids(actor: Actor) -> list[int]:
    return list(db.session.execute(select(Membership.account_id).where(
        Membership.user_id == actor.user.id, Membership.role == MemberRole.MANAGER.value)).scalars())


def _shape(actor: Actor, f: JobFilter) -> tuple[tuple, dict]:
    """The filter's shape (scope, state, by type, by account, text, sort), checked against what
    the actor may see, and its bind parameters. Scopes: mine; the accounts I manage (all
    accounts for admins); all (admins only)."""
    params: dict = {}
    scope = f.scope
    if scope == "mine":
        params["user_id"] = actor.user.id
    elif scope == "account" and not actor.is_admin:
        params["managed"] = managed_account_ids(actor)
        if not params["managed"]:
            raise Forbidden(_("You do not manage any account."))
    elif scope == "account" or scope == "all":
        actor.require_admin()
        scope = "all"
    state = "active" if f.state == "active" else "one" if f.state else ""
    if state == "one":
        params["state"] = f.state
    if f.job_type:
        params["job_type"] = f.job_type
    if f.account_id:
        params["account_id"] = f.account_id
    text = ("id" if f.text.isdigit() else "text") if f.text else ""
    if text:
        params["pattern"] = like_pattern(f.text)
    if text == "id":
        params["text_id"] = int(f.text)
    sort = f.sort if f.sort in SORTS else "newest"
    return (scope, state, bool(f.job_type), bool(f.account_id), text, sort), params


def list_jobs(actor: Actor, f: JobFilter, page: int, per_page: int) -> Page:
    """A page of jobs as mappings of (id, version, state, created_at): enough to know whether a
    cached rendering of the row is current; `list_rows` gives the rest for the others."""
    shape, params = _shape(actor, f)
    return run_page(_list_statements(*shape), page, per_page, params)


def list_jobs_after(actor: Actor, f: JobFilter, after: tuple | None, limit: int) -> tuple[list[dict], tuple | None]:
    """Keyset pagination (the API's cursors): up to `limit` jobs after `after` = (sort value, id)
    of the last one seen, with what a list row shows (as `list_rows`), and the key to continue
    from (None at the end). Jobs added meanwhile never shift a page: the next one starts after
    the last key, whatever came before it."""
    shape, params = _shape(actor, f)
    column, desc = SORTS[shape[-1]]
    stmt = _keyset_statement(*shape, bool(after))
    if after:
        params["after_id"] = int(after[1])
        if column is not Job.id:
            params["after_value"] = after[0]
    rows = [dict(r) for r in db.session.execute(stmt, {**params, "limit": limit + 1}).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    if not more or not rows:
        return rows, None
    last = rows[-1]
    return rows, (last["sort_value"], last["id"])


@functools.lru_cache(maxsize=512)
def _keyset_statement(scope: str, state: str, by_type: bool, by_account: bool, text: str, sort: str, after: bool):
    column, desc = SORTS[sort]
    where = _conditions(scope, state, by_type, by_account, text)
    if after:
        after_id = bindparam("after_id")
        if column is Job.id:
            where.append(Job.id < after_id if desc else Job.id > after_id)
        else:
            value = bindparam("after_value")
            where.append((column < value) | ((column == value) & (Job.id < after_id)) if desc
                         else (column > value) | ((column == value) & (Job.id > after_id)))
    order = [column.desc(), Job.id.desc()] if desc else [column.asc(), Job.id.asc()]
    if column is Job.id:
        order = order[:1]
    # One statement for the page and what its rows show (names joined): the API's list is one
    # round trip. STRAIGHT_JOIN: MySQL walks the jobs' index in the page's order, then looks up names.
    return (select(*LIST_COLUMNS, Job.version, User.username, Account.name.label("account"), column.label("sort_value"))
            .prefix_with("STRAIGHT_JOIN", dialect="mysql")
            .join(User, User.id == Job.user_id).join(Account, Account.id == Job.account_id)
            .where(*where).order_by(*order).limit(bindparam("limit")))


def _conditions(scope: str, state: str, by_type: bool, by_account: bool, text: str) -> list:
    where = [Job.hidden.is_(False)]
    if scope == "mine":
        where.append(Job.user_id == bindparam("user_id"))
    elif scope == "account":
        where.append(Job.account_id.in_(bindparam("managed", expanding=True)))
    if state == "active":
        where.append(Job.state.in_(OPEN_STATES))
    elif state == "one":
        where.append(Job.state == bindparam("state"))
    if by_type:
        where.append(Job.job_type == bindparam("job_type"))
    if by_account:
        where.append(Job.account_id == bindparam("account_id"))
    if text == "text":
        where.append(contains_text(bindparam("pattern"), Job.display_name, Job.image))
    elif text == "id":
        where.append((Job.id == bindparam("text_id")) | contains_text(bindparam("pattern"), Job.display_name))
    return where


@functools.lru_cache(maxsize=512)
def _list_statements(scope: str, state: str, by_type: bool, by_account: bool, text: str, sort: str):
    """The list's page and count statements for one shape of filter, built once per process
    (building and keying a statement costs about as much as MySQL takes to run it); the values
    come as bind parameters."""
    where = _conditions(scope, state, by_type, by_account, text)
    column, desc = SORTS[sort]
    # Ties break on the id in the same direction, so an index on (column, id) serves the order.
    order = [column.desc(), Job.id.desc()] if desc else [column.asc(), Job.id.asc()]
    if column is Job.id:
        order = order[:1]
    return page_statements(select(Job.id, Job.version, Job.state, Job.created_at).where(*where).order_by(*order))


@dataclass(frozen=True)
class JobRow:
    """What a job list's row shows."""
    id: int
    name: str
    job_type: str
    state: str
    reason: str  # shown beside the state only when it says more than the state
    queue_position: int | None
    queue_estimate: datetime | None
    deadline: datetime | None  # a running job's time limit
    gpus: int
    gpu_model: str
    owner: str
    account: str
    created_at: datetime
    borrowed: bool = False  # runs (or last ran) beyond its account's guarantee

    @classmethod
    def of(cls, r) -> JobRow:
        state = r["state"]
        running = state == JobState.RUNNING.value
        deadline = r["started_at"] + timedelta(seconds=r["time_limit_seconds"]) \
            if running and r["started_at"] and r["time_limit_seconds"] else None
        quiet = state in (JobState.RUNNING.value, JobState.SUCCEEDED.value, JobState.QUEUED.value)
        return cls(r["id"], r["display_name"], r["job_type"], state, "" if quiet else (r["reason"] or ""),
                   r["queue_position"], r["queue_estimate"], deadline, r["gpus"] or 0, r["gpu_model"] or "",
                   r["username"], r["account"], r["created_at"], bool(r["borrowed"]) and state in OPEN_STATES)


def list_rows(job_ids) -> dict[int, JobRow]:
    """What the list rows of the given jobs show (job columns, the owner's and account's names)."""
    if not job_ids:
        return {}
    # STRAIGHT_JOIN: walk the given jobs and look up names (MySQL may otherwise start elsewhere).
    stmt = (select(*LIST_COLUMNS, User.username, Account.name.label("account"))
            .prefix_with("STRAIGHT_JOIN", dialect="mysql")
            .join(User, User.id == Job.user_id).join(Account, Account.id == Job.account_id)
            .where(Job.id.in_(list(job_ids))))
    return {r["id"]: JobRow.of(r) for r in db.session.execute(stmt).mappings()}


def any_changeable(rows) -> bool:
    return any(r["state"] in OPEN_STATES for r in rows)


# ---- a pending job's outlook ---------------------------------------------------------------

@dataclass(frozen=True)
class Outlook:
    position: int  # 1 = next in line among pending jobs wanting the same GPU model
    waiting: int  # pending jobs wanting that model
    free_gpus: int  # free GPUs of that model on schedulable nodes now
    estimated_start: datetime | None  # None: cannot tell (running jobs without time limits)
    reason: str  # in words


def outlook(job: Job) -> Outlook | None:
    """For a pending GPU job: how many same-model pending jobs were submitted before it, and when
    enough GPUs should be free for it and those before it, counting the time limits of running
    jobs on that model (each ends at the latest when its limit is reached)."""
    if job.state != JobState.PENDING.value or not job.gpus:
        return None
    same_model = Job.gpu_model == job.gpu_model
    ahead_count, ahead_gpus = db.session.execute(
        select(func.count(Job.id), func.coalesce(func.sum(Job.gpus), 0))
        .where(Job.state == JobState.PENDING.value, same_model, Job.gpus > 0, Job.id < job.id)).one()
    waiting = db.session.execute(select(func.count(Job.id)).where(
        Job.state == JobState.PENDING.value, same_model, Job.gpus > 0)).scalar_one()
    nodes = select(func.coalesce(func.sum(Node.gpus - Node.gpus_requested), 0)).where(
        Node.ready.is_(True), Node.unschedulable.is_(False), Node.gpus > 0)
    if job.gpu_model:
        nodes = nodes.where(Node.gpu_model == job.gpu_model)
    free = max(0, int(db.session.execute(nodes).scalar_one()))
    needed = int(ahead_gpus) + job.gpus
    running = select(Job.started_at, Job.time_limit_seconds, Job.gpus).where(
        Job.state == JobState.RUNNING.value, Job.gpus > 0)
    if job.gpu_model:
        running = running.where(same_model)
    now = utcnow()
    ends = []
    unbounded = False
    for started, limit, gpus in db.session.execute(running):
        if not limit:
            unbounded = True
            continue
        ends.append((max(now, (started or now) + timedelta(seconds=limit)), gpus))
    estimate, available = None, free
    if available >= needed:
        estimate = now
    else:
        for end, gpus in sorted(ends):
            available += gpus
            if available >= needed:
                estimate = end
                break
    closed = under_maintenance().get(job.gpu_model)
    if closed is not None:
        reason = _("Every %(model)s node is under maintenance (%(reason)s); the job starts once one is back.",
                   model=job.gpu_model or _("GPU"), reason=closed or _("no reason given"))
        return Outlook(position=int(ahead_count) + 1, waiting=int(waiting), free_gpus=0, estimated_start=None,
                       reason=reason)
    if job.reason == Reason.UNSCHEDULABLE or free < job.gpus:
        reason = _("Waiting for %(gpus)s %(model)s GPU(s): %(free)s free now, %(ahead)s job(s) ahead asking for %(ahead_gpus)s.",
                   gpus=job.gpus, model=job.gpu_model or _("any model"), free=free, ahead=ahead_count, ahead_gpus=ahead_gpus)
    else:
        reason = _("GPUs are free; the cluster is starting the job.")
    if estimate is None and unbounded:
        reason += " " + _("Some running jobs have no time limit, so no start time can be promised.")
    return Outlook(position=int(ahead_count) + 1, waiting=int(waiting), free_gpus=free,
                   estimated_start=estimate, reason=reason)


def job_events(job_id: int, limit: int = 50) -> list[JobEvent]:
    return list(db.session.execute(select(JobEvent).where(JobEvent.job_id == job_id)
                                   .order_by(JobEvent.last_seen.desc(), JobEvent.id.desc()).limit(limit)).scalars())


# ---- home ----------------------------------------------------------------------------------

def active_jobs(actor: Actor, limit: int = 20) -> list:
    stmt = (select(*LIST_COLUMNS, Account.name.label("account")).join(Account, Account.id == Job.account_id)
            .where(Job.user_id == actor.user.id, Job.state.in_(OPEN_STATES), Job.hidden.is_(False))
            .order_by(Job.id.desc()).limit(limit))
    return list(db.session.execute(stmt).mappings())


def usage_by_account(account_ids: list[int]) -> dict[int, dict]:
    """What the active jobs of each account hold, and its GPUs per model: one grouped query for all."""
    if not account_ids:
        return {}
    rows = db.session.execute(
        select(Job.account_id, Job.gpu_model, func.coalesce(func.sum(Job.gpus), 0), func.coalesce(func.sum(Job.cpu_milli), 0),
               func.coalesce(func.sum(Job.memory_mib), 0), func.count(Job.id))
        .where(Job.account_id.in_(account_ids), Job.state.in_(ACTIVE_STATES)).group_by(Job.account_id, Job.gpu_model))
    result = {a: {"gpus": 0, "cpu": 0.0, "memory_gib": 0.0, "jobs": 0, "gpus_per_model": {}} for a in account_ids}
    for account_id, model, gpus, cpu, memory, count in rows:
        r = result[account_id]
        r["gpus"] += int(gpus)
        r["cpu"] += int(cpu) / 1000
        r["memory_gib"] += int(memory) / 1024
        r["jobs"] += int(count)
        if gpus and model:
            r["gpus_per_model"][model] = r["gpus_per_model"].get(model, 0) + int(gpus)
    return result


def gpu_models() -> list[str]:
    """The GPU models present on the cluster's nodes (for the submission forms)."""
    return list(db.session.execute(select(Node.gpu_model).where(Node.gpu_model != "", Node.gpus > 0)
                                   .group_by(Node.gpu_model).order_by(Node.gpu_model)).scalars())


def gpus_per_node_by_model() -> dict[str, int]:
    """The most GPUs one node has, per GPU model on the cluster's nodes (one query, read at most
    every CRATER_SHORT_CACHE_SECONDS per process: nodes come and go far more slowly)."""
    return short_cached("gpus-per-node", lambda: {model: int(most) for model, most in db.session.execute(
        select(Node.gpu_model, func.max(Node.gpus)).where(Node.gpus > 0).group_by(Node.gpu_model))})


def largest_nodes() -> dict[str, tuple[int, int]]:
    """The most CPU (milli) and memory (MiB) one node offers, per GPU model ("" : over every node,
    CPU-only ones included), from the node inventory; {} before the syncer has seen a node. Read
    at most every CRATER_SHORT_CACHE_SECONDS per process."""
    def compute():
        sizes = {model: (int(cpu or 0), int(memory or 0)) for model, cpu, memory in db.session.execute(
            select(Node.gpu_model, func.max(Node.cpu_milli), func.max(Node.memory_mib)).where(Node.gpus > 0)
            .group_by(Node.gpu_model)) if model}
        cpu, memory, count = db.session.execute(select(func.max(Node.cpu_milli), func.max(Node.memory_mib),
                                                       func.count(Node.name))).one()
        if count:
            sizes[""] = (int(cpu or 0), int(memory or 0))
        return sizes
    return short_cached("largest-nodes", compute)


def sync_age() -> int | None:
    """Seconds since the syncer last wrote its heartbeat (None: it never ran). The heartbeat is
    read at most every CRATER_SHORT_CACHE_SECONDS per process; the syncer beats every 5 s."""
    beat = short_cached("heartbeat", lambda: db.session.execute(
        select(SyncHeartbeat.beat_at).where(SyncHeartbeat.id == 1)).scalar_one_or_none())
    if beat is None:
        return None
    return max(0, int((utcnow() - beat).total_seconds()))
