"""Benchmark: the queue. Three figures; prints them, asserts nothing.

    .venv/bin/python bench/queueing.py latency [--rounds 40]          # kubesim real time + the syncer
    .venv/bin/python bench/queueing.py pass --database-url mysql+pymysql://...   [--jobs 10000 --accounts 200 --borrow]
    .venv/bin/python bench/queueing.py estimates [--jobs 2000 --hours 24 --scale 120]

- latency: an account allowed 2 GPUs and a chain of 2-GPU jobs of 2 s each: for every job that
  ends, the time until the next queued job's Job object exists in kubesim (the job writer sees the
  end, wakes the admitter, which admits and creates). Goal: p95 under 2 s.
- pass: 10,000 queued jobs in 200 accounts (each account's quota in use): one admission pass with
  nothing to admit, one that admits a job in every account (the cluster objects are not created
  here), and the job list and a queued job's polled status next to a trivial route, with and
  without those queued jobs. Goal: a pass under 200 ms; pages unchanged.
- estimates: kubesim's demo cluster (16 A100, 8 RTX 4090) at `--scale` times real time and the
  syncer on a clock scaled the same way, a day of 2,000 jobs in sweeps from 15 researchers in
  three labs whose quotas add up to the cluster, each researcher's jobs with a run time of their
  own (log-normal around their median) and 20 past jobs each as history. For every job that
  waited in the queue: the first estimate it showed against its actual start. Goal: the median
  error under 25 % of the actual wait.
"""
from __future__ import annotations

from flask import current_app
import argparse
import math
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

A100, RTX = "NVIDIA-A100-SXM4-80GB", "NVIDIA-GeForce-RTX-4090"


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def people(app, accounts: dict[str, dict], users_per_account: int) -> dict:
    """Accounts (name -> quota kwargs) with members; {account name: (account id, [user ids])}."""
    from portal.extensions import db
    from portal.models import Account, AccountGpuQuota, Membership, User
    result = {}
    with app.app_context():
        for name, quota in accounts.items():
            models = quota.pop("models", {})
            account = Account(name=name, **quota)
            account.gpu_model_quotas = [AccountGpuQuota(gpu_model=m, gpus=g) for m, g in models.items()]
            db.session.add(account)
            db.session.flush()
            ids = []
            for n in range(users_per_account):
                user = User(username=f"{name[:3]}{n}", auth_source="local")
                db.session.add(user)
                db.session.flush()
                db.session.add(Membership(user_id=user.id, account_id=account.id))
                ids.append(user.id)
            result[name] = (account.id, ids)
        db.session.commit()
    return result


# ---- latency -------------------------------------------------------------------------------------

def latency(args) -> None:
    from admin_pages import fresh_app
    from kubesim import KubeSim
    from portal.cluster.setup import cluster_for
    from portal.extensions import db
    from portal.models import User
    from portal.services import jobs
    from portal.services.context import Actor
    from portal.sync.syncer import SyncSettings, Syncer

    folder = Path(tempfile.mkdtemp(prefix="crater-queue-"))
    url = args.database_url or f"sqlite:///{folder}/bench.sqlite3"
    sim = KubeSim(time_scale=1.0, tick=0.02).start()
    app = fresh_app(url)
    app.config["KUBECONFIG"] = str(sim.write_kubeconfig(folder / "kc"))
    lab = people(app, {"chain-lab": {"gpu_quota": 2}}, 1)["chain-lab"]
    syncer = Syncer(app, cluster_for(app), settings=SyncSettings(lease_seconds=3, watch_timeout=30)).start()
    time.sleep(2)
    cluster = cluster_for(app)
    with app.app_context():
        actor = Actor(db.session.get(User, lab[1][0]), "")
        ids = [jobs.submit_job(actor, jobs.Submission(
            job_type="batch", account_id=lab[0], display_name=f"c{n}", image="pytorch:2", command="python train.py",
            gpus=2, gpu_model=A100, time_limit_seconds=3600,
            annotations=(("kubesim.crater.io/run-seconds", "2"),)), cluster, jobs.SubmitSettings.from_config(current_app.config)).id for n in range(args.rounds + 1)]
        db.session.remove()
    from kubesim.resources import lookup
    jobs_type, pods_type = lookup("batch", "v1", "jobs"), lookup("", "v1", "pods")
    ended, created = {}, {}
    deadline = time.monotonic() + 10 * args.rounds + 60
    while len(ended) < len(ids) and time.monotonic() < deadline:
        now = time.monotonic()
        for job_id in ids:
            job = sim.store.find(jobs_type, "crater-jobs", f"crater-{job_id}")
            if job_id not in created and job is not None:
                created[job_id] = now
            if job_id not in ended and job is not None:
                # GPUs are free once the pod has terminated (before the Job's Complete condition)
                pods = sim.store.list(pods_type, "crater-jobs", label_terms=(("crater.io/job-id", {str(job_id)}),))[0]
                if any((p.get("status") or {}).get("phase") in ("Succeeded", "Failed") for p in pods) or any(
                        c.get("type") == "Complete" and c.get("status") == "True"
                        for c in (job.get("status") or {}).get("conditions") or []):
                    ended[job_id] = now
        time.sleep(0.005)
    gaps = [created[b] - ended[a] for a, b in zip(ids, ids[1:]) if a in ended and b in created]
    syncer.stop()
    sim.stop()
    print(f"freed GPUs -> next queued job's Job object ({len(gaps)} hand-overs, syncer running): "
          f"p50 {percentile(gaps, 50):.2f} s, p95 {percentile(gaps, 95):.2f} s, max {max(gaps):.2f} s   (goal p95 < 2 s)")


