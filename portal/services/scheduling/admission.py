"""Admission, under the account's row lock: a web or API submission (`admit_submission`: inserted
as Submitting when it fits now, Queued when it fits only later, refused with the numbers when it
never can) and the queued jobs the syncer's admitter starts (`admit_queued`: decide for every
account, lock only those where a job can start, decide again under the lock, flip those jobs
Queued -> Submitting and charge their members). Both decide by the same plan (`plan.decide`), so
concurrent submissions and the admitter can never exceed a quota or disagree about who goes
first. Touches the DB
only: the caller creates the cluster objects after the commit."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from collections.abc import Callable

from flask_babel import gettext as _
from sqlalchemy import select

from ...extensions import db
from ...models import Job, JobState, Membership, Preemption, utcnow
from ...vocabulary import JobType, never_words, refusal_words
from .. import audit, job_states, notify, policies
from ..context import SYSTEM
from ..errors import DomainError, Forbidden, NotFound
from .plan import (CLUSTER_KINDS, Blocker, Capacity, Decision, Demand, ReclaimRules, account_blocker, decide, never_fits,
                   reclaim, reclassify)
from .state import (AccountQueue, QueueSettings, borrowing_state, capacity, guarantees_held, jupyter_count, load, lock_account,
                    lock_capacity, lock_users, reclaim_candidates, reclaiming, stranded, write_queued)
from .usage import charge, refund_entry


NEW = 1 << 62  # the id of the job being submitted, while the queue decides (after every real id)
STRANDED_SECONDS = 30.0  # an admitted in-quota job the cluster leaves Pending this long reclaims lent GPUs


class QuotaExceeded(DomainError):
    """Refused: says what is used, what is allowed and what was asked; `kind` is what refused it
    (expired, never, or the quota that is full: gpus, model, cpu, memory, jobs, member, ...)."""

    status = 409

    def __init__(self, message: str = "", kind: str = ""):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ReclaimSettings:
    """The preemption policy's settings (/admin/policies); suspended: nothing is preempted."""
    enabled: bool = True
    rules: ReclaimRules = field(default_factory=ReclaimRules)
    grace_seconds: int = 60
    backoff_seconds: float = 60.0

    @classmethod
    def current(cls) -> ReclaimSettings:
        p = policies.get("preemption")
        return cls(not p.suspended, ReclaimRules(p.params["min_run_minutes"] * 60, p.params["owner_wait_minutes"] * 60,
                                                 int(p.params["max_preemptions"])),
                   int(p.params["grace_seconds"]), p.params["backoff_minutes"] * 60)

    def backoff(self, preemptions: int) -> timedelta:
        """How long a job preempted `preemptions` times (this one included) waits before it borrows again."""
        return timedelta(seconds=self.backoff_seconds * 2 ** max(0, min(preemptions - 1, 10)))


@dataclass
class PassResult:
    """What one admission pass did: the jobs admitted (their cluster objects are created next) and
    the jobs preempted (their cluster Jobs are suspended first)."""
    admitted: list[int] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)
    cluster_bound: set[int] = field(default_factory=set)  # accounts whose jobs wait on the cluster (borrow, capacity)
    heads_waiting: set[int] = field(default_factory=set)  # ... of them, those with an in-quota head waiting for the cluster


@dataclass(frozen=True)
class Ask:
    gpus: int = 0  # in total
    gpu_model: str = ""
    cpu_milli: int = 0
    memory_mib: int = 0


@dataclass
class Judgement:
    """What the queue's rules say of a new job now: it could never start (`never`), it starts
    (`admitted`, perhaps borrowed), or it waits at `position` for `blocker`. With the account's
    queue (`queue`: limits and what its jobs hold) and the cluster's free GPUs (`capacity`)."""
    queue: AccountQueue
    never: Blocker | None = None
    admitted: Demand | None = None
    blocker: Blocker | None = None
    position: int | None = None
    capacity: Capacity | None = None


