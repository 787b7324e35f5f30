"""What the pages read of the queue: a queued job's standing (place, blocker, estimate), how
many jobs wait per account, the accounts whose queues one sees, and one account's queue in its
fair order with the usage that decides it. Reads only."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import func, literal, select

from ...extensions import db
from ...models import ACTIVE_STATES, Account, Job, Membership, MemberRole, Preemption, User
from ..accounts import is_manager
from ..context import Actor
from ..errors import Forbidden, NotFound
from ..pagination import paginate
from .plan import fair_order
from .state import QUEUED, QueueSettings, guarantee_of, in_ids, load


@dataclass(frozen=True)
class Standing:
    position: int | None
    waiting: int
    blocker: dict | None
    estimate: datetime | None
    reserved: bool


def standing(job: Job) -> Standing | None:
    """A queued job's place among its account's queued jobs, what it waits for, its estimate."""
    if job.state != QUEUED:
        return None
    waiting = db.session.execute(select(func.count(Job.id)).where(
        Job.account_id == job.account_id, Job.state == QUEUED)).scalar_one()
    return Standing(job.queue_position, int(waiting), job.queue_blocker, job.queue_estimate, job.queue_reserved_at is not None)


def last_preemption(job_id: int) -> Preemption | None:
    """The last time a job was preempted (its page says when, by whom and what it lost)."""
    return db.session.execute(select(Preemption).where(Preemption.job_id == job_id).order_by(Preemption.id.desc())
                              .limit(1)).scalar()


@dataclass(frozen=True)
class Sharing:
    """An account's GPUs as borrowing sees them: guaranteed (its quota; None: no guarantee set),
    used within the guarantee, borrowed beyond it, and lent (its idle guarantee that borrowers
    use now, the borrowed GPUs shared among lenders in proportion to what each can lend)."""
    guaranteed: int | None
    used: int
    borrowed: int
    lent: int


def sharing(account_ids: list[int] | None, settings: QueueSettings) -> dict[int, Sharing]:
    """Per account (None: every account with a guarantee or borrowed GPUs): three grouped queries."""
    rows = db.session.execute(select(Job.account_id, Job.borrowed, func.sum(Job.gpus)).where(
        Job.state.in_(ACTIVE_STATES), Job.gpus > 0).group_by(Job.account_id, Job.borrowed)).all()
    used: dict[int, int] = {}
    borrowed: dict[int, int] = {}
    for account_id, is_borrowed, gpus in rows:
        (borrowed if is_borrowed else used)[account_id] = int(gpus or 0)
    accounts = db.session.execute(select(Account.id, Account.name, Account.gpu_quota, Account.lend_limit)).all()
    guarantee = {a.id: guarantee_of(a.name, a.gpu_quota, settings) for a in accounts}
    lendable = {a.id: max(0, (guarantee[a.id] or 0) - used.get(a.id, 0) - (a.lend_limit or 0)) for a in accounts}
    total_lendable, total_borrowed = sum(lendable.values()), sum(borrowed.values())
    share = min(1.0, total_borrowed / total_lendable) if total_lendable else 0.0
    wanted = account_ids if account_ids is not None else [
        a.id for a in accounts if guarantee[a.id] or borrowed.get(a.id)]
    return {a: Sharing(guarantee.get(a), used.get(a, 0), borrowed.get(a, 0), round(lendable.get(a, 0) * share))
            for a in wanted if a in guarantee}


def sharing_table(settings: QueueSettings, limit: int = 50) -> tuple[list[tuple[str, Sharing]], int]:
    """The accounts with a guarantee or borrowed GPUs, the busiest first (at most `limit`), and
    how many there are: the nodes page's lending table."""
    shares = sharing(None, settings)
    names = dict(db.session.execute(select(Account.id, Account.name).where(in_ids(Account.id, list(shares)))).all()) \
        if shares else {}
    rows = sorted(((names.get(a, "?"), s) for a, s in shares.items()), key=lambda r: (-(r[1].used + r[1].borrowed), r[0]))
    return rows[:limit], len(rows)


