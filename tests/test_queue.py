"""The queue: submissions over quota wait as Queued (no cluster objects) and the admitter admits them
in fair order as quota frees, under the account lock web submissions take.

- the rules alone (services/scheduling/plan.py, pure): fair order by decayed usage with the entry
  penalty, the head's reservation and EASY backfill, member limits waiting alone, never-fits,
  the estimate's replay, the decay;
- in the database (SQLite and MariaDB, time given explicitly): queueing with words and place,
  admission as quota frees, quota raised, decayed usage changing the order, the head not starved,
  a cancelled queued job, abandoned admissions queued again, and web submissions racing the
  admitter in threads without ever over-admitting;
- through the pages against kubesim with the syncer: Queued -> Pending -> Running -> Succeeded,
  place and estimate shown, cancel, and the queue pages with their authorization.
"""
import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal import vocabulary
from portal.models import Account, AuditEntry, Job, Membership, Node, QueueUsage
from portal.services import jobs as job_service
from portal.services.scheduling import estimates, usage
from portal.services.scheduling.plan import Demand, Limits, Tally, decay, decide, estimate, fair_order, never_fits
from portal.services.scheduling.admission import Ask, QuotaExceeded, admit_queued, admit_submission
from portal.services.scheduling.state import QueueSettings

T0 = datetime(2026, 12, 1, 9, 0, 0)
H = 3600
SETTINGS = QueueSettings(half_life_seconds=24 * H, penalty_seconds=H, jupyter_limit=2)


def d(i, user, gpus=1, minutes=0, limit=H, model="A100", **kw):
    return Demand(id=i, user_id=user, gpus=gpus, gpu_model=model if gpus else "", time_limit=limit,
                  submitted=T0 + timedelta(minutes=minutes), **kw)


def lim(gpus=8, **kw):
    kw.setdefault("caps", {1: None, 2: None, 3: None})
    return Limits(account="vision-lab", gpus=gpus, **kw)


def tally(*held):
    t = Tally()
    for x in held:
        t.add(x)
    return t


# ---- the rules ------------------------------------------------------------------------------------

def test_fair_order_serves_the_least_recent_user_first_and_the_penalty_interleaves_members():
    queued = [d(1, 1, minutes=0), d(2, 1, minutes=1), d(3, 1, minutes=2), d(4, 2, minutes=3), d(5, 2, minutes=4)]
    # Equal usage: submission time decides first, then each job charges its member an hour per GPU.
    assert [x.id for x in fair_order(queued, {}, H)] == [1, 4, 2, 5, 3]
    # Member 1 used 10 GPU-hours recently: member 2's jobs go first, submitted later or not.
    assert [x.id for x in fair_order(queued, {1: 10 * H}, H)] == [4, 5, 1, 2, 3]
    # A member's own jobs keep their submission order whatever the usage.
    order = [x.id for x in fair_order(queued, {2: 0.5 * H}, H)]
    assert order.index(1) < order.index(2) < order.index(3) and order.index(4) < order.index(5)


def test_the_head_holds_its_reservation_and_only_jobs_that_do_not_delay_it_pass():
    running = [d(100, 3, gpus=6, limit=2 * H, started=T0)]  # ends by 11:00 at the latest
    now = T0 + timedelta(minutes=10)
    big, small_long, small_short = d(1, 1, gpus=4, minutes=1), d(2, 2, gpus=2, minutes=2, limit=3 * H), \
        d(3, 3, gpus=2, minutes=3, limit=H)
    decision = decide(lim(), tally(*running), [big, small_long, small_short], {}, running, now, H)
    # The big job does not fit (6 + 4 > 8) and holds the head. A 2-GPU job for 3 hours would
    # delay it (2 free GPUs taken until 12:10); one for 1 hour ends by 10:10, before 11:00.
    assert decision.head.id == 1 and decision.blockers[1].kind == "gpus"
    assert [x.id for x in decision.admit] == [3]
    assert decision.blockers[2].as_dict() == {"kind": "head", "job": 1, "account": "vision-lab"}
    # Without the time limits of the running jobs nobody can say when the head starts: no backfill.
    unbounded = [d(100, 3, gpus=6, limit=0, started=T0)]
    decision = decide(lim(), tally(*unbounded), [big, small_short], {}, unbounded, now, H)
    assert decision.admit == [] and decision.blockers[3].kind == "head"


def test_a_job_that_fits_beside_the_reservation_starts():
    """The head waits for A100s (the model's quota); a V100 job without a time limit fits in the
    account's total beside the head's reservation, so it starts; another A100 job may not."""
    limits = lim(gpus=16, per_model={"A100": 8})
    running = [d(100, 3, gpus=6, started=T0)]
    queued = [d(1, 1, gpus=4), d(2, 2, gpus=2, limit=0, model="V100", minutes=1), d(3, 3, gpus=1, limit=0, minutes=2)]
    decision = decide(limits, tally(*running), queued, {}, running, T0, H)
    assert decision.head.id == 1 and decision.blockers[1].kind == "model"
    assert [x.id for x in decision.admit] == [2] and decision.blockers[3].kind == "head"
    # The total is the limit now: 6 + 4 (reserved) + 2 > 11.
    decision = decide(lim(gpus=11, per_model={"A100": 8}), tally(*running), queued[:2], {}, running, T0, H)
    assert decision.admit == [] and decision.blockers[2].kind == "head"


