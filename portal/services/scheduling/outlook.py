"""What a job would meet if it were submitted now, for the submission form: the free GPUs of each
model, the chosen account's headroom, and the queue's own decision for it (start now, borrow,
wait in the queue at a place, wait for the cluster, be refused, or never start), by the same
rules a submission is admitted by (`admission.judge`). Reads only; nothing is locked or written."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from ...extensions import db
from ...models import Account, Membership
from ...vocabulary import JobType
from ..context import Actor
from .admission import Ask, judge
from .plan import CLUSTER_KINDS, Blocker
from .state import QueueSettings

MAX_GPUS = 1024


@dataclass(frozen=True)
class Outlook:
    account: str
    guarantee: int | None  # the account's guaranteed GPUs (None: no limit)
    used: int  # GPUs its jobs hold within the guarantee
    model_quota: int | None  # for the chosen model
    model_used: int
    borrowed: int  # GPUs its jobs hold beyond the guarantee
    verdict: str  # start, borrow, queue, cluster, refuse, never
    position: int | None = None
    blocker: dict | None = None

    @property
    def headroom(self) -> int | None:
        left = None if self.guarantee is None else max(0, self.guarantee - self.used)
        if self.model_quota is not None:
            model_left = max(0, self.model_quota - self.model_used)
            left = model_left if left is None else min(left, model_left)
        return left


def submission_outlook(actor: Actor, account_id: int, job_type: str, gpus: int, gpu_model: str, workers: int,
                       cpu_milli: int, memory_mib: int, when_full: str, time_limit: int, now: datetime,
                       settings: QueueSettings) -> Outlook | None:
    """None when the actor is not a member of the account (nothing is said of accounts one is not in)."""
    if actor.user is None or not 0 <= gpus <= MAX_GPUS:
        return None
    account = db.session.execute(select(Account).join(Membership, Membership.account_id == Account.id).where(
        Account.id == account_id, Membership.user_id == actor.user.id)).scalar()
    if account is None:
        return None
    workers = max(1, workers) if job_type == JobType.DISTRIBUTED else 1
    ask = Ask(gpus=gpus * workers, gpu_model=gpu_model if gpus else "", cpu_milli=cpu_milli * workers, memory_mib=memory_mib * workers)
    try:
        j = judge(account, actor.user.id, ask, job_type, time_limit, workers, when_full == "borrow", now, settings)
    finally:
        db.session.rollback()  # the reads end here
    limits, used = j.queue.limits, j.queue.used
    base = dict(account=account.name, guarantee=limits.gpus, used=used.gpus,
                model_quota=limits.per_model.get(gpu_model) if gpu_model else None,
                model_used=used.per_model.get(gpu_model, 0) if gpu_model else 0, borrowed=used.borrowed)
    if j.never is not None:
        return Outlook(**base, verdict="never", blocker=j.never.as_dict())
    if j.admitted is not None:
        return Outlook(**base, verdict="borrow" if j.admitted.borrowed else "start")
    b: Blocker = j.blocker
    if b.kind in CLUSTER_KINDS:
        verdict = "cluster"
    elif when_full == "refuse":
        verdict = "refuse"
    else:
        verdict = "queue"
    return Outlook(**base, verdict=verdict, position=j.position, blocker=b.as_dict())
