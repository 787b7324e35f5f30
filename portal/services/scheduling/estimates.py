"""Estimated starts: predicted run times from the members' past jobs (`RunTimes`, which also learns
how early its own estimates tend to be), the queue's rules replayed at each predicted end
(`plan.estimate`), and the estimates written where they moved. Touches the DB only."""
from __future__ import annotations

import statistics
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import select

from ...extensions import db
from ...models import FINAL_STATES, Job, JobWarning
from .plan import Demand, estimate, fair_order
from .state import QUEUED, AccountQueue, QueueSettings, in_ids, load, write_queued

ESTIMATE_SLACK = 60.0  # an estimate moves on the page only by more than this (or 10 % of the wait)
HISTORY_DAYS = 30
HISTORY_JOBS = 5000
WAIT_SAMPLES = 20  # admitted jobs needed before estimates correct their own bias
WAIT_SAMPLE_MIN = 60  # seconds: shorter predicted waits say little about the bias


class RunTimes:
    """Predicted run times from the last HISTORY_DAYS of ended jobs: the median run time of the
    member's jobs of that type, else of everyone's of that type, never beyond the time limit;
    without any history, the time limit itself."""

    def __init__(self, now: datetime):
        rows = db.session.execute(select(Job.user_id, Job.job_type, Job.started_at, Job.finished_at).where(
            Job.state.in_(FINAL_STATES), Job.finished_at > now - timedelta(days=HISTORY_DAYS),
            Job.started_at.is_not(None)).order_by(Job.finished_at.desc()).limit(HISTORY_JOBS))
        mine: dict[tuple, list] = {}
        everyone: dict[str, list] = {}
        for user_id, job_type, started, finished in rows:
            seconds = (finished - started).total_seconds()
            if seconds > 0:
                mine.setdefault((user_id, job_type), []).append(seconds)
                everyone.setdefault(job_type, []).append(seconds)
        self.mine = {k: statistics.median(v) for k, v in mine.items()}
        self.everyone = {k: statistics.median(v) for k, v in everyone.items()}
        # How the actual waits of the last day's admitted jobs compared with what their first
        # estimates said (later arrivals of members with less recent use go ahead, so raw
        # estimates lean early): the median ratio, within [1/3, 3], once there are enough.
        ratios = [(started - created).total_seconds() / first for created, started, first in db.session.execute(
            select(Job.created_at, Job.started_at, Job.queue_first_wait).where(
                Job.admitted_at > now - timedelta(days=1), Job.admitted_at <= now, Job.started_at.is_not(None),
                Job.queue_first_wait >= WAIT_SAMPLE_MIN).order_by(Job.admitted_at.desc()).limit(HISTORY_JOBS))]
        self.wait_ratio = min(3.0, max(1 / 3, statistics.median(ratios))) if len(ratios) >= WAIT_SAMPLES else 1.0

    def predict(self, d: Demand, job_type: str) -> float | None:
        guess = self.mine.get((d.user_id, job_type), self.everyone.get(job_type))
        if guess is None:
            return float(d.time_limit) if d.time_limit else None
        return min(guess, d.time_limit) if d.time_limit else guess


def estimate_starts(q: AccountQueue, now: datetime, settings: QueueSettings, runs: RunTimes,
                    idle_stops: dict[int, datetime]) -> dict[int, datetime | None]:
    """Predicted start of each of the account's queued jobs: admitted jobs end when their members'
    jobs usually end (or when the idle-GPU policy stops them, or at their time limit), and the
    queue's rules are replayed at each of those ends."""
    holding = []
    for d in q.holding:
        run = runs.predict(d, q.types.get(d.id, ""))
        deadline = (d.started or now) + timedelta(seconds=d.time_limit) if d.time_limit else None
        end = (d.started or now) + timedelta(seconds=run) if run is not None else None
        if end is not None and end < now + timedelta(seconds=ESTIMATE_SLACK):  # overdue: soon, not never
            end = now + timedelta(seconds=max(ESTIMATE_SLACK, 0.1 * run))
        if deadline is not None:
            end = min(end or deadline, max(deadline, now))
        if d.id in idle_stops:
            end = min(end or idle_stops[d.id], max(idle_stops[d.id], now))
        holding.append(replace(d, end=end))
    order = fair_order(q.queued, q.scores, settings.penalty_seconds)
    return estimate(q.limits, q.used, holding, order, now, lambda d: runs.predict(d, q.types.get(d.id, "")))


def idle_stops(job_ids) -> dict[int, datetime]:
    if not job_ids:
        return {}
    return dict(db.session.execute(select(JobWarning.job_id, JobWarning.act_at).where(
        in_ids(JobWarning.job_id, job_ids), JobWarning.kind == "idle_gpu", JobWarning.act_at.is_not(None))).all())


def write_estimates(starts: dict[int, datetime | None], shown: dict[int, tuple], now: datetime,
                    ratio: float = 1.0) -> int:
    """Write the estimates (raw starts stretched by the learned `ratio`) that moved by more than
    ESTIMATE_SLACK or 10 % of the wait; a job's first estimate also keeps its raw wait. `shown`:
    job -> (estimate shown, raw first wait, submitted). The caller commits."""
    changes, firsts = [], []
    for job_id, raw in starts.items():
        old, first_wait, submitted = shown.get(job_id, (None, None, now))
        start = now + (raw - now) * ratio if raw is not None else None
        if first_wait is None and raw is not None:
            firsts.append({"jid": job_id, "first": max(0, int((raw - submitted).total_seconds()))})
        if start is None and old is None:
            continue
        if start is not None and old is not None:
            slack = max(ESTIMATE_SLACK, 0.1 * (start - now).total_seconds())
            if abs((start - old).total_seconds()) <= slack:
                continue
        changes.append({"jid": job_id, "est": start})
    write_queued(changes, {"est": "queue_estimate"})
    write_queued(firsts, {"first": "queue_first_wait"})
    return len(changes)


def estimate_pass(now: datetime, settings: QueueSettings, account_ids: list[int] | None, runs: RunTimes) -> int:
    """Estimate and write the starts of the given accounts' queued jobs (None: every queue)."""
    queues = load(account_ids, now, settings)
    stops = idle_stops([d.id for q in queues.values() for d in q.holding])
    shown = {r.id: (r.queue_estimate, r.queue_first_wait, r.created_at) for r in db.session.execute(
        select(Job.id, Job.queue_estimate, Job.queue_first_wait, Job.created_at).where(
            Job.state == QUEUED, in_ids(Job.account_id, list(queues))))} if queues else {}
    written = 0
    for q in queues.values():
        written += write_estimates(estimate_starts(q, now, settings, runs, stops), shown, now, runs.wait_ratio)
    db.session.commit()
    return written