def test_member_limits_wait_alone_and_hold_back_only_jobs_that_compete_for_the_same_limit():
    """A GPU cap holds back the member's later GPU jobs, not their CPU-only ones; nothing is
    reserved, so other members go on."""
    limits = lim(caps={1: 2, 2: None}, jupyter_limit=1)
    running = [d(100, 1, gpus=2, started=T0)]
    queued = [d(1, 1, gpus=1, minutes=0), d(2, 1, gpus=0, minutes=1), d(3, 2, gpus=4, minutes=2), d(4, 1, gpus=1, minutes=3)]
    decision = decide(limits, tally(*running), queued, {}, running, T0, H)
    assert decision.blockers[1].kind == "member" and decision.blockers[4].as_dict()["kind"] == "behind"
    assert decision.blockers[4].job == 1
    assert sorted(x.id for x in decision.admit) == [2, 3] and decision.head is None
    jup = Tally(jupyter={2: 1})
    decision = decide(limits, jup, [Demand(id=9, user_id=2, jupyter=True, submitted=T0)], {}, [], T0, H)
    assert decision.blockers[9].kind == "jupyter"


def test_a_notebook_over_the_limit_holds_back_only_the_members_later_notebooks():
    """Tried as a new user would: a CPU-only batch job waited behind its owner's second notebook
    in an account using none of its GPUs. Now only a later notebook waits behind it."""
    limits = lim(caps={1: None}, jupyter_limit=1)
    used = Tally(jupyter={1: 1})
    notebook = Demand(id=1, user_id=1, jupyter=True, submitted=T0)
    batch = Demand(id=2, user_id=1, cpu_milli=4000, submitted=T0 + timedelta(minutes=1))
    another = Demand(id=3, user_id=1, jupyter=True, submitted=T0 + timedelta(minutes=2))
    decision = decide(limits, used, [notebook, batch, another], {}, [], T0, H)
    assert [x.id for x in decision.admit] == [2]
    assert decision.blockers[1].kind == "jupyter" and (decision.blockers[3].kind, decision.blockers[3].job) == ("behind", 1)


def test_behind_a_job_waiting_for_the_account_quota_the_members_order_holds():
    running = [d(100, 2, gpus=8, started=T0)]
    queued = [d(1, 1, gpus=1, minutes=0), d(2, 1, gpus=0, minutes=1)]
    decision = decide(lim(), tally(*running), queued, {}, running, T0, H)
    assert decision.blockers[1].kind == "gpus" and (decision.blockers[2].kind, decision.blockers[2].job) == ("behind", 1)


def test_a_model_under_maintenance_holds_back_only_jobs_of_that_model():
    limits = lim(maintenance={"A100": "fans replaced"})
    queued = [d(1, 1, gpus=2, minutes=0), d(2, 1, gpus=1, model="V100", minutes=1), d(3, 1, gpus=0, minutes=2),
              d(4, 1, gpus=1, minutes=3), d(5, 2, gpus=1, minutes=4)]
    decision = decide(limits, Tally(), queued, {}, [], T0, H)
    assert sorted(x.id for x in decision.admit) == [2, 3] and decision.head is None
    assert decision.blockers[1].as_dict() == {"kind": "maintenance", "model": "A100", "account": "vision-lab",
                                              "note": "fans replaced"}
    assert (decision.blockers[4].kind, decision.blockers[4].job) == ("behind", 1)
    assert decision.blockers[5].kind == "maintenance"
    # Nothing can be promised while the model is closed.
    assert estimate(limits, Tally(), [], queued[:1], T0, lambda x: H)[1] is None


def test_never_fits_names_the_limit_a_job_exceeds_on_its_own():
    assert never_fits(lim(gpus=8), d(1, 1, gpus=9)).kind == "gpus"
    assert never_fits(lim(per_model={"A100": 4}), d(1, 1, gpus=5)).kind == "model"
    assert never_fits(lim(caps={1: 2}), d(1, 1, gpus=3)).kind == "member"
    assert never_fits(lim(gpus=8), d(1, 1, gpus=8)) is None


def test_the_estimate_replays_the_rules_at_each_predicted_end():
    running = [replace_end(d(100, 3, gpus=4, started=T0, limit=3 * H), T0 + timedelta(hours=1)),
               replace_end(d(101, 3, gpus=4, started=T0, limit=3 * H), T0 + timedelta(hours=2))]
    queued = [d(1, 1, gpus=4), d(2, 2, gpus=8), d(3, 1, gpus=2)]
    order = fair_order(queued, {}, H)
    starts = estimate(lim(), tally(*running), running, order, T0, lambda x: 30 * 60)
    assert starts[1] == T0 + timedelta(hours=1)  # when the first 4 GPUs free
    # At 10:30 job 1 ends; the 8-GPU job (now the head) waits for job 101, which must end by
    # 12:00 (its time limit); job 3 (2 GPUs for at most an hour) ends by 11:30: it backfills.
    assert starts[3] == T0 + timedelta(hours=1, minutes=30)
    # Jobs 101 and 3 are predicted to end at 11:00: then the 8 GPUs are free.
    assert starts[2] == T0 + timedelta(hours=2)
    assert estimate(lim(), tally(), [], [d(5, 1, gpus=1)], T0, lambda x: None)[5] == T0


