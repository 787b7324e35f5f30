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
from ..models import FINAL_STATES, Account, Job, JobState, Preemption, UsageDay, UsageModelDay, UsageRollup, User
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


FIGURES = ("gpu_seconds", "used_gpu_seconds", "idle_gpu_seconds", "measured_gpu_seconds", "cpu_seconds",
           "memory_gib_seconds", "borrowed_gpu_seconds", "jobs_started")


def record_usage(job_id: int, summary: Summary | None, now: datetime, final: bool) -> None:
    """Write a job's GPU summary and its usage rows (replacing what an earlier pass wrote), and
    move the rollups the reports read by the difference. Without a summary (no metrics), only the
    allocation is known."""
    job = db.session.get(Job, job_id)
    if job is None or (job.started_at is None and not job.preemptions):
        return
    overlaps: dict = {}
    for start, stop in _runs(job, now):  # a preempted job's earlier runs count too
        for day, seconds in day_overlaps(start, max(stop, start)).items():
            overlaps[day] = overlaps.get(day, 0.0) + seconds
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
                         cpu_seconds=job.cpu_milli / 1000 * seconds, memory_gib_seconds=job.memory_mib / 1024 * seconds,
                         borrowed_gpu_seconds=allocated if job.borrowed else 0.0))
    before = [dict(r._mapping) for r in db.session.execute(select(UsageDay).where(UsageDay.job_id == job.id)
                                                           .with_only_columns(*UsageDay.__table__.columns))]
    db.session.execute(delete(UsageDay).where(UsageDay.job_id == job.id))
    if rows:
        db.session.execute(insert(UsageDay), rows)
    _move_rollups(before, rows)
    job_values = dict(gpu_seconds=totals[0], usage_at=now,
                      usage_state=(FINAL if metrics else NO_METRICS) if final else PARTIAL)
    if metrics:
        job_values.update(gpu_util_mean=summary.util_mean, gpu_util_peak=summary.util_peak,
                          gpu_memory_peak_mib=summary.memory_peak_mib, gpu_seconds_used=totals[1], gpu_seconds_idle=totals[2])
    # A Core update: the job page's version is not bumped by a usage refresh (nothing it polls).
    db.session.execute(update(Job).where(Job.id == job.id).values(**job_values))
    db.session.commit()


def _runs(job: Job, now: datetime) -> list[tuple[datetime, datetime]]:
    """When a job held its GPUs: each run a preemption ended (from the preemption log), and the
    current one. A borrowed job counts as borrowed for all of them (its class when the usage pass
    looks: a job reclassified within its guarantee counts as in-quota)."""
    runs = []
    if job.preemptions:
        runs = [(at - timedelta(seconds=ran), at) for at, ran in db.session.execute(
            select(Preemption.at, Preemption.ran_seconds).where(Preemption.job_id == job.id)) if ran]
    if job.started_at is not None:
        end = job.finished_at if job.state in FINAL_STATES and job.finished_at else now
        runs.append((job.started_at, end))
    return runs


def figures_of(rows: list[dict], into: dict | None = None) -> dict[tuple, list[float]]:
    """Per rollup key, what these usage rows add: {("user", day, user, account): [...], ("model",
    day, model): [...]}, the figures in FIGURES' order (a job counts as started on its first day)."""
    out: dict[tuple, list[float]] = {} if into is None else into
    first: dict[int, date] = {}
    for r in rows:
        first[r["job_id"]] = min(first.get(r["job_id"], r["day"]), r["day"])
    for r in rows:
        figures = [r["gpu_seconds"], r["used_gpu_seconds"] or 0.0, r["idle_gpu_seconds"] or 0.0,
                   r["measured_gpu_seconds"] or 0.0, r["cpu_seconds"], r["memory_gib_seconds"],
                   r.get("borrowed_gpu_seconds") or 0.0, 1 if r["day"] == first[r["job_id"]] else 0]
        for key in (("user", r["day"], r["user_id"], r["account_id"]), ("model", r["day"], r["gpu_model"] or "")):
            total = out.setdefault(key, [0.0] * len(FIGURES))
            for i, v in enumerate(figures):
                total[i] += v
    return out