def queued_counts(account_ids: list[int]) -> dict[int, int]:
    """How many jobs wait in each of these accounts' queues (absent: none): one grouped count."""
    if not account_ids:
        return {}
    return {a: int(n) for a, n in db.session.execute(select(Job.account_id, func.count(Job.id)).where(
        Job.state == QUEUED, in_ids(Job.account_id, account_ids)).group_by(Job.account_id)).all()}


def queue_accounts(actor: Actor, page: int = 1, per_page: int = 50, settings: QueueSettings | None = None):
    """A page of the accounts whose queues the actor sees listed (every account for admins, their
    own for members), each with its queue's length and whether the actor may open it (managers,
    admins): the page, and one grouped count for the page's accounts."""
    if actor.is_admin:
        stmt = select(Account.id, Account.name, literal(MemberRole.MANAGER.value).label("role")).order_by(Account.name)
    else:
        stmt = (select(Account.id, Account.name, Membership.role).join(Membership, Membership.account_id == Account.id)
                .where(Membership.user_id == actor.user.id).order_by(Account.name))
    result = paginate(stmt, page, per_page, rows="tuples")
    ids = [r[0] for r in result.items]
    counts = queued_counts(ids)
    shares = sharing(ids, settings or QueueSettings()) if ids else {}
    result.items = [{"id": i, "name": name, "manager": role == MemberRole.MANAGER.value, "queued": counts.get(i, 0),
                     "sharing": shares.get(i)} for i, name, role in result.items]
    return result


@dataclass
class QueuePage:
    account: Account
    rows: list[dict]  # per queued job in the queue's order: job, owner, blocker, estimate, score
    members: list[dict]  # per member with usage: username, GPU-hours now, held GPUs
    total: int
    page: int
    pages: int


def queue_page(actor: Actor, account_id: int, now: datetime, settings: QueueSettings, page: int = 1,
               per_page: int = 50) -> QueuePage:
    """One account's queue for its managers and admins: the order and the usage that decides it."""
    account = db.session.get(Account, account_id)
    if account is None:
        raise NotFound(_("No such account."))
    if not (actor.is_admin or (actor.user is not None and is_manager(actor.user, account_id))):
        raise Forbidden(_("Only the account's managers and administrators see its queue."))
    q = load([account_id], now, settings).get(account_id)
    order = fair_order(q.queued, q.scores, settings.penalty_seconds) if q else []
    total = len(order)
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    shown = order[(page - 1) * per_page:page * per_page]
    jobs = {j.id: j for j in db.session.execute(select(Job.id, Job.display_name, Job.job_type, Job.gpus, Job.gpu_model,
                                                       Job.created_at, Job.queue_blocker, Job.queue_estimate,
                                                       Job.queue_reserved_at, Job.user_id).where(
        in_ids(Job.id, [d.id for d in shown]))).mappings()} if shown else {}
    users = {u.id: u.username for u in db.session.execute(select(User.id, User.username).where(
        in_ids(User.id, {d.user_id for d in order} | set(q.scores if q else {}) | {d.user_id for d in (q.holding if q else [])})))} \
        if q else {}
    rows = []
    for i, d in enumerate(shown, (page - 1) * per_page + 1):
        j = jobs.get(d.id)
        if j is not None:
            rows.append({"position": i, "job": j, "owner": users.get(d.user_id, "?"),
                         "score_hours": (q.scores.get(d.user_id, 0.0)) / 3600})
    held: dict[int, int] = {}
    for d in q.holding if q else []:
        held[d.user_id] = held.get(d.user_id, 0) + d.gpus
    members = sorted(({"username": users.get(u, "?"), "hours": (q.scores.get(u, 0.0)) / 3600, "held": held.get(u, 0),
                       "queued": sum(1 for d in order if d.user_id == u)}
                      for u in set(q.scores) | set(held) | {d.user_id for d in order}), key=lambda m: (m["hours"], m["username"])) if q else []
    return QueuePage(account, rows, members, total, page, pages)