def replace_end(x, end):
    from dataclasses import replace
    return replace(x, end=end)


def test_usage_halves_every_half_life():
    assert decay(100.0, 24 * H, 24 * H) == pytest.approx(50.0)
    assert decay(100.0, 72 * H, 24 * H) == pytest.approx(12.5)
    assert decay(100.0, 0, 24 * H) == 100.0


# ---- in the database -------------------------------------------------------------------------------

def test_with_every_node_of_a_model_cordoned_its_jobs_wait_and_say_why(app, make, lab):
    make.node("a100-0", gpus=8, model="A100", unschedulable=True, cordon_reason="new power supply")
    make.node("a100-1", gpus=8, model="A100", ready=False)
    job_id = submit(app, lab["alice"], lab["account"], 2)
    cpu_job = submit(app, lab["bob"], lab["account"], 0, "cpu only")
    assert states(make) == {job_id: "Queued", cpu_job: "Submitting"}
    blocker = make.query(lambda s: s.get(Job, job_id).queue_blocker)
    assert blocker == {"kind": "maintenance", "model": "A100", "account": "vision-lab", "note": "new power supply"}
    with app.test_request_context():
        assert vocabulary.waiting_words(blocker) == (
            "Every A100 node is under maintenance (new power supply); it starts once one is back.")
    assert run_pass(app, T0 + timedelta(seconds=5)) == []
    with pytest.raises(QuotaExceeded, match="every A100 node is under maintenance"):
        submit(app, lab["bob"], lab["account"], 1, queue_if_full=False)
    make.query(lambda s: (setattr(s.get(Node, "a100-0"), "unschedulable", False), s.commit()))
    assert run_pass(app, T0 + timedelta(seconds=10)) == [job_id]


@pytest.fixture
def lab(make):
    alice, bob, carol = make.user("alice"), make.user("bob"), make.user("carol")
    account = make.account("vision-lab", gpu_quota=8, members={alice: "member", bob: "member", carol: "manager"})
    return {"alice": alice, "bob": bob, "carol": carol, "account": account}


def submit(app, user, account, gpus, name="job", now=T0, queue_if_full=True, limit=H, job_type="batch", borrow=False):
    with app.app_context():
        try:
            job = admit_submission(user, account, Ask(gpus=gpus, gpu_model="A100" if gpus else ""),
                              Job(job_type=job_type, display_name=name, time_limit_seconds=limit, spec={}, borrow=borrow),
                              queue_if_full=queue_if_full, settings=SETTINGS, now=now)
            return job.id
        finally:
            db.session.remove()


def run_pass(app, now):
    with app.app_context():
        try:
            return admit_queued(now, SETTINGS).admitted
        finally:
            db.session.remove()


def finish(make, *job_ids, now=T0):
    def done(s):
        for job_id in job_ids:
            job = s.get(Job, job_id)
            job.state, job.finished_at, job.started_at = "Succeeded", now, job.started_at or now - timedelta(minutes=30)
        s.commit()
    make.query(done)


def states(make):
    return make.query(lambda s: {j.id: j.state for j in s.query(Job)})


def test_a_submission_over_quota_is_queued_with_its_place_and_blocker_or_refused_if_asked(app, make, lab):
    first = submit(app, lab["alice"], lab["account"], 6)
    queued = submit(app, lab["bob"], lab["account"], 4, "b")
    job = make.query(lambda s: s.get(Job, queued))
    assert (job.state, job.reason, job.queue_position) == ("Queued", "WaitingForQuota", 1)
    assert job.queue_blocker == {"kind": "gpus", "used": 6, "limit": 8, "ask": 4, "account": "vision-lab"}
    with pytest.raises(QuotaExceeded, match="uses 6 of 8 GPUs; this job asks for 4"):
        submit(app, lab["carol"], lab["account"], 4, "refused", queue_if_full=False)
    with pytest.raises(QuotaExceeded, match="Submit it to the queue to wait for its turn"):
        submit(app, lab["bob"], lab["account"], 1, "behind his own", queue_if_full=False)
    with pytest.raises(QuotaExceeded, match="can never start in account vision-lab"):
        submit(app, lab["bob"], lab["account"], 9, "too big")
    # A job that fits the free quota still may not pass the queued one if it would delay it.
    with pytest.raises(QuotaExceeded, match="Submit it to the queue to wait for its turn"):
        submit(app, lab["carol"], lab["account"], 2, "small", queue_if_full=False, limit=0)
    assert sorted(states(make).values()) == ["Queued", "Submitting"] and first