def judge(account, user_id: int, ask: Ask, job_type: str, time_limit: int, workers: int, borrow: bool,
          now: datetime, settings: QueueSettings) -> Judgement:
    """Reads only: the submission's decision (under the caller's locks when it is to be acted on)."""
    q = load([account.id], now, settings)[account.id]
    jupyter = job_type == JobType.JUPYTER
    if jupyter and user_id not in q.used.jupyter:
        q.used.jupyter[user_id] = jupyter_count(user_id)
    d = Demand(id=NEW, user_id=user_id, gpus=ask.gpus, gpu_model=ask.gpu_model, cpu_milli=ask.cpu_milli,
               memory_mib=ask.memory_mib, jupyter=jupyter, time_limit=time_limit, submitted=now, workers=workers,
               borrow=borrow)
    never = never_fits(replace(q.limits, gpus=None, per_model={}) if q.limits.always_borrow else q.limits, d)
    if never is not None:
        return Judgement(q, never=never)
    cap = capacity(settings) if ask.gpus else None
    decision = decide(q.limits, q.used, q.queued + [d], q.scores, q.holding, now, settings.penalty_seconds,
                      capacity=cap.copy() if cap else None, borrowing=True)
    new = next((x for x in decision.admit if x.id == NEW), None)
    if new is not None:
        return Judgement(q, admitted=new, capacity=cap)
    return Judgement(q, blocker=decision.blockers[NEW], position=next(i for i, x in enumerate(decision.order, 1) if x.id == NEW),
                     capacity=cap)


def admit_submission(user_id: int, account_id: int, ask: Ask, job: Job, jupyter_limit: int | None = None,
          before_commit: Callable[[Job], None] | None = None, queue_if_full: bool = False,
          settings=None, now=None) -> Job:
    """Insert `job` as Submitting if the account's quotas, the member's cap and (for a JupyterLab
    job) the user's limit of concurrent JupyterLab jobs in all accounts allow `ask` now and no
    queued job of the account would be delayed by it (the queue's own rules, `plan.decide`);
    else, with `queue_if_full`, as Queued (the admitter starts it when its turn comes); commit.
    Raises QuotaExceeded (nothing written) when it could never fit (it asks more than a quota
    itself), the account has expired, or it does not fit now and may not queue.
    `before_commit(job)` runs once the job has its id, before the commit."""
    settings = replace(settings or QueueSettings(), jupyter_limit=jupyter_limit)
    now = now or utcnow()
    try:
        account = lock_account(account_id)
        if account is None:
            raise NotFound(_("No such account."))
        member = db.session.execute(select(Membership).where(
            Membership.account_id == account_id, Membership.user_id == user_id)).scalar_one_or_none()
        if member is None:
            raise Forbidden(_("You are not a member of account %(name)s.", name=account.name))
        if account.is_expired(now.date()):
            raise QuotaExceeded(_("Account %(name)s expired on %(date)s; ask its manager to renew it.",
                                  name=account.name, date=account.expires_on.isoformat()), kind="expired")
        # Locks in the admitter's order: the account, the cluster's GPUs, then users.
        if ask.gpus:
            lock_capacity()
        if job.job_type == JobType.JUPYTER:
            lock_users([user_id])
        judged = judge(account, user_id, ask, job.job_type, job.time_limit_seconds or 0, job.workers or 1,
                       bool(job.borrow), now, settings)
        if judged.never is not None:
            raise QuotaExceeded(never_words(account.name, judged.never.as_dict()), kind="never")
        if judged.admitted is None:
            blocker = judged.blocker
            if not queue_if_full and blocker.kind not in CLUSTER_KINDS:  # a job in its quota waits for the cluster
                raise QuotaExceeded(refusal_words(blocker.as_dict()), kind=blocker.kind)
            job_states.queued(job, judged.position, blocker.as_dict())
        else:
            job_states.submitted(job)
            job.borrowed = judged.admitted.borrowed
        job.user_id, job.account_id, job.created_at = user_id, account_id, now
        job.gpus, job.gpu_model, job.cpu_milli, job.memory_mib = ask.gpus, ask.gpu_model, ask.cpu_milli, ask.memory_mib
        db.session.add(job)
        if job.state == JobState.SUBMITTING.value:
            charge(account_id, user_id, ask.gpus * settings.penalty_seconds, now, settings)
        if before_commit is not None:
            db.session.flush()
            before_commit(job)
        db.session.commit()
        return job
    except BaseException:
        db.session.rollback()
        raise