def _move_rollups(before: list[dict], after: list[dict]) -> None:
    """Add (after - before) to the rollups, creating rows as needed (the usage pass is the one writer)."""
    old, new = figures_of(before), figures_of(after)
    for key in sorted(set(old) | set(new), key=str):
        delta = [n - o for n, o in zip(new.get(key, [0.0] * len(FIGURES)), old.get(key, [0.0] * len(FIGURES)))]
        if not any(delta):
            continue
        if key[0] == "user":
            model, where = UsageRollup, dict(day=key[1], user_id=key[2], account_id=key[3])
        else:
            model, where = UsageModelDay, dict(day=key[1], gpu_model=key[2])
        column = model.__table__.c
        changed = db.session.execute(update(model).where(*(column[k] == v for k, v in where.items())).values(
            **{f: column[f] + d for f, d in zip(FIGURES, delta)}))
        if changed.rowcount == 0:
            db.session.execute(insert(model).values(**where, **{f: max(0, d) if f == "jobs_started" else d
                                                                 for f, d in zip(FIGURES, delta)}))


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


def _where(actor: Actor, scope: Scope, period: Period, table=UsageRollup):
    conditions = [table.day >= period.start, table.day <= period.end]
    if scope.kind == "mine":
        conditions.append(table.user_id == actor.user.id)
    elif scope.account_ids:
        conditions.append(table.account_id.in_(scope.account_ids))
    return conditions


def _sums(table=UsageRollup):
    return tuple(func.coalesce(func.sum(getattr(table, f)), 0).label(f) for f in FIGURES)


def _hours(figures, extra: dict) -> dict:
    """Seconds to hours; used and wasted are None where nothing was measured (no metrics)."""
    get = (lambda f: float(figures.get(f) or 0)) if isinstance(figures, dict) else (lambda f: float(getattr(figures, f) or 0))
    gpu, measured = get("gpu_seconds"), get("measured_gpu_seconds")
    known = measured > 0
    return dict(extra, jobs=int(get("jobs_started")), gpu_hours=gpu / HOUR,
                used_hours=get("used_gpu_seconds") / HOUR if known else None,
                wasted_hours=get("idle_gpu_seconds") / HOUR if known else None,
                cpu_hours=get("cpu_seconds") / HOUR, memory_gib_hours=get("memory_gib_seconds") / HOUR,
                borrowed_hours=get("borrowed_gpu_seconds") / HOUR, lost_hours=float(extra.get("lost_seconds") or 0) / HOUR,
                measured=(measured / gpu) if gpu else None)