def test_the_admitter_admits_in_fair_order_as_quota_frees(app, make, lab):
    running = submit(app, lab["alice"], lab["account"], 8, "all of it")
    a1 = submit(app, lab["alice"], lab["account"], 4, "a1", now=T0 + timedelta(minutes=1))
    a2 = submit(app, lab["alice"], lab["account"], 4, "a2", now=T0 + timedelta(minutes=2))
    b1 = submit(app, lab["bob"], lab["account"], 4, "b1", now=T0 + timedelta(minutes=3))
    now = T0 + timedelta(minutes=10)
    assert run_pass(app, now) == []
    # alice was charged for her 8-GPU admission (8 GPU-hours at once): bob's job is first in line,
    # though submitted last.
    positions = make.query(lambda s: {j.id: j.queue_position for j in s.query(Job).filter_by(state="Queued")})
    assert positions == {b1: 1, a1: 2, a2: 3}
    finish(make, running, now=now)
    assert run_pass(app, now + timedelta(seconds=1)) == [b1, a1]
    assert states(make)[a2] == "Queued"
    audit = make.query(lambda s: [e.target_id for e in s.query(AuditEntry).filter_by(action="job.admit")])
    assert sorted(audit) == sorted([str(b1), str(a1)])


def test_decayed_usage_changes_the_order(app, make, lab):
    dave = make.user("dave")
    make.query(lambda s: (s.add(Membership(account_id=lab["account"], user_id=dave, role="member")), s.commit()))
    running = submit(app, lab["carol"], lab["account"], 8, "hold")
    a = submit(app, lab["alice"], lab["account"], 1, "a", now=T0 + timedelta(minutes=1))
    b = submit(app, lab["bob"], lab["account"], 1, "b", now=T0 + timedelta(minutes=2))
    c = submit(app, dave, lab["account"], 1, "c", now=T0 + timedelta(minutes=3))

    def charge(user, hours, at):
        with app.app_context():
            usage.charge(lab["account"], user, hours * H, at, SETTINGS)
            db.session.commit()
            db.session.remove()

    def positions():
        return make.query(lambda s: [s.get(Job, i).queue_position for i in (a, b, c)])
    charge(lab["alice"], 10, T0 - timedelta(days=3))  # 10 GPU-h three half-lives ago: 1.25 now
    charge(lab["bob"], 4, T0)  # 4 GPU-h just now
    charge(dave, 10, T0 - timedelta(days=2))  # 2.5 now
    run_pass(app, T0 + timedelta(minutes=5))
    assert positions() == [1, 3, 2]  # alice's old use has decayed below dave's, and his below bob's
    assert make.query(lambda s: s.get(Job, a).queue_reserved_at) is not None  # alice's job holds the head
    charge(dave, 5, T0 + timedelta(minutes=5))  # dave: 7.5 GPU-h, now above bob
    run_pass(app, T0 + timedelta(minutes=6))
    assert positions() == [1, 2, 3]  # the head keeps its place whatever the usage does
    row = make.query(lambda s: s.get(QueueUsage, (lab["account"], dave)))
    assert row.gpu_seconds == pytest.approx((2.5 + 5) * H, rel=1e-3)
    assert running


def test_a_quota_raised_by_an_admin_admits_the_next_jobs_at_once(app, make, lab):
    submit(app, lab["alice"], lab["account"], 8, "hold")
    waiting = [submit(app, lab["bob"], lab["account"], 2, f"w{n}", now=T0 + timedelta(minutes=n)) for n in range(3)]
    assert run_pass(app, T0 + timedelta(minutes=5)) == []
    make.query(lambda s: (setattr(s.get(Account, lab["account"]), "gpu_quota", 12), s.commit()))
    assert run_pass(app, T0 + timedelta(minutes=5, seconds=1)) == waiting[:2]
    assert states(make)[waiting[2]] == "Queued"


def test_the_head_is_not_starved_by_a_stream_of_small_jobs(app, make, lab):
    holders = [submit(app, lab["carol"], lab["account"], 2, f"h{n}", limit=2 * H) for n in range(3)]  # 6 of 8
    big = submit(app, lab["alice"], lab["account"], 8, "big", now=T0 + timedelta(minutes=1))
    now = T0 + timedelta(minutes=2)
    admitted_small = []
    for n in range(6):
        # Small, long jobs keep coming (each would fit the 2 free GPUs); bob has used nothing.
        submit(app, lab["bob"], lab["account"], 1, f"s{n}", now=now, limit=4 * H)
        admitted_small += run_pass(app, now)
        now += timedelta(minutes=1)
    assert admitted_small == []  # each would delay the big job: none passes it
    job = make.query(lambda s: s.get(Job, big))
    assert job.queue_reserved_at is not None and job.queue_position == 1
    finish(make, *holders, now=now)
    assert run_pass(app, now) == [big]


def test_a_cancelled_queued_job_ends_without_the_cluster_and_is_never_admitted(app, make, lab):
    hold = submit(app, lab["alice"], lab["account"], 8, "hold")
    waiting = submit(app, lab["bob"], lab["account"], 1, "w")

    class NoCluster:
        def __getattr__(self, name):
            raise AssertionError(f"the cluster was called: {name}")
    with app.app_context():
        from portal.models import User
        from portal.services.context import Actor
        job = job_service.stop_job(Actor(db.session.get(User, lab["bob"])), waiting, NoCluster())
        assert (job.state, job.reason, job.finished_at is not None) == ("Stopped", "Cancelled", True)
        db.session.remove()
    finish(make, hold)
    assert run_pass(app, T0 + timedelta(minutes=1)) == []
    assert states(make)[waiting] == "Stopped"