def admit_queued(now: datetime, settings: QueueSettings, account_ids: list[int] | None = None,
                 borrow_only: set[int] | frozenset = frozenset()) -> PassResult:
    """One pass over the queues of these accounts (None: every account with a queue): first every
    account's jobs within its guarantee (reclaiming lent GPUs for a head that needs them), then
    the jobs that may borrow, the accounts borrowing least first. `borrow_only` are accounts
    where only the idle GPUs changed since they were last decided and whose jobs wait only to
    borrow: they are loaded one by one in the borrowers' order, and only while idle GPUs are left
    for their smallest job (a GPU that frees with 200 accounts waiting to borrow loads one or two,
    not 200). What was admitted (now Submitting) and preempted (now Queued), committed."""
    result = PassResult()
    borrow_only = set(borrow_only) - set(account_ids or ())
    if account_ids is not None and not account_ids and not borrow_only:
        return result
    queues = load(account_ids, now, settings) if account_ids is None or account_ids else {}
    cap = capacity(settings) if queues or borrow_only else None
    db.session.commit()  # the reads end here; each admitting account gets a transaction of its own
    reclaims = None
    lent = None  # the borrowed jobs reclaim chooses from, read once a head wants them
    borrowers = []
    for account_id, q in queues.items():
        decision = q.decide(now, settings, cap, borrowing=False)
        head = decision.blockers.get(decision.head.id) if decision.head is not None else None
        wants_reclaim = head_waits = head is not None and head.kind in CLUSTER_KINDS
        if wants_reclaim and reclaims is None:
            reclaims = ReclaimSettings.current()
            db.session.commit()
        if wants_reclaim and reclaims.enabled and not decision.admit:
            if lent is None:
                lent = reclaim_candidates()
                db.session.commit()
            # Whether lent GPUs could ever make the head fit (the minimum run time aside): if not,
            # there is nothing to lock and decide again for.
            wants_reclaim = any(v.account != q.name for v in lent[0]) and reclaim(
                decision.head, q.name, cap, lent[0], lent[1], datetime.min, now, reclaims.rules) is not None
        if not q.expired and (decision.admit or (wants_reclaim and reclaims.enabled)):
            _admit_account(account_id, now, settings, False, reclaims, result)
            if result.preempted and lent is not None:
                lent = None  # read again: some of them are no longer lent
        else:
            _show(q, decision, now)
        if any(b.kind == "borrow" for b in decision.blockers.values()):
            borrowers.append(account_id)
        if any(b.kind == "borrow" or b.kind in CLUSTER_KINDS for b in decision.blockers.values()):
            result.cluster_bound.add(account_id)
        if head_waits:
            result.heads_waiting.add(account_id)
    order = {a: (queues[a].used.borrowed, a) for a in borrowers}
    smallest = {a: min((d.gpus for d in queues[a].queued if d.gpus), default=0) for a in borrowers}
    if borrow_only:
        result.cluster_bound |= borrow_only  # still waiting to borrow unless decided otherwise below
        lazy = borrowing_state(borrow_only)
        order.update({a: (borrowed, a) for a, (borrowed, _small) in lazy.items()})
        smallest.update({a: small for a, (_borrowed, small) in lazy.items()})
    for account_id in sorted(order, key=order.get):
        if cap is not None and (not smallest[account_id] or cap.total() - cap.protected < smallest[account_id]):
            continue  # not even its smallest job would find idle GPUs: no need to decide
        q = queues.get(account_id)
        if q is None:
            q = load([account_id], now, settings).get(account_id)
            db.session.commit()
            if q is None:
                continue
        trial = cap.copy() if cap is not None else None
        if q.expired or not q.decide(now, settings, trial, borrowing=True).admit:
            continue
        _admit_account(account_id, now, settings, True, reclaims, result)
        cap = capacity(settings) if cap is not None else None
        db.session.commit()
    db.session.commit()
    return result