def _add(into: dict, row) -> None:
    for f in FIGURES:
        into[f] = into.get(f, 0) + float(getattr(row, f) or 0)


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
    """Totals, per user (a page of them, most GPU-hours first), per account, per GPU model (admins
    looking at everyone) and per day, from the rollups: one grouped query per user and account
    (the rest is added up here), one per day, one per model."""
    where = _where(actor, scope, period)
    users: dict[int, dict] = {}
    accounts_: dict[int, dict] = {}
    totals: dict = {}
    for row in db.session.execute(select(UsageRollup.user_id, UsageRollup.account_id, *_sums()).where(*where)
                                  .group_by(UsageRollup.user_id, UsageRollup.account_id)):
        _add(users.setdefault(row.user_id, {}), row)
        _add(accounts_.setdefault(row.account_id, {}), row)
        _add(totals, row)
    ranked = sorted(users.items(), key=lambda kv: (-kv[1].get("gpu_seconds", 0), kv[0]))
    offset = (max(1, page) - 1) * per_page
    shown = ranked[offset:offset + per_page]
    names = dict(db.session.execute(select(User.id, User.username).where(
        User.id.in_([u for u, _f in shown]))).all()) if shown else {}
    lost_users = _lost(actor, scope, period, "user", key="id")
    lost_accounts = _lost(actor, scope, period, "account", key="id")
    by_user = Page([_hours(f, {"user_id": u, "name": names.get(u, f"#{u}"), "lost_seconds": lost_users.get(u, 0)})
                    for u, f in shown], max(1, page), per_page, len(ranked))
    account_names = dict(db.session.execute(select(Account.id, Account.name).where(
        Account.id.in_(list(accounts_)))).all()) if accounts_ else {}
    by_account = [_hours(f, {"account_id": a, "name": account_names.get(a, f"#{a}"), "lost_seconds": lost_accounts.get(a, 0)})
                  for a, f in sorted(accounts_.items(), key=lambda kv: -kv[1].get("gpu_seconds", 0))]
    everyone = scope.kind == "all" and not scope.account_ids
    by_model = []
    if actor.is_admin and everyone:
        by_model = [_hours(r, {"name": r.gpu_model or _("no GPU model")}) for r in db.session.execute(
            select(UsageModelDay.gpu_model, *_sums(UsageModelDay)).where(
                UsageModelDay.day >= period.start, UsageModelDay.day <= period.end)
            .group_by(UsageModelDay.gpu_model).order_by(func.sum(UsageModelDay.gpu_seconds).desc()))]
    if everyone:  # the cluster's days: from the few rows per model and day
        day_rows = db.session.execute(select(UsageModelDay.day, *_sums(UsageModelDay)).where(
            UsageModelDay.day >= period.start, UsageModelDay.day <= period.end).group_by(UsageModelDay.day))
    else:
        day_rows = db.session.execute(select(UsageRollup.day, *_sums()).where(*where).group_by(UsageRollup.day))
    per_day = {r.day: r for r in day_rows}
    daily = []
    for i in range(period.days):
        day = period.start + timedelta(days=i)
        row = per_day.get(day)
        daily.append(_hours(row, {"day": day}) if row is not None else _hours({}, {"day": day}))
    return Report(period, scope, _hours(totals, {"lost_seconds": sum(lost_accounts.values())}), by_user, by_account,
                  by_model, daily)


def daily_chart(rep: Report) -> dict:
    """The daily figures in the charts' shape (x: seconds at each day's start, UTC)."""
    from ..metrics import epoch
    xs = [epoch(datetime.combine(d["day"], datetime.min.time())) for d in rep.daily]
    return {"x": xs, "unit": "h", "kind": "bars", "series": [
        {"label": _("allocated"), "values": [round(d["gpu_hours"], 2) for d in rep.daily]},
        {"label": _("used"), "values": [None if d["used_hours"] is None else round(d["used_hours"], 2) for d in rep.daily]},
        {"label": _("wasted"), "values": [None if d["wasted_hours"] is None else round(d["wasted_hours"], 2) for d in rep.daily]}]}


CSV_GROUPS = ("user", "account", "model", "job")
JOB_WINDOW = 5000


def csv_lines(actor: Actor, scope: Scope, period: Period, group: str):
    """The report as CSV, one line at a time: per user, account or GPU model from the rollups; per
    job from the usage rows, streamed from the database as they come."""
    head = ["period_start", "period_end", group, "jobs_started", "gpu_hours", "used_gpu_hours", "wasted_gpu_hours",
            "cpu_core_hours", "memory_gib_hours", "borrowed_gpu_hours", "gpu_hours_lost_to_preemption"]
    if group == "job":
        head[2:3] = ["job", "name", "user", "account", "gpu_model", "started_at", "finished_at"]
    yield "\ufeff" + _csv_row(head)  # a byte-order mark: spreadsheet programs on Chinese Windows then read UTF-8
    if group == "job":
        yield from _job_lines(actor, scope, period)
        return
    if group == "model":
        stmt = (select(UsageModelDay.gpu_model.label("key"), *_sums(UsageModelDay))
                .where(UsageModelDay.day >= period.start, UsageModelDay.day <= period.end)
                .group_by(UsageModelDay.gpu_model).order_by(UsageModelDay.gpu_model))
    else:
        model, id_col, name_col, key = ((User, User.id, User.username, UsageRollup.user_id) if group == "user"
                                        else (Account, Account.id, Account.name, UsageRollup.account_id))
        stmt = (select(name_col.label("key"), *_sums()).join(model, id_col == key).where(*_where(actor, scope, period))
                .group_by(name_col).order_by(name_col))
    lost = {} if group == "model" else _lost(actor, scope, period, group)
    for r in db.session.execute(stmt):
        yield _csv_row([period.start, period.end, r.key, *_figures(_hours(r, {"lost_seconds": lost.get(r.key, 0)}))])


