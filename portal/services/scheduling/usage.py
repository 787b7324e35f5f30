"""Members' recent GPU use per account, in GPU-seconds decayed exponentially (half-life
CRATER_QUEUE_HALF_LIFE_HOURS): charged an entry penalty at admission, brought up to date while
they hold GPUs. The queue orders an account's members by it, least first. Touches the DB only."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from ...extensions import db
from ...models import Job, JobState, QueueUsage
from .plan import decay
from .state import QueueSettings, in_ids


def charge(account_id: int, user_id: int, gpu_seconds: float, now: datetime, settings: QueueSettings) -> None:
    """Add GPU-seconds to a member's decayed usage, never below 0 (the caller commits)."""
    row = db.session.get(QueueUsage, (account_id, user_id))
    if row is None:
        db.session.add(QueueUsage(account_id=account_id, user_id=user_id, gpu_seconds=max(0.0, gpu_seconds), as_of=now))
        return
    row.gpu_seconds = max(0.0, decay(row.gpu_seconds, (now - row.as_of).total_seconds(), settings.half_life_seconds)
                          + gpu_seconds)
    row.as_of = now


def refund_entry(account_id: int, user_id: int, gpus: int, since: datetime | None, now: datetime,
                 settings: QueueSettings) -> None:
    """Take back the entry penalty charged when a job was admitted (decayed since), because it
    is back in the queue through no choice of its member (preempted): its next admission charges
    it again. What it used while it ran stays charged (the caller commits)."""
    penalty = gpus * settings.penalty_seconds
    if penalty > 0:
        elapsed = max(0.0, (now - since).total_seconds()) if since else 0.0
        charge(account_id, user_id, -decay(penalty, elapsed, settings.half_life_seconds), now, settings)


def sample_usage(now: datetime, settings: QueueSettings, max_gap: float = 86400.0) -> int:
    """Bring up to date the usage of every member that holds GPUs now: decayed to now, plus what
    they held since the last update (at most `max_gap` seconds of it). Members that hold nothing
    are not written: their value decays when read. One transaction."""
    held = db.session.execute(select(Job.account_id, Job.user_id, func.sum(Job.gpus)).where(
        Job.state == JobState.RUNNING.value, Job.gpus > 0).group_by(Job.account_id, Job.user_id)).all()
    if not held:
        db.session.commit()
        return 0
    keys = {(a, u) for a, u, _g in held}
    rows = {(r.account_id, r.user_id): r for r in db.session.execute(select(QueueUsage).where(
        in_ids(QueueUsage.account_id, {a for a, _u in keys}))).scalars() if (r.account_id, r.user_id) in keys}
    for account_id, user_id, gpus in held:
        row = rows.get((account_id, user_id))
        if row is None:
            db.session.add(QueueUsage(account_id=account_id, user_id=user_id, gpu_seconds=0.0, as_of=now))
            continue
        gap = min(max(0.0, (now - row.as_of).total_seconds()), max_gap)
        row.gpu_seconds = decay(row.gpu_seconds, gap, settings.half_life_seconds) + int(gpus) * gap
        row.as_of = now
    db.session.commit()
    return len(held)