# ---- one pass over 10,000 queued jobs ------------------------------------------------------------

def one_pass(args) -> None:
    from sqlalchemy import insert, update

    from admin_pages import fresh_app
    from portal.extensions import db
    from portal.models import Account, Job, Membership, User, utcnow
    from portal.services.scheduling import admission, estimates, schedule
    from portal.services.scheduling.state import QueueSettings

    folder = Path(tempfile.mkdtemp(prefix="crater-queue-"))
    url = args.database_url or f"sqlite:///{folder}/bench.sqlite3"
    app = fresh_app(url)
    rng = random.Random(3)
    settings = QueueSettings.from_config(app.config)
    with app.app_context():
        now = utcnow()
        admin = User(username="root", role="admin", auth_source="local")
        db.session.add(admin)
        db.session.flush()
        accounts = [Account(name=f"lab-{n:03d}", gpu_quota=8) for n in range(args.accounts)]
        db.session.add_all(accounts)
        db.session.flush()
        users = [User(username=f"u{n:05d}", auth_source="local") for n in range(args.accounts * 10)]
        db.session.add_all(users)
        db.session.flush()
        db.session.execute(insert(Membership), [{"account_id": accounts[n // 10].id, "user_id": u.id, "role": "member",
                                                 "created_at": now} for n, u in enumerate(users)])
        rows = []
        for a_n, account in enumerate(accounts):
            members = users[a_n * 10:(a_n + 1) * 10]
            for k in range(4):  # the quota in use: 4 running jobs of 2 GPUs
                rows.append(dict(user_id=members[k].id, account_id=account.id, job_type="batch", state="Running",
                                 display_name="running", gpus=2, gpu_model=A100, cpu_milli=4000, memory_mib=16384,
                                 time_limit_seconds=7200, created_at=now - timedelta(hours=1),
                                 started_at=now - timedelta(minutes=rng.randint(1, 60)), spec={}))
        per_account = args.jobs // args.accounts
        members_of = {}
        for a_n, account in enumerate(accounts):
            members = users[a_n * 10:(a_n + 1) * 10]
            members_of[account.id] = members
            for k in range(per_account):  # first as ended jobs: the same number of rows, for the pages' baseline
                rows.append(dict(user_id=members[k % 10].id, account_id=account.id, job_type="batch", state="Succeeded",
                                 reason="", display_name=f"queued {k}", gpus=rng.choice((1, 2, 4)),
                                 gpu_model=A100, cpu_milli=4000, memory_mib=16384, time_limit_seconds=3600 * rng.randint(1, 8),
                                 created_at=now - timedelta(minutes=per_account - k), spec={}))
        db.session.execute(insert(Job), rows)
        if args.borrow:  # the node inventory: every account's 8 GPUs in use on a node of its own, 10 idle nodes
            from portal.models import Node, Placement
            db.session.execute(insert(Node), [dict(name=f"a100-{n:03d}", gpu_model=A100, gpus=8,
                                                   gpus_requested=8 if n < args.accounts else 0, ready=True,
                                                   unschedulable=False, cpu_milli=128000, memory_mib=1048576)
                                              for n in range(args.accounts + 10)])
            nodes = {a.id: f"a100-{n:03d}" for n, a in enumerate(accounts)}  # the running jobs' pods, as the syncer records them
            db.session.execute(insert(Placement), [
                dict(namespace="crater-jobs", pod=f"crater-{job_id}", node=nodes[account_id], job_id=job_id, gpus=2, phase="Running")
                for job_id, account_id in db.session.execute(db.select(Job.id, Job.account_id).where(Job.state == "Running"))])
        db.session.commit()
        admin_id = admin.id
        running = db.session.execute(db.select(Job.id, Job.version).where(Job.state == "Running").limit(1)).one()
        db.session.remove()
    pages(app, admin_id, [("/healthz", 200), ("/jobs?scope=all", 200), (f"/jobs/{running.id}/status?v={running.version}", 204),
                          (f"/jobs/{running.id}/status?v=-1", 200)],
          f"with {args.jobs} ended jobs (the baseline)")
    with app.app_context():
        db.session.execute(update(Job).where(Job.display_name.like("queued %")).values(state="Queued", reason="WaitingForQuota"))
        if args.borrow:  # half the queued jobs' owners chose to borrow idle GPUs
            db.session.execute(update(Job).where(Job.display_name.like("queued %"), Job.id % 2 == 0).values(borrow=True))
        db.session.commit()
        backend = schedule.PortalAdmission(settings)
        for label, call in (("first, every queue (writes every place)", lambda: admission.admit_queued(now, settings).admitted),
                            ("every queue again (nothing to write)", lambda: admission.admit_queued(now, settings).admitted),
                            ("the admitter's first (every queue)", lambda: backend.admission_pass(now)),
                            ("the admitter's, nothing changed", lambda: backend.admission_pass(now + timedelta(seconds=1))),
                            ("the admitter's, nothing changed", lambda: backend.admission_pass(now + timedelta(seconds=2)))):
            t0 = time.perf_counter()
            if args.profile and label.startswith("every queue again"):
                import cProfile
                import pstats
                profile = cProfile.Profile()
                admitted = profile.runcall(call)
                pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
            else:
                admitted = call()
            print(f"admission pass over {args.jobs} queued jobs in {args.accounts} accounts, {label}: "
                  f"{(time.perf_counter() - t0) * 1000:.0f} ms, {len(admitted)} admitted   (goal < 200 ms)", flush=True)
        # one job ends in one account: the admitter decides there only
        one = db.session.execute(db.select(Job.id).where(Job.state == "Running").limit(1)).scalar_one()
        db.session.execute(update(Job).where(Job.id == one).values(state="Succeeded", finished_at=now, version=Job.version + 1))
        db.session.commit()
        t0 = time.perf_counter()
        admitted = backend.admission_pass(now + timedelta(seconds=3))
        print(f"the admitter's pass after a job ended in one account: {(time.perf_counter() - t0) * 1000:.0f} ms, "
              f"{len(admitted)} admitted   (goal < 200 ms)", flush=True)
        if args.borrow:  # a GPU frees on a node: every account waiting to borrow that model is decided again
            from portal.models import Node
            db.session.execute(update(Node).where(Node.name == "a100-000").values(gpus_requested=7, version=Node.version + 1))
            db.session.commit()
            t0 = time.perf_counter()
            admitted = backend.admission_pass(now + timedelta(seconds=4))
            print(f"the admitter's pass after 1 A100 freed, {args.accounts} accounts waiting to borrow: "
                  f"{(time.perf_counter() - t0) * 1000:.0f} ms, {len(admitted)} admitted", flush=True)
        # free 2 GPUs in every account: the pass admits there
        running = [j for j, in db.session.execute(db.select(Job.id).where(Job.state == "Running", Job.display_name == "running")
                                                  .order_by(Job.id))]
        db.session.execute(update(Job).where(Job.id.in_(running[::4])).values(state="Succeeded", finished_at=now))
        db.session.commit()
        t0 = time.perf_counter()
        admitted = admission.admit_queued(now + timedelta(seconds=1), settings).admitted
        print(f"admission pass that admits in every account: {(time.perf_counter() - t0) * 1000:.0f} ms, "
              f"{len(admitted)} admitted", flush=True)
        runs = estimates.RunTimes(now)
        t0 = time.perf_counter()
        written = estimates.estimate_pass(now, settings, None, runs)
        print(f"estimating every queue once (background, budgeted per round): {(time.perf_counter() - t0) * 1000:.0f} ms, "
              f"{written} estimates written", flush=True)
        queued = db.session.execute(db.select(Job.id, Job.version).where(Job.state == "Queued").limit(1)).one()
        db.session.remove()
    pages(app, admin_id, [("/healthz", 200), ("/jobs?scope=all", 200), (f"/jobs/{queued.id}/status?v={queued.version}", 204),
                          (f"/jobs/{queued.id}/status?v=-1", 200), (f"/jobs/{queued.id}", 200), ("/queues/1", 200),
                          ("/queues", 200)],
          f"with those {args.jobs} jobs queued")


def pages(app, admin_id, paths, label):
    """p50/p95 of each path in-process (one client), and its rate as a ratio to the first's."""
    client = app.test_client()
    with client.session_transaction() as s:
        s["_user_id"], s["_fresh"] = str(admin_id), True
    trivial = None
    print(f"pages, {label}:")
    for path, status in paths:
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            assert client.get(path).status_code == status, path
            times.append(time.perf_counter() - t0)
        p50 = percentile(times, 50)
        trivial = trivial or p50
        print(f"  {path:36s} p50 {p50 * 1000:6.2f} ms, p95 {percentile(times, 95) * 1000:6.2f} ms, "
              f"{trivial / p50:.2f}x the trivial route's rate (in-process, one client)", flush=True)


# ---- estimated starts against actual starts ------------------------------------------------------

class ScaledClock:
    """The syncer's clock running `scale` times faster, in step with kubesim's simulated time."""

    def __init__(self, sim):
        self.sim, self.scale = sim, sim.time_scale
        self._mono0 = time.monotonic()

    def time(self) -> float:
        return self.sim.clock()

    def monotonic(self) -> float:
        return (time.monotonic() - self._mono0) * self.scale

    def wait(self, event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds) / self.scale)

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC).replace(tzinfo=None, microsecond=0)