def _admit_account(account_id: int, now: datetime, settings: QueueSettings, borrowing: bool,
                   reclaims: ReclaimSettings | None, result: PassResult) -> None:
    """Under the account's row lock (as a web submission takes it) and the cluster's: decide again
    from fresh rows, flip the chosen jobs Queued -> Submitting (guarded: a job cancelled meanwhile
    stays cancelled) and charge their members; reclaim lent GPUs for a head within its guarantee
    that waits for the cluster; commit."""
    try:
        if lock_account(account_id) is None:
            return
        q = load([account_id], now, settings).get(account_id)
        if q is None or q.expired:
            db.session.commit()
            return
        lock_capacity()
        cap = capacity(settings)
        decided = cap.copy() if cap else None  # what is left once the decision's jobs are placed
        decision = q.decide(now, settings, decided, borrowing)
        lock_users([d.user_id for d in decision.admit if d.jupyter])
        if any(d.jupyter for d in decision.admit):  # the JupyterLab counts, now under the users' locks
            q = load([account_id], now, settings)[account_id]
            decided = cap.copy() if cap else None
            decision = q.decide(now, settings, decided, borrowing)
        victims: list[Demand] = []
        head = decision.head
        if (not borrowing and cap is not None and head is not None and decision.blockers[head.id].kind in CLUSTER_KINDS
                and reclaims is not None and reclaims.enabled):
            victims = _reclaim_for(q, decision, decided, now, reclaims)
        done = []
        for d in decision.admit:
            if job_states.admitted(d.id, now, borrowed=d.borrowed):
                done.append(d.id)
                charge(account_id, d.user_id, d.gpus * settings.penalty_seconds, now, settings)
                audit.record(SYSTEM, "job.admit", "job", d.id, {
                    "account": q.name, "gpus": d.gpus, "borrowed": d.borrowed,
                    "waited_s": int((now - d.submitted).total_seconds()) if d.submitted else 0})
        if victims:
            preempted = [v for v in victims if _preempt(v, head, q.name, now, reclaims, settings)]
            if len(preempted) == len(victims) and job_states.admitted(head.id, now):
                done.append(head.id)
                charge(account_id, head.user_id, head.gpus * settings.penalty_seconds, now, settings)
                _record_reclaim(head, q.name, victims, now)
                decision.order = [d for d in decision.order if d.id != head.id]
                result.preempted += [v.id for v in preempted]
            else:  # a victim ended meanwhile: nothing is preempted this pass; decided again next pass
                db.session.rollback()
                return
        _show(q, decision, now)
        db.session.commit()
        result.admitted += done
    except BaseException:
        db.session.rollback()
        raise


def _reclaim_for(q: AccountQueue, decision: Decision, after: Capacity, now: datetime,
                 reclaims: ReclaimSettings) -> list[Demand]:
    """The borrowed jobs to preempt so that the account's head (within its guarantee, waiting for
    the cluster) can start now, or [] (then its blocker says when the lent GPUs come back).
    `after`: the cluster's free GPUs once the decision's admitted jobs are placed."""
    head = decision.head
    used = q.used.copy()
    for d in decision.admit:
        used.add(d)
    if account_blocker(q.limits, used, head) is not None:  # what was admitted beside it took its quota
        return []
    candidates, over = reclaim_candidates()
    since = head.submitted or head.reserved_at or now  # the owner has waited since submitting, in any queue
    victims = reclaim(head, q.name, after, candidates, over, since, now, reclaims.rules)
    if victims:
        return victims
    if victims is None and any(v.account != q.name for v in candidates):
        # Lent GPUs exist but may not be taken yet (minimum run time): they are by the owner's bound.
        at = since + timedelta(seconds=reclaims.rules.wait_bound_seconds)
        if reclaim(head, q.name, after, candidates, over, since - timedelta(days=3650), now, reclaims.rules) is not None:
            decision.blockers[head.id] = Blocker("reclaim", ask=head.gpus, model=head.gpu_model, account=q.name,
                                                 note=max(at, now).isoformat(timespec="seconds"))
    return []


def _preempt(v: Demand, by: Demand, by_account: str, now: datetime, reclaims: ReclaimSettings,
             settings: QueueSettings) -> bool:
    """Borrowed job `v` back to its queue (guarded: one that ended meanwhile stays ended), its
    member's entry penalty refunded, its preemption logged, audited and told to its owner. The
    caller suspends its cluster Job after the commit."""
    ran = max(0.0, (now - v.started).total_seconds()) if v.started else 0.0
    blocker = {"kind": "preempted", "job": by.id, "account": by_account}
    if not job_states.preempted(v.id, now, now + reclaims.backoff(v.preemptions + 1), blocker):
        return False
    row = Preemption(job_id=v.id, user_id=v.user_id, account=v.account, by_job_id=by.id, by_account=by_account,
                     reason="Reclaim", at=now, gpus=v.gpus, ran_seconds=int(ran), gpu_seconds_lost=round(v.gpus * ran, 1),
                     grace_seconds=reclaims.grace_seconds, waited_since=by.reserved_at or by.submitted)
    db.session.add(row)
    account_id = db.session.execute(select(Job.account_id).where(Job.id == v.id)).scalar_one()
    refund_entry(account_id, v.user_id, v.gpus, v.started, now, settings)
    db.session.flush()
    audit.record(SYSTEM, "job.preempt", "job", v.id, {
        "by_job": by.id, "by_account": by_account, "account": v.account, "gpus": v.gpus,
        "at": now.isoformat(timespec="seconds"), "gpu_seconds_lost": row.gpu_seconds_lost, "preemptions": v.preemptions + 1})
    notify.enqueue_job_preempted(v.id, v.user_id, row.id)
    return True


