"""Usage: GPU summaries of jobs and usage per job and day, written by the syncer's usage pass, and
the usage reports over them (users see their own, managers their accounts', admins everything).

A job's allocation comes from its times and requests (exact); its use from its GPUs' utilisation
samples, where Prometheus has them: used GPU-seconds = sum of utilisation x sample interval,
wasted (idle) GPU-seconds = sample interval x samples at or below the idle threshold. Rows are
per UTC day, so a report over a run of days counts exactly the part of each job inside it."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import and_, delete, func, insert, or_, select, update

from ..extensions import db
from ..metrics import Summary, day_overlaps
from ..models import FINAL_STATES, Account, Job, JobState, UsageDay, User
from .context import Actor
from .errors import Forbidden, ValidationFailed
from .pagination import Page

# usage_state of a job
NONE, PARTIAL, FINAL, NO_METRICS = "", "partial", "final", "no-metrics"
MAX_DAYS = 366
HOUR = 3600.0


# ---- the syncer's side ------------------------------------------------------------------------

@dataclass(frozen=True)
class DueJob:
    id: int
    state: str
    gpus: int
    pods: list
    started_at: datetime | None
    finished_at: datetime | None
    usage_state: str


def close_unstarted(now: datetime) -> int:
    """Ended jobs that never ran hold nothing: their usage is final at once (one update)."""
    result = db.session.execute(update(Job).where(Job.usage_state == NONE, Job.state.in_(FINAL_STATES),
                                                  Job.started_at.is_(None))
                                .values(usage_state=FINAL, usage_at=now, gpu_seconds=0.0))
    db.session.commit()
    return result.rowcount


def due_jobs(now: datetime, refresh_seconds: float, retry_seconds: float, limit: int) -> list[DueJob]:
    """Jobs whose usage is to be written: ended ones not yet final (oldest first), then running
    ones not refreshed for `refresh_seconds`."""
    columns = (Job.id, Job.state, Job.gpus, Job.pods, Job.started_at, Job.finished_at, Job.usage_state)
    ended = db.session.execute(select(*columns).where(
        Job.state.in_(FINAL_STATES), Job.started_at.is_not(None),
        or_(Job.usage_state == NONE,
            # written while it ran (due at once), or without metrics that may come (retried)
            and_(Job.usage_state == PARTIAL, or_(Job.usage_at <= Job.finished_at,
                                                 Job.usage_at < now - timedelta(seconds=retry_seconds)))))
        .order_by(Job.id).limit(limit)).all()
    running = []
    if len(ended) < limit:
        running = db.session.execute(select(*columns).where(
            Job.state == JobState.RUNNING.value, Job.started_at.is_not(None),
            or_(Job.usage_at.is_(None), Job.usage_at < now - timedelta(seconds=refresh_seconds)))
            .order_by(Job.usage_at.is_not(None), Job.usage_at, Job.id).limit(limit - len(ended))).all()
    db.session.commit()
    return [DueJob(*row) for row in list(ended) + list(running)]


def record_usage(job_id: int, summary: Summary | None, now: datetime, final: bool) -> None:
    """Write a job's GPU summary and its usage rows (replacing what an earlier pass wrote). Without
    a summary (no metrics), only the allocation is known."""
    job = db.session.get(Job, job_id)
    if job is None or job.started_at is None:
        return
    end = job.finished_at if job.state in FINAL_STATES and job.finished_at else now
    overlaps = day_overlaps(job.started_at, max(end, job.started_at))
    metrics = summary is not None and summary.has_metrics
    rows = []
    totals = [0.0, 0.0, 0.0]
    for day, seconds in sorted(overlaps.items()):
        allocated = job.gpus * seconds
        used = min(allocated, summary.used_by_day.get(day, 0.0)) if metrics else None
        idle = min(allocated, summary.idle_by_day.get(day, 0.0)) if metrics else None
        measured = min(allocated, summary.measured_by_day.get(day, 0.0)) if metrics else None
        totals[0] += allocated
        totals[1] += used or 0.0
        totals[2] += idle or 0.0
        rows.append(dict(job_id=job.id, day=day, user_id=job.user_id, account_id=job.account_id, gpu_model=job.gpu_model,
                         gpu_seconds=allocated, used_gpu_seconds=used, idle_gpu_seconds=idle, measured_gpu_seconds=measured,
                         cpu_seconds=job.cpu_milli / 1000 * seconds, memory_gib_seconds=job.memory_mib / 1024 * seconds))
    db.session.execute(delete(UsageDay).where(UsageDay.job_id == job.id))
    if rows:
        db.session.execute(insert(UsageDay), rows)
    job_values = dict(gpu_seconds=totals[0], usage_at=now,
                      usage_state=(FINAL if metrics else NO_METRICS) if final else PARTIAL)
    if metrics:
        job_values.update(gpu_util_mean=summary.util_mean, gpu_util_peak=summary.util_peak,
                          gpu_memory_peak_mib=summary.memory_peak_mib, gpu_seconds_used=totals[1], gpu_seconds_idle=totals[2])
    # A Core update: the job page's version is not bumped by a usage refresh (nothing it polls).
    db.session.execute(update(Job).where(Job.id == job.id).values(**job_values))
    db.session.commit()


# ---- reports -----------------------------------------------------------------------------------

SCOPES = ("mine", "account", "all")


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # inclusive

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def parse_period(start: str, end: str, today: date) -> Period:
    """YYYY-MM-DD to YYYY-MM-DD (inclusive, UTC days); the last 30 days by default."""
    errors = {}
    try:
        last = date.fromisoformat(end) if end else today
    except ValueError:
        errors["end"], last = _("Not a date (YYYY-MM-DD)."), today
    try:
        first = date.fromisoformat(start) if start else last - timedelta(days=29)
    except ValueError:
        errors["start"], first = _("Not a date (YYYY-MM-DD)."), last - timedelta(days=29)
    if not errors and first > last:
        errors["start"] = _("The period starts after it ends.")
    if not errors and (last - first).days + 1 > MAX_DAYS:
        errors["start"] = _("A report covers at most %(n)s days.", n=MAX_DAYS)
    if errors:
        raise ValidationFailed(errors, _("Choose a valid period."))
    return Period(first, last)


@dataclass(frozen=True)
class Scope:
    kind: str  # mine | account | all
    account_ids: tuple[int, ...] = ()  # for "account": the accounts shown


def resolve_scope(actor: Actor, kind: str, account_id: int | None) -> Scope:
    """What the actor may see: their own usage; a manager also the accounts they manage (one, or
    all of them); an admin everything."""
    from . import job_queries
    if kind == "all":
        if not actor.is_admin:
            raise Forbidden(_("Only administrators see everyone's usage."))
        return Scope("all", (account_id,) if account_id else ())
    if kind == "account":
        managed = set(job_queries.managed_account_ids(actor)) if not actor.is_admin else None
        if account_id:
            if managed is not None and account_id not in managed:
                raise Forbidden(_("You do not manage this account."))
            return Scope("account", (account_id,))
        if managed is None:
            return Scope("all")
        if not managed:
            raise Forbidden(_("You manage no account."))
        return Scope("account", tuple(sorted(managed)))
    return Scope("mine")


def _where(actor: Actor, scope: Scope, period: Period):
    conditions = [UsageDay.day >= period.start, UsageDay.day <= period.end]
    if scope.kind == "mine":
        conditions.append(UsageDay.user_id == actor.user.id)
    elif scope.account_ids:
        conditions.append(UsageDay.account_id.in_(scope.account_ids))
    return conditions


def _sums():
    measured = func.coalesce(UsageDay.measured_gpu_seconds, 0.0)
    return (func.count(func.distinct(UsageDay.job_id)).label("jobs"), func.sum(UsageDay.gpu_seconds).label("gpu"),
            func.sum(UsageDay.used_gpu_seconds).label("used"), func.sum(UsageDay.idle_gpu_seconds).label("wasted"),
            func.sum(UsageDay.cpu_seconds).label("cpu"), func.sum(UsageDay.memory_gib_seconds).label("memory"),
            func.sum(measured).label("measured"))


def _hours(row, extra: dict) -> dict:
    gpu = float(row.gpu or 0)
    return dict(extra, jobs=int(row.jobs or 0), gpu_hours=gpu / HOUR,
                used_hours=None if row.used is None else float(row.used) / HOUR,
                wasted_hours=None if row.wasted is None else float(row.wasted) / HOUR,
                cpu_hours=float(row.cpu or 0) / HOUR, memory_gib_hours=float(row.memory or 0) / HOUR,
                measured=(float(row.measured or 0) / gpu) if gpu else None)


@dataclass
class Report:
    period: Period
    scope: Scope
    totals: dict
    by_user: Page
    by_account: list[dict]
    by_model: list[dict]
    daily: list[dict]


def report(actor: Actor, scope: Scope, period: Period, page: int, per_page: int) -> Report:
    """Totals, per user (a page of them, most GPU-hours first), per account, per GPU model (admins),
    and per day: five grouped queries over the period's usage rows."""
    where = _where(actor, scope, period)
    totals = _hours(db.session.execute(select(*_sums()).where(*where)).one(), {})
    offset = (max(1, page) - 1) * per_page
    user_rows = db.session.execute(select(UsageDay.user_id, *_sums()).where(*where).group_by(UsageDay.user_id)
                                   .order_by(func.sum(UsageDay.gpu_seconds).desc(), UsageDay.user_id)
                                   .limit(per_page + 1).offset(offset)).all()
    more = len(user_rows) > per_page
    user_rows = user_rows[:per_page]
    names = dict(db.session.execute(select(User.id, User.username).where(
        User.id.in_([r.user_id for r in user_rows]))).all()) if user_rows else {}
    by_user = Page([_hours(r, {"user_id": r.user_id, "name": names.get(r.user_id, f"#{r.user_id}")}) for r in user_rows],
                   max(1, page), per_page, offset + len(user_rows) + (1 if more else 0), exact=not more)
    account_rows = db.session.execute(select(UsageDay.account_id, *_sums()).where(*where).group_by(UsageDay.account_id)
                                      .order_by(func.sum(UsageDay.gpu_seconds).desc())).all()
    accounts_named = dict(db.session.execute(select(Account.id, Account.name).where(
        Account.id.in_([r.account_id for r in account_rows]))).all()) if account_rows else {}
    by_account = [_hours(r, {"account_id": r.account_id, "name": accounts_named.get(r.account_id, f"#{r.account_id}")})
                  for r in account_rows]
    by_model = []
    if actor.is_admin:
        by_model = [_hours(r, {"name": r.gpu_model or _("no GPU model")}) for r in db.session.execute(
            select(UsageDay.gpu_model, *_sums()).where(*where).group_by(UsageDay.gpu_model)
            .order_by(func.sum(UsageDay.gpu_seconds).desc())).all()]
    per_day = {r.day: r for r in db.session.execute(
        select(UsageDay.day, *_sums()).where(*where).group_by(UsageDay.day)).all()}
    daily = []
    for i in range(period.days):
        day = period.start + timedelta(days=i)
        row = per_day.get(day)
        daily.append(_hours(row, {"day": day}) if row else {"day": day, "jobs": 0, "gpu_hours": 0.0, "used_hours": None,
                                                              "wasted_hours": None})
    return Report(period, scope, totals, by_user, by_account, by_model, daily)