def estimates(args) -> None:
    from sqlalchemy import insert, select

    from admin_pages import fresh_app
    from kubesim import KubeSim
    from portal.cluster.setup import cluster_for
    from portal.extensions import db
    from portal.models import Job, User
    from portal.services import jobs
    from portal.services.context import Actor
    from portal.sync.syncer import SyncSettings, Syncer

    scale = args.scale
    folder = Path(tempfile.mkdtemp(prefix="crater-estimates-"))
    url = args.database_url or f"sqlite:///{folder}/bench.sqlite3"
    sim = KubeSim(time_scale=scale, tick=0.05).start()  # the demo cluster
    app = fresh_app(url)
    app.config.update(KUBECONFIG=str(sim.write_kubeconfig(folder / "kc")), QUEUE_SECONDS=30.0, POLICY_SECONDS=3600.0)
    labs = people(app, {"vision-lab": {"gpu_quota": 8, "models": {A100: 8}},
                        "nlp-lab": {"gpu_quota": 8, "models": {A100: 8}},
                        "graphics-lab": {"gpu_quota": 8, "models": {RTX: 8}}}, 5)
    rng = random.Random(11)
    clock = ScaledClock(sim)
    start = clock.utcnow()
    # Each researcher: a median run time (sim seconds), a job size, a time limit of 3x the median.
    researchers = []
    for name, (account_id, user_ids) in labs.items():
        model = RTX if name == "graphics-lab" else A100
        for user_id in user_ids:
            median = rng.uniform(4, 16) * 60  # about 77 % of the cluster's GPU-hours over the day
            researchers.append({"user": user_id, "account": account_id, "model": model, "median": median,
                                "gpus": rng.choice((1, 1, 2)), "limit": max(3600, math.ceil(3 * median / 3600) * 3600)})

    def run_time(r):
        return r["median"] * math.exp(rng.gauss(0, 0.25))
    with app.app_context():  # history: 20 past jobs per researcher, ended in the day before
        rows = []
        for r in researchers:
            for _k in range(20):
                end = start - timedelta(minutes=rng.uniform(5, 1400))
                rows.append(dict(user_id=r["user"], account_id=r["account"], job_type="batch", state="Succeeded",
                                 display_name="past", gpus=r["gpus"], gpu_model=r["model"], time_limit_seconds=r["limit"],
                                 created_at=end - timedelta(hours=1), started_at=end - timedelta(seconds=run_time(r)),
                                 finished_at=end, spec={}))
        db.session.execute(insert(Job), rows)
        db.session.commit()
    syncer = Syncer(app, cluster_for(app), clock=clock, settings=SyncSettings(
        lease_seconds=15 * scale, watch_timeout=60, reconcile_seconds=600, orphan_grace=3600, submit_grace=120 * scale,
        lost_grace=10 * scale, outbox_seconds=10 * scale)).start()
    time.sleep(2)
    # Sweeps (3-10 jobs at once from one researcher) arriving at random through the day.
    sweeps, planned = [], 0
    day = args.hours * 3600
    while planned < args.jobs:
        size = min(rng.randint(3, 10), args.jobs - planned)
        sweeps.append((rng.uniform(0, day), rng.choice(researchers), size))
        planned += size
    sweeps.sort(key=lambda s: s[0])
    submitted: dict[int, datetime] = {}
    first_estimate: dict[int, datetime] = {}
    stop = threading.Event()

    def watch_estimates():
        with app.app_context():
            while not stop.is_set():
                for job_id, est in db.session.execute(select(Job.id, Job.queue_estimate).where(
                        Job.state == "Queued", Job.queue_estimate.is_not(None))):
                    first_estimate.setdefault(job_id, est)
                db.session.commit()
                time.sleep(0.05)
            db.session.remove()
    watcher = threading.Thread(target=watch_estimates, daemon=True)
    watcher.start()
    cluster = cluster_for(app)
    t_sim0 = clock.time()
    with app.app_context():
        actors = {r["user"]: Actor(db.session.get(User, r["user"]), "") for r in researchers}
        for at, r, size in sweeps:
            wait = (t_sim0 + at - clock.time()) / scale
            if wait > 0:
                time.sleep(wait)
            for k in range(size):
                run = run_time(r)
                job = jobs.submit_job(actors[r["user"]], jobs.Submission(
                    job_type="batch", account_id=r["account"], display_name=f"sweep {k}", image="pytorch:2",
                    command="python train.py", gpus=r["gpus"], gpu_model=r["model"], cpu_milli=4000, memory_mib=16384,
                    time_limit_seconds=r["limit"], annotations=(("kubesim.crater.io/run-seconds", f"{run:.0f}"),)),
                    cluster, jobs.SubmitSettings.from_config(current_app.config), now=clock.utcnow())
                submitted[job.id] = job.created_at
        # let the queue drain
        deadline = time.monotonic() + 4 * 3600 / scale + 120
        while time.monotonic() < deadline and db.session.execute(select(db.func.count(Job.id)).where(
                Job.state.in_(("Queued", "Submitting", "Pending")))).scalar_one():
            db.session.commit()
            time.sleep(1)
        rows = {j.id: j for j in db.session.execute(select(Job.id, Job.state, Job.started_at, Job.created_at, Job.admitted_at)
                                                    .where(Job.id.in_(list(submitted))))}
        db.session.remove()
    stop.set()
    syncer.stop()
    sim.stop()
    queued = [j for j in rows.values() if j.admitted_at is not None and j.started_at is not None]
    errors, signed, small, no_estimate = [], [], 0, 0
    waits = []
    for j in queued:
        wait = (j.started_at - j.created_at).total_seconds()
        if j.id not in first_estimate:
            no_estimate += 1
            continue
        if wait < 120:
            small += 1
            continue
        waits.append(wait)
        errors.append(abs((first_estimate[j.id] - j.started_at).total_seconds()) / wait)
        signed.append((j.started_at - first_estimate[j.id]).total_seconds() / wait)
    print(f"a simulated day ({args.hours} h at {scale:g}x) of {len(submitted)} jobs on the demo cluster: "
          f"{len(queued)} waited in the queue; {len(errors)} with an estimate and a wait of 2 min or more "
          f"(median wait {statistics.median(waits) / 60 if waits else float('nan'):.0f} min; {small} waited less; "
          f"{no_estimate} were admitted before their first estimate)")
    print(f"estimate error relative to the actual wait: median {percentile(errors, 50) * 100:.0f} %, "
          f"p90 {percentile(errors, 90) * 100:.0f} %   (goal: median < 25 %); signed median "
          f"{percentile(signed, 50) * 100:+.0f} % (+: started later than estimated); "
          f"{sum(1 for j in rows.values() if j.state == 'Queued')} still queued at the end")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("latency", "pass", "estimates"))
    parser.add_argument("--database-url", default="")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--hours", type=float, default=24)
    parser.add_argument("--scale", type=float, default=120)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--borrow", action="store_true", help="pass: a node inventory and half the queued jobs borrowing")
    args = parser.parse_args()
    if args.what == "latency":
        latency(args)
    elif args.what == "pass":
        args.jobs = args.jobs or 10_000
        one_pass(args)
    else:
        args.jobs = args.jobs or 2000
        estimates(args)


if __name__ == "__main__":
    main()
