"""Benchmark: the syncer's lag, with kubesim (`python -m kubesim serve`) and the syncer (`crater
sync`) as processes of their own, as in production, sharing this machine's two cores with the
database and this script.

N jobs (default 2,000) are submitted and run until told otherwise; once the database shows them
all running, kubesim ends them at a steady pace over a window (default 10 s). For each job, the lag
is the time from its Job turning Complete (as a watch in this script sees it) to the database
showing it Succeeded (polled every 10 ms).

    .venv/bin/python bench/syncer_lag.py [--jobs 2000] [--window 10] [--database-url mysql+pymysql://...]
Prints figures; asserts nothing.
"""
from __future__ import annotations

from flask import current_app
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
sys.path.insert(0, str(ROOT / "tests"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    import requests
    from sqlalchemy import select

    from admin_pages import fresh_app
    from kubesim_fixtures import wait_for
    from portal.cluster.client import Cluster, ClusterError
    from portal.cluster.manifests import ClusterSettings
    from portal.extensions import db
    from portal.models import Account, Job, Membership, User
    from portal.services import jobs
    from portal.services.context import Actor
    from process_stack import Stack

    folder = Path(tempfile.mkdtemp(prefix="crater-lag-"))
    url = args.database_url or f"sqlite:///{folder}/bench.sqlite3"
    app = fresh_app(url)
    with app.app_context():
        user = User(username="bench", auth_source="local")
        account = Account(name="bench-lab")
        db.session.add_all([user, account])
        db.session.flush()
        db.session.add(Membership(user_id=user.id, account_id=account.id))
        db.session.commit()
        user_id, account_id = user.id, account.id
    stack = Stack(folder, url, time_scale=1.0, settings={"CRATER_LEASE_SECONDS": "15", "CRATER_WATCH_TIMEOUT": "300",
                                                         "CRATER_RECONCILE_SECONDS": "10",
                                                         "CRATER_ORPHAN_GRACE_SECONDS": "300"})
    stack.cluster_file.write_text(
        "namespaces: [crater-jobs]\nnodePools:\n- {name: gpu, count: 100, cpu: 256, memory: 2048Gi, gpu: {model: A100, count: 8}}\n")
    stack.start_kubesim()
    stack.start_syncer()
    try:
        cluster = Cluster.connect(str(stack.kubeconfig), ClusterSettings(namespace="crater-jobs"), timeout=(3, 30))
        ids = []
        started = time.perf_counter()
        with app.app_context():
            actor = Actor(db.session.get(User, user_id), "")
            for n in range(args.jobs):
                form = jobs.Submission(job_type="batch", account_id=account_id, display_name=f"lag-{n}", image="x:1",
                                       command="sleep infinity", cpu_milli=100, memory_mib=1024)
                ids.append(jobs.submit_job(actor, form, cluster, jobs.SubmitSettings.from_config(current_app.config)).id)
            db.session.remove()
        print(f"{args.jobs} jobs submitted in {time.perf_counter() - started:.0f} s", flush=True)

        def running():
            with app.app_context():
                n = len(db.session.execute(select(Job.id).where(Job.id.in_(ids), Job.state == "Running")).scalars().all())
                db.session.remove()
                return n == len(ids)
        wait_for(running, timeout=600, interval=1, what="every job running")
        time.sleep(3)

        completed: dict[int, float] = {}
        seen: dict[int, float] = {}
        done = threading.Event()
        _items, rv = cluster.list("jobs")

        def observe():
            nonlocal rv
            while not done.is_set():
                try:
                    for event in cluster.watch("jobs", rv, timeout_seconds=30):
                        obj = event["object"]
                        rv = obj["metadata"].get("resourceVersion", rv)
                        conditions = (obj.get("status") or {}).get("conditions") or []
                        if any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions):
                            completed.setdefault(int(obj["metadata"]["labels"]["crater.io/job-id"]), time.perf_counter())
                        if done.is_set():
                            return
                except ClusterError:
                    time.sleep(0.1)

        def poll():
            with app.app_context():
                while not done.is_set():
                    for job_id in db.session.execute(select(Job.id).where(Job.state == "Succeeded")).scalars():
                        seen.setdefault(job_id, time.perf_counter())
                    db.session.rollback()
                    time.sleep(0.01)
                db.session.remove()

        threads = [threading.Thread(target=observe, daemon=True), threading.Thread(target=poll, daemon=True)]
        for t in threads:
            t.start()
        control = requests.Session()
        window_start = time.perf_counter()
        for n, job_id in enumerate(ids):
            delay = window_start + args.window * n / len(ids) - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            control.post(f"https://127.0.0.1:{stack.kube_port}/kubesim/finish", verify=stack.ca, timeout=10,
                         headers={"Authorization": "Bearer kubesim-token"},
                         json={"namespace": "crater-jobs", "labelSelector": f"crater.io/job-id={job_id}", "exitCode": 0})
        wait_for(lambda: all(i in seen for i in ids), timeout=300, interval=0.2, what="every job Succeeded in the database")
        done.set()
        lags = sorted((seen[i] - completed[i]) * 1000 for i in ids if i in completed)
        span = max(completed.values()) - min(completed.values())
        backend = url.split(":")[0]
        print(f"syncer lag [{backend}], {len(ids)} jobs completing within {span:.1f} s: {len(lags)} measured, "
              f"p50 {statistics.median(lags):.0f} ms, p95 {lags[int(len(lags) * 0.95)]:.0f} ms, max {lags[-1]:.0f} ms"
              f"   (goal p95 <= 250 ms)", flush=True)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