def reclaim_stranded(now: datetime, settings: QueueSettings) -> list[int]:
    """Rule 8 for admitted jobs too. An in-quota job that the cluster has left Pending for
    STRANDED_SECONDS reclaims lent GPUs as a queued head does, by the same rules (minimum run
    time, the owner's bound, no cycles): admission counted GPUs that something else took meanwhile
    (a workload the portal does not manage, a scheduler that placed pods elsewhere than the plan,
    a node that came back with less). One such job per pass, the oldest first, and none whose
    reclaim is under way. The preempted jobs, committed; the caller suspends their cluster Jobs."""
    waiting = stranded(now - timedelta(seconds=STRANDED_SECONDS))
    if not waiting:
        db.session.commit()
        return []
    reclaims = ReclaimSettings.current()
    busy = reclaiming([d.id for d, _a in waiting], now - timedelta(seconds=reclaims.grace_seconds + STRANDED_SECONDS))
    waiting = [(d, a) for d, a in waiting if d.id not in busy]
    candidates, over = reclaim_candidates() if waiting and reclaims.enabled else ([], {})
    if not candidates:
        db.session.commit()
        return []
    cap = capacity(settings)
    for job, account in waiting:
        _model, left = cap.held.get(job.id, ("", 0)) if cap else ("", 0)  # its GPUs not bound yet
        if not job.per_worker or left < job.per_worker:
            continue
        d = replace(job, gpus=left - left % job.per_worker, workers=left // job.per_worker)  # its unbound pods
        victims = reclaim(d, account, cap, candidates, over, d.submitted or now, now, reclaims.rules)
        if not victims:
            continue
        if not all(_preempt(v, d, account, now, reclaims, settings) for v in victims):
            db.session.rollback()  # a victim ended meanwhile: decided again next pass
            return []
        _record_reclaim(d, account, victims, now, admitted=True)
        db.session.commit()
        return [v.id for v in victims]
    db.session.commit()
    return []


def _record_reclaim(head: Demand, account: str, victims: list[Demand], now: datetime, **more) -> None:
    """The audit line of a job that took lent GPUs back (queued head or admitted job)."""
    audit.record(SYSTEM, "job.reclaim", "job", head.id, {
        "account": account, "gpus": sum(v.gpus for v in victims), "victims": [v.id for v in victims],
        "waited_s": int((now - (head.reserved_at or head.submitted or now)).total_seconds()), **more})


def reclassify_pass(now: datetime, settings: QueueSettings) -> list[int]:
    """Borrowed jobs whose accounts' own use fell below the guarantee become in-quota jobs (plan
    rule 7), oldest first: one small query when nothing is borrowed."""
    moved: list[int] = []
    for name, limits, holding in guarantees_held(settings):
        ids = reclassify(limits, holding)
        if ids and job_states.reclassified(ids):
            for job_id in ids:
                audit.record(SYSTEM, "job.reclassify", "job", job_id, {"account": name})
            moved += ids
    db.session.commit()
    return moved


def _show(q: AccountQueue, decision: Decision, now: datetime) -> int:
    """Write place, blocker and reservation of the account's queued jobs where they changed (the
    version moves, so lists and polls show it). The caller commits."""
    changes = []
    head_id = decision.head.id if decision.head is not None else None
    for position, d in enumerate(decision.order, 1):
        blocker = decision.blockers[d.id].as_dict()
        reserved = (d.reserved_at or now) if d.id == head_id else None
        old = q.shown.get(d.id)
        if old is None or old[0] != position or old[1] != blocker or old[2] != reserved:
            changes.append({"jid": d.id, "pos": position, "blocker": blocker, "reserved": reserved})
    write_queued(changes, {"pos": "queue_position", "blocker": "queue_blocker", "reserved": "queue_reserved_at"})
    return len(changes)