def test_an_admission_abandoned_before_its_create_goes_back_to_the_queue(app, make, lab):
    hold = submit(app, lab["alice"], lab["account"], 8, "hold")
    waiting = submit(app, lab["bob"], lab["account"], 2, "w")
    finish(make, hold)
    now = T0 + timedelta(minutes=1)
    assert run_pass(app, now) == [waiting]  # ... and the syncer dies before the create
    with app.app_context():
        assert job_service.end_abandoned_submissions(now + timedelta(minutes=3), set(), now + timedelta(minutes=3)) == []
        db.session.remove()
    job = make.query(lambda s: s.get(Job, waiting))
    assert (job.state, job.queue_blocker["kind"], job.queue_reserved_at is not None) == ("Queued", "cluster", True)
    assert run_pass(app, now + timedelta(minutes=4)) == [waiting]


def test_a_member_removed_from_the_account_leaves_a_job_that_says_it_cannot_start(app, make, lab):
    submit(app, lab["alice"], lab["account"], 8, "hold")
    waiting = submit(app, lab["bob"], lab["account"], 2, "w")
    make.query(lambda s: (s.delete(s.execute(select(Membership).filter_by(user_id=lab["bob"], account_id=lab["account"]))
                                   .scalar_one()), s.commit()))
    run_pass(app, T0 + timedelta(minutes=1))
    assert make.query(lambda s: s.get(Job, waiting).queue_blocker["kind"]) == "nomember"


def race(app, submissions, sample, while_racing=lambda: None, threads=8):
    """`threads` threads, each with its own sessions, call `submissions(n)` (a list of submit
    calls) while an admitter pass runs in a loop, all starting together; `sample()` is taken after
    every submission and pass, and `while_racing()` runs meanwhile. (errors, samples)"""
    barrier, errors, stop, samples = threading.Barrier(threads + 1), [], threading.Event(), []

    def web(n):
        barrier.wait()
        for call in submissions(n):
            try:
                call()
            except Exception as exc:  # noqa: BLE001  recorded for the assertion
                errors.append(repr(exc))
            samples.append(sample())

    def admitter():
        barrier.wait()
        while not stop.is_set():
            try:
                run_pass(app, T0 + timedelta(minutes=1))
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))
            samples.append(sample())

    workers = [threading.Thread(target=web, args=(n,)) for n in range(threads)] + [threading.Thread(target=admitter)]
    for t in workers:
        t.start()
    while_racing()
    for t in workers[:-1]:
        t.join(120)
    return errors, samples, lambda: (stop.set(), workers[-1].join(60))


def test_web_submissions_racing_the_admitter_never_over_admit(app, make, lab):
    """Threads with their own sessions: 24 web submissions of 1 GPU (queue if full) and an
    admitter pass in a loop, while the holders end: the admitted never exceed 8 GPUs at any
    commit, and every job ends admitted or queued."""
    from portal.models import Account as A
    make.query(lambda s: (setattr(s.get(A, lab["account"]), "max_jobs", None), s.commit()))
    holders = [submit(app, lab["carol"], lab["account"], 2, f"h{n}") for n in range(4)]

    def admitted_gpus():
        with app.app_context():
            try:
                return db.session.execute(select(db.func.sum(Job.gpus)).where(
                    Job.state.in_(("Submitting", "Pending", "Running")))).scalar() or 0
            finally:
                db.session.remove()

    def submissions(n):
        return [lambda n=n, k=k: submit(app, lab["alice"] if n % 2 else lab["bob"], lab["account"], 1, f"r{n}-{k}",
                                        now=T0 + timedelta(seconds=n * 3 + k)) for k in range(3)]

    errors, peak, stop = race(app, submissions, admitted_gpus,
                              while_racing=lambda: finish(make, *holders[:2], now=T0 + timedelta(seconds=5)))
    finish(make, *holders[2:], now=T0 + timedelta(seconds=30))
    run_pass(app, T0 + timedelta(minutes=2))
    stop()
    assert errors == []
    assert max(peak) <= 8 and admitted_gpus() == 8
    final = states(make)
    assert sorted(set(final.values())) == ["Queued", "Submitting", "Succeeded"]
    assert sum(1 for s in final.values() if s in ("Queued", "Submitting")) == 24