def _lost(actor: Actor, scope: Scope, period: Period, group: str, key: str = "name") -> dict:
    """GPU-seconds lost to preemption in the period (by the day of the preemption), per user or
    account (by name, or by id with `key="id"`): one grouped query over the preemption log."""
    start = datetime.combine(period.start, datetime.min.time())
    end = datetime.combine(period.end + timedelta(days=1), datetime.min.time())
    where = [Preemption.at >= start, Preemption.at < end]
    if scope.kind == "mine":
        where.append(Preemption.user_id == actor.user.id)
    elif scope.account_ids:
        where.append(Job.account_id.in_(scope.account_ids))
    owner, on = (User, User.id == Preemption.user_id) if group == "user" else (Account, Account.id == Job.account_id)
    column = owner.id if key == "id" else (User.username if group == "user" else Account.name)
    stmt = select(column, func.sum(Preemption.gpu_seconds_lost)).select_from(Preemption) \
        .join(Job, Job.id == Preemption.job_id).join(owner, on)
    return {k: float(v or 0) for k, v in db.session.execute(stmt.where(*where).group_by(column)).all()}


def _job_lines(actor: Actor, scope: Scope, period: Period):
    """Per job: its usage rows in the period, read in windows of job ids (each a short range query
    on the primary key; no transaction stays open while the client reads)."""
    where = _where(actor, scope, period, UsageDay)
    first, last = db.session.execute(select(func.min(UsageDay.job_id), func.max(UsageDay.job_id))).one()
    after, last = (first or 1) - 1, last or 0
    while after < last:
        # a window of job ids: each query is a range of the primary key (job_id, day)
        window = (UsageDay.job_id > after, UsageDay.job_id <= after + JOB_WINDOW)
        after += JOB_WINDOW
        sums = (func.count(UsageDay.job_id).label("days"),) + tuple(
            func.sum(getattr(UsageDay, f)).label(f) for f in FIGURES[:-1])
        rows = db.session.execute(
            select(UsageDay.job_id, Job.display_name, User.username, Account.name.label("account"), Job.gpu_model,
                   Job.started_at, Job.finished_at, *sums)
            .join(Job, Job.id == UsageDay.job_id).join(User, User.id == Job.user_id).join(Account, Account.id == Job.account_id)
            .where(*where, *window)
            .group_by(UsageDay.job_id, Job.display_name, User.username, Account.name, Job.gpu_model, Job.started_at,
                      Job.finished_at)
            .order_by(UsageDay.job_id)).all()
        db.session.commit()
        out = io.StringIO()
        writer = csv.writer(out)
        for r in rows:
            figures = {f: getattr(r, f) for f in FIGURES[:-1]}
            figures["jobs_started"] = 1 if r.started_at and period.start <= r.started_at.date() <= period.end else 0
            writer.writerow([_safe_cell(v) for v in (period.start, period.end, r.job_id, r.display_name, r.username,
                                                     r.account, r.gpu_model, r.started_at, r.finished_at,
                                                     *_figures(_hours(figures, {})))])
        if rows:
            yield out.getvalue()


def _figures(h: dict) -> list:
    def fmt(v):
        return "" if v is None else f"{v:.3f}"
    return [h["jobs"], fmt(h["gpu_hours"]), fmt(h["used_hours"]), fmt(h["wasted_hours"]), fmt(h["cpu_hours"]),
            fmt(h["memory_gib_hours"]), fmt(h["borrowed_hours"]), fmt(h["lost_hours"])]


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