def daily_chart(rep: Report) -> dict:
    """The daily figures in the charts' shape (x: seconds at each day's start, UTC)."""
    from ..metrics import epoch
    xs = [epoch(datetime.combine(d["day"], datetime.min.time())) for d in rep.daily]
    return {"x": xs, "unit": "h", "kind": "bars", "series": [
        {"label": _("allocated"), "values": [round(d["gpu_hours"], 2) for d in rep.daily]},
        {"label": _("used"), "values": [None if d["used_hours"] is None else round(d["used_hours"], 2) for d in rep.daily]},
        {"label": _("wasted"), "values": [None if d["wasted_hours"] is None else round(d["wasted_hours"], 2) for d in rep.daily]}]}


CSV_GROUPS = ("user", "account", "model", "job")


def csv_lines(actor: Actor, scope: Scope, period: Period, group: str):
    """The report as CSV, one line at a time (rows streamed from the database)."""
    where = _where(actor, scope, period)
    head = ["period_start", "period_end", group, "jobs", "gpu_hours", "used_gpu_hours", "wasted_gpu_hours",
            "cpu_core_hours", "memory_gib_hours"]
    if group == "user":
        key, names = UsageDay.user_id, (User, User.id, User.username)
    elif group == "account":
        key, names = UsageDay.account_id, (Account, Account.id, Account.name)
    elif group == "model":
        key, names = UsageDay.gpu_model, None
    else:
        key, names = UsageDay.job_id, None
        head[2:3] = ["job", "name", "user", "account", "gpu_model"]
    yield _csv_row(head)
    if group == "job":
        stmt = (select(UsageDay.job_id, Job.display_name, User.username, Account.name.label("account"), Job.gpu_model,
                       *_sums()).join(Job, Job.id == UsageDay.job_id).join(User, User.id == UsageDay.user_id)
                .join(Account, Account.id == UsageDay.account_id).where(*where)
                .group_by(UsageDay.job_id, Job.display_name, User.username, Account.name, Job.gpu_model)
                .order_by(UsageDay.job_id))
        for r in db.session.execute(stmt.execution_options(stream_results=True, yield_per=1000)):
            h = _hours(r, {})
            yield _csv_row([period.start, period.end, r.job_id, r.display_name, r.username, r.account, r.gpu_model,
                            *_figures(h)])
        return
    stmt = select(key.label("key"), *_sums()).where(*where).group_by(key).order_by(key)
    if names is not None:
        model, id_col, name_col = names
        stmt = (select(name_col.label("key"), *_sums()).join(model, id_col == key).where(*where)
                .group_by(name_col).order_by(name_col))
    for r in db.session.execute(stmt.execution_options(stream_results=True, yield_per=1000)):
        yield _csv_row([period.start, period.end, r.key, *_figures(_hours(r, {}))])


def _figures(h: dict) -> list:
    def fmt(v):
        return "" if v is None else f"{v:.3f}"
    return [h["jobs"], fmt(h["gpu_hours"]), fmt(h["used_hours"]), fmt(h["wasted_hours"]), fmt(h["cpu_hours"]),
            fmt(h["memory_gib_hours"])]


def _csv_row(values) -> str:
    out = io.StringIO()
    csv.writer(out).writerow([_safe_cell(v) for v in values])
    return out.getvalue()


def _safe_cell(value):
    """No spreadsheet formula injection from names users chose."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