def test_borrowers_and_guaranteed_jobs_of_two_accounts_racing_never_exceed_the_cluster(app, make, lab):
    """One node of 8 A100 and two accounts guaranteed 4 each: threads submit 1-GPU jobs to both
    (half of them borrowing) while an admitter pass runs in a loop. At no commit do the admitted
    jobs hold more than the node's 8 GPUs, nor an account more than its 4 within the guarantee."""
    from portal.models import Account as A, Node
    other = make.account("nlp-lab", gpu_quota=4, members={lab["alice"]: "member", lab["bob"]: "member"})
    make.query(lambda s: (setattr(s.get(A, lab["account"]), "gpu_quota", 4), setattr(s.get(A, lab["account"]), "max_jobs", None),
                          s.add(Node(name="a100-0", gpu_model="A100", gpus=8, gpus_requested=0, ready=True, unschedulable=False)),
                          s.commit()))

    def held():
        with app.app_context():
            try:
                return [tuple(r) for r in db.session.execute(select(Job.account_id, Job.borrowed, db.func.sum(Job.gpus)).where(
                    Job.state.in_(("Submitting", "Pending", "Running"))).group_by(Job.account_id, Job.borrowed))]
            finally:
                db.session.remove()

    def submissions(n):
        return [lambda n=n, k=k: submit(app, lab["alice"] if n % 2 else lab["bob"], (lab["account"], other)[(n + k) % 2], 1,
                                        f"r{n}-{k}", now=T0 + timedelta(seconds=n * 4 + k), borrow=k % 2 == 0)
                for k in range(4)]

    errors, samples, stop = race(app, submissions, held)
    run_pass(app, T0 + timedelta(minutes=2))
    stop()
    assert errors == []
    for sample in samples + [held()]:
        assert sum(g for _a, _b, g in sample) <= 8, sample
        assert all(g <= 4 for _a, borrowed, g in sample if not borrowed), sample
    final = held()
    assert sum(g for _a, _b, g in final) == 8  # the node is full: 32 asked, 8 hold it
    assert {a for a, b, _g in final if not b} == {lab["account"], other}  # both guarantees served


def test_estimates_learn_their_bias_from_the_last_days_admitted_jobs(app, make, lab):
    now = T0 + timedelta(hours=5)
    for n in range(25):  # waited 30 min where the first estimate said 20
        make.job(lab["alice"], lab["account"], state="Succeeded", created_at=now - timedelta(hours=2),
                 admitted_at=now - timedelta(hours=1, minutes=30), started_at=now - timedelta(hours=1, minutes=30),
                 queue_first_wait=20 * 60 if n < 20 else 30, finished_at=now - timedelta(hours=1))
    with app.app_context():
        runs = estimates.RunTimes(now)
        assert runs.wait_ratio == pytest.approx(1.5)
        waiting = Job(user_id=lab["bob"], account_id=lab["account"], job_type="batch", state="Queued",
                      created_at=now - timedelta(minutes=1), spec={})
        db.session.add(waiting)
        db.session.commit()
        shown = {waiting.id: (None, None, waiting.created_at)}
        estimates.write_estimates({waiting.id: now + timedelta(minutes=20)}, shown, now, runs.wait_ratio)
        db.session.commit()
        job = db.session.get(Job, waiting.id, populate_existing=True)
        assert job.queue_estimate == now + timedelta(minutes=30)  # 20 min, stretched by 1.5
        assert job.queue_first_wait == 21 * 60  # the raw wait from its submission, kept for learning
        db.session.remove()
    with app.app_context():
        assert estimates.RunTimes(T0).wait_ratio == 1.0  # no admitted job in the day before: no correction
        db.session.remove()


def test_deactivating_a_user_cancels_their_queued_jobs(app, make, lab):
    hold = submit(app, lab["alice"], lab["account"], 8, "hold")
    waiting = submit(app, lab["bob"], lab["account"], 1, "w")
    root = make.user("root", role="admin")
    with app.app_context():
        from portal.models import User
        from portal.services import users
        from portal.services.context import Actor
        users.set_active(Actor(db.session.get(User, root)), lab["bob"], False)
        db.session.remove()
    job = make.query(lambda s: s.get(Job, waiting))
    assert (job.state, job.reason) == ("Stopped", "StoppedByAdmin") and "deactivated" in job.message
    assert states(make)[hold] == "Submitting"  # admitted jobs are left alone


