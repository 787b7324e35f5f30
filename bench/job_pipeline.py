"""Benchmark: the job pipeline against kubesim (embedded) and a database (MariaDB by default when
CRATER_BENCH_DATABASE_URL or --database-url is given, else SQLite):

1. sustained submissions per second (quota admission with the account row lock, then the
   cluster objects), from several threads for a fixed time;
2. syncer lag: N jobs (default 2,000) all finishing in kubesim within a window (default 10 s);
   for each, the time from kubesim's change to the database showing it (p50/p95/max).

    .venv/bin/python bench/job_pipeline.py --database-url mysql+pymysql://...
Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default="")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--window", type=float, default=10.0, help="seconds over which the jobs finish")
    args = parser.parse_args()

    from sqlalchemy import select

    from admin_pages import fresh_app
    from kubesim import KubeSim
    from portal.cluster.client import Cluster
    from portal.cluster.manifests import ClusterSettings
    from portal.extensions import db
    from portal.models import Account, Job, Membership, User
    from portal.services import jobs
    from portal.services.context import Actor
    from portal.sync.syncer import SyncSettings, Syncer

    folder = Path(tempfile.mkdtemp(prefix="crater-pipeline-"))
    url = args.database_url or f"sqlite:///{folder}/bench.sqlite3"
    cluster_def = {"namespaces": ["crater-jobs"], "nodePools": [
        {"name": "gpu", "count": 100, "cpu": 256, "memory": "2048Gi", "gpu": {"model": "A100", "count": 8}}]}
    sim = KubeSim(cluster=cluster_def, time_scale=1.0).start()
    kubeconfig = sim.write_kubeconfig(folder / "kubeconfig")
    app = fresh_app(url)
    with app.app_context():
        user = User(username="bench", auth_source="local")
        account = Account(name="bench-lab", gpu_quota=100000)
        db.session.add_all([user, account])
        db.session.flush()
        db.session.add(Membership(user_id=user.id, account_id=account.id))
        db.session.commit()
        user_id, account_id = user.id, account.id

    def form(n, run):
        return jobs.Submission(job_type="batch", account_id=account_id, display_name=f"b{n}", image="x:1",
                               command="true", cpu_milli=100, memory_mib=128,
                               annotations=(("kubesim.crater.io/run-seconds", run),))

    # 1. sustained submissions
    counter, stop = [0], threading.Event()
    lock = threading.Lock()

    def submitter(t):
        cluster = Cluster.connect(str(kubeconfig), ClusterSettings(namespace="crater-jobs"))
        with app.app_context():
            actor = Actor(db.session.get(User, user_id), "")
            n = 0
            while not stop.is_set():
                job = jobs.submit_job(actor, form(f"{t}-{n}", "forever"), cluster)
                assert job.state == "Pending", (job.state, job.message)
                n += 1
                with lock:
                    counter[0] += 1
            db.session.remove()

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(args.threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    rate = counter[0] / (time.perf_counter() - t0)
    print(f"sustained submissions ({args.threads} threads, quota check with row lock, {url.split(':')[0]}): "
          f"{rate:.1f} jobs/s ({counter[0]} in {args.seconds}s)   (goal >= 50/s)", flush=True)

    # 2. syncer lag with N jobs changing
    changed: dict[int, float] = {}

    def on_change(event, obj):
        if event.rtype.key == "batch/jobs" and any(c.get("type") == "Complete" for c in obj.get("status", {}).get("conditions", [])):
            job_id = int(obj["metadata"]["labels"].get("crater.io/job-id", 0))
            changed.setdefault(job_id, time.perf_counter())
    sim.store.listeners.append(on_change)
    syncer = Syncer(app, Cluster.connect(str(kubeconfig), ClusterSettings(namespace="crater-jobs")),
                    settings=SyncSettings(lease_seconds=15)).start()
    seen: dict[int, float] = {}
    polling = threading.Event()

    def poll():
        with app.app_context():
            while not polling.is_set():
                for job_id in db.session.execute(select(Job.id).where(Job.state == "Succeeded")).scalars():
                    seen.setdefault(job_id, time.perf_counter())
                db.session.rollback()
                time.sleep(0.02)
            db.session.remove()
    poller = threading.Thread(target=poll)
    poller.start()
    # Every job finishes inside one window that opens once all are submitted (estimated from the
    # submission rate above): run time = window slot - now - kubesim's pull and start (1.5 s).
    cluster = Cluster.connect(str(kubeconfig), ClusterSettings(namespace="crater-jobs"))
    batch_ids = []
    opens = time.time() + args.jobs / max(rate, 1.0) * 1.5 + 5
    with app.app_context():
        actor = Actor(db.session.get(User, user_id), "")
        for n in range(args.jobs):
            run = max(1.0, opens + args.window * n / args.jobs - time.time() - 1.5)
            batch_ids.append(jobs.submit_job(actor, form(f"lag-{n}", f"{run:.2f}"), cluster).id)
        db.session.remove()
    late = time.time() - opens
    if late > 0:
        print(f"(submissions took longer than estimated: the window opened {late:.1f} s early)")
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline and not all(i in seen for i in batch_ids):
        time.sleep(0.2)
    polling.set()
    poller.join()
    syncer.stop()
    lags = sorted((seen[i] - changed[i]) * 1000 for i in batch_ids if i in seen and i in changed)
    span = max(changed[i] for i in batch_ids if i in changed) - min(changed[i] for i in batch_ids if i in changed)
    print(f"syncer lag, {args.jobs} jobs finishing within {span:.1f} s: {len(lags)} measured, p50 {statistics.median(lags):.0f} ms, "
          f"p95 {lags[int(len(lags) * 0.95)]:.0f} ms, max {lags[-1]:.0f} ms   (goal p95 <= 250 ms)")
    sim.stop()


if __name__ == "__main__":
    main()