def test_a_gpu_that_frees_goes_to_the_account_borrowing_least_and_the_admitter_follows_the_idle_gpus(app, make, lab):
    """Three accounts guaranteed 1 GPU, each with a job beyond it waiting to borrow, and a full node.
    The admitter's pass that sees nothing new decides nowhere; when one GPU frees, the account
    borrowing least takes it (its queue alone is decided whole: the others only as far as a GPU is
    left for them); when another frees, the next account in that order."""
    from portal.models import Account as A, Node, Placement
    from portal.services.scheduling.schedule import PortalAdmission
    accounts = [lab["account"]] + [make.account(f"lab-{n}", gpu_quota=1, members={lab["alice"]: "member", lab["bob"]: "member"}) for n in (1, 2)]
    make.query(lambda s: (setattr(s.get(A, lab["account"]), "gpu_quota", 1),
                          s.add(Node(name="a100-0", gpu_model="A100", gpus=8, gpus_requested=0, ready=True, unschedulable=False)),
                          s.commit()))
    holders = [submit(app, lab["alice"], a, 1, f"in quota {n}") for n, a in enumerate(accounts)]
    borrowed = submit(app, lab["alice"], accounts[0], 1, "borrowed before", borrow=True)  # account 0 borrows 1 already
    assert all(s == "Submitting" for j, s in states(make).items() if j in holders + [borrowed])

    def running(s):  # their pods hold the node's 8 GPUs (with other work), as the syncer records them
        for job in s.query(Job).filter(Job.id.in_(holders + [borrowed])):
            job.state, job.started_at = "Running", T0
            s.add(Placement(namespace="crater-jobs", pod=f"crater-{job.id}", node="a100-0", job_id=job.id, gpus=1))
        s.get(Node, "a100-0").gpus_requested = 8
        s.commit()
    make.query(running)
    waiting = {a: submit(app, lab["bob"], a, 1, f"borrower {n}", now=T0 + timedelta(minutes=1 + n), borrow=True)
               for n, a in enumerate(accounts)}
    assert [states(make)[j] for j in waiting.values()] == ["Queued"] * 3
    backend = PortalAdmission(SETTINGS)

    def admit(seconds):
        with app.app_context():
            try:
                return backend.admission_pass(T0 + timedelta(minutes=5, seconds=seconds))
            finally:
                db.session.remove()

    assert admit(0) == [] and admit(1) == []  # the node is full
    make.query(lambda s: (setattr(s.get(Node, "a100-0"), "gpus_requested", 7), s.commit()))
    first = admit(2)
    assert first in ([waiting[accounts[1]]], [waiting[accounts[2]]])  # not the account that borrows already
    make.query(lambda s: (setattr(s.get(Job, first[0]), "state", "Running"),  # its pod holds the GPU that freed
                          s.add(Placement(namespace="crater-jobs", pod=f"crater-{first[0]}", node="a100-0", job_id=first[0], gpus=1)),
                          setattr(s.get(Node, "a100-0"), "gpus_requested", 8), s.commit()))
    assert admit(3) == []
    make.query(lambda s: (setattr(s.get(Node, "a100-0"), "gpus_requested", 7), s.commit()))
    second = admit(4)
    assert second == [waiting[(set(accounts[1:]) - {a for a, j in waiting.items() if j in first}).pop()]]
    assert states(make)[waiting[accounts[0]]] == "Queued"
    assert make.query(lambda s: s.get(Job, second[0]).borrowed) is True


def test_a_job_recorded_running_before_the_inventory_shows_its_pods_still_holds_its_gpus(app, make, lab):
    """The syncer commits a job's state before the node inventory that shows its pods (two
    writers): in between, admission must not see the job's GPUs as free on the node."""
    from portal.models import Node, Placement
    from portal.services.scheduling.state import capacity
    make.query(lambda s: (s.add(Node(name="a100-0", gpu_model="A100", gpus=8, gpus_requested=0, ready=True,
                                     unschedulable=False)), s.commit()))
    job = make.job(lab["alice"], lab["account"], state="Running", gpus=6, gpu_model="A100")

    def free():
        with app.app_context():
            try:
                return capacity(SETTINGS).free("A100", "vision-lab")
            finally:
                db.session.remove()
    assert free() == 2  # Running, its pods not in the inventory yet: held
    make.query(lambda s: (s.add(Placement(namespace="crater-jobs", pod=f"crater-{job}", node="a100-0", job_id=job, gpus=6)),
                          setattr(s.get(Node, "a100-0"), "gpus_requested", 6), s.commit()))
    assert free() == 2  # the inventory shows them: on the node, not held twice
    make.query(lambda s: (setattr(s.get(Job, job), "state", "Succeeded"), s.commit()))
    assert free() == 2  # ended while its pod still terminates: the node's count holds it
    make.query(lambda s: (s.query(Placement).delete(), setattr(s.get(Node, "a100-0"), "gpus_requested", 0), s.commit()))
    assert free() == 8


def test_the_owners_wait_counts_from_submission_so_a_long_wait_may_take_young_lent_gpus(app, make, lab):
    """A borrowed job younger than the minimum run time is preempted only once the reclaiming job's
    owner has waited past the bound; time the job waited behind its own account's jobs counts."""
    from portal.models import Account as A, Node
    other = make.account("lab-b", gpu_quota=0, members={lab["bob"]: "member"})
    make.query(lambda s: (setattr(s.get(A, lab["account"]), "gpu_quota", 8),
                          s.add(Node(name="a100-0", gpu_model="A100", gpus=8, gpus_requested=8, ready=True, unschedulable=False)),
                          s.commit()))
    lent = make.job(lab["bob"], other, state="Running", gpus=8, gpu_model="A100", borrowed=True,
                    started_at=T0 + timedelta(minutes=25))
    make.placement("a100-0", lent, gpus=8)
    head = submit(app, lab["alice"], lab["account"], 8, "waited long", now=T0)
    assert states(make)[head] == "Queued"
    # it waited behind the account's own jobs, and became the head a minute ago
    make.query(lambda s: (setattr(s.get(Job, head), "queue_reserved_at", T0 + timedelta(minutes=29)), s.commit()))
    with app.app_context():
        try:
            result = admit_queued(T0 + timedelta(minutes=30), SETTINGS)  # lent 5 min ago (minimum 10), owner waited 30
        finally:
            db.session.remove()
    assert result.preempted == [lent] and result.admitted == [head]


def test_an_admitted_job_the_cluster_leaves_pending_reclaims_lent_gpus_by_the_same_rules(app, make, lab):
    """Admission counted GPUs that something else took meanwhile (here a borrowed job's pods hold
    the whole node): after STRANDED_SECONDS Pending, the in-quota job reclaims them as a queued
    head would: the minimum run time and the owner's bound hold, and a reclaim under way is not
    repeated while the victim's pods are in their grace."""
    from portal.models import Account as A, Node, Preemption
    from portal.services.scheduling.schedule import PortalAdmission
    other = make.account("lab-b", gpu_quota=0, members={lab["bob"]: "member"})
    make.query(lambda s: (setattr(s.get(A, lab["account"]), "gpu_quota", 8),
                          s.add(Node(name="a100-0", gpu_model="A100", gpus=8, gpus_requested=8, ready=True, unschedulable=False)),
                          s.commit()))
    t1 = T0 + timedelta(minutes=20)
    lent = make.job(lab["bob"], other, state="Running", gpus=8, gpu_model="A100", borrowed=True,
                    started_at=t1 + timedelta(seconds=5))
    make.placement("a100-0", lent, gpus=8)
    head = make.job(lab["alice"], lab["account"], state="Pending", gpus=8, gpu_model="A100", created_at=t1, admitted_at=t1)

    backend = PortalAdmission(SETTINGS)  # as the syncer's admitter runs it, every pass

    def stranded_pass(seconds):
        with app.app_context():
            try:
                backend.admission_pass(t1 + timedelta(seconds=seconds))
                return backend.last_preempted  # the syncer suspends these
            finally:
                db.session.remove()
    assert stranded_pass(10) == []  # not Pending long enough yet
    assert stranded_pass(60) == []  # the lent job is young (minimum run time) and the owner has waited 1 min
    assert states(make)[lent] == "Running"
    assert stranded_pass(125) == [lent]  # the owner has waited past the bound (2 min)
    assert states(make)[lent] == "Queued"
    row = make.query(lambda s: s.query(Preemption).one())
    assert (row.job_id, row.by_job_id, row.by_account) == (lent, head, "vision-lab")
    make.query(lambda s: (setattr(s.get(Job, lent), "state", "Running"), s.commit()))  # as if admitted again elsewhere
    assert stranded_pass(126) == []  # its reclaim is under way: nothing more is preempted for it


def test_an_admitted_job_pending_beside_free_gpus_preempts_nothing(app, make, lab):
    from portal.models import Account as A, Node
    from portal.services.scheduling.admission import reclaim_stranded
    other = make.account("lab-b", gpu_quota=0, members={lab["bob"]: "member"})
    make.query(lambda s: (setattr(s.get(A, lab["account"]), "gpu_quota", 8),
                          s.add(Node(name="a100-0", gpu_model="A100", gpus=8, gpus_requested=4, ready=True, unschedulable=False)),
                          s.commit()))
    lent = make.job(lab["bob"], other, state="Running", gpus=4, gpu_model="A100", borrowed=True, started_at=T0)
    make.placement("a100-0", lent, gpus=4)
    make.job(lab["alice"], lab["account"], state="Pending", gpus=4, gpu_model="A100", created_at=T0, admitted_at=T0)
    with app.app_context():
        try:
            assert reclaim_stranded(T0 + timedelta(hours=1), SETTINGS) == []  # its GPUs are free: the scheduler binds it
        finally:
            db.session.remove()
    assert states(make)[lent] == "Running"


def test_a_borrower_starts_on_the_pass_after_a_job_ends_even_when_the_inventory_saw_its_pods_go_first(app, make, lab):
    """The pod's end reaches the node inventory before the Job's end reaches the job's row: for a
    pass in between, the GPUs are free on the node but still held by the Running job. The pass
    after the job's end must decide the borrower's account again, although the idle GPUs it waits
    for did not change since (its fingerprint follows the GPUs admitted jobs hold too)."""
    from portal.models import Account as A, Node, Placement
    from portal.services.scheduling.schedule import PortalAdmission
    other = make.account("lab-b", gpu_quota=8, members={lab["bob"]: "member"})
    make.query(lambda s: (setattr(s.get(A, lab["account"]), "gpu_quota", 1),
                          s.add(Node(name="a100-0", gpu_model="A100", gpus=8, gpus_requested=8, ready=True, unschedulable=False)),
                          s.commit()))
    own = make.job(lab["alice"], lab["account"], state="Running", gpus=1, gpu_model="A100", started_at=T0)  # its guarantee
    running = make.job(lab["bob"], other, state="Running", gpus=7, gpu_model="A100", started_at=T0)
    make.placement("a100-0", own, gpus=1)
    make.placement("a100-0", running, gpus=7)
    borrower = submit(app, lab["alice"], lab["account"], 1, "borrower", now=T0, borrow=True)
    backend = PortalAdmission(SETTINGS)

    def admit(seconds):
        with app.app_context():
            try:
                return backend.admission_pass(T0 + timedelta(seconds=seconds))
            finally:
                db.session.remove()
    assert admit(1) == []  # the node is full
    make.query(lambda s: (s.query(Placement).filter_by(job_id=running).delete(), setattr(s.get(Node, "a100-0"), "gpus_requested", 1),
                          s.commit()))
    assert admit(2) == []  # the pod is gone, the job not yet ended: its GPUs are held
    make.query(lambda s: (setattr(s.get(Job, running), "state", "Succeeded"), s.commit()))
    assert admit(3) == [borrower]
