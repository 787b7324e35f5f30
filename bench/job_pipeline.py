"""Benchmark: sustained job submissions per second (the rules, quota admission with the account row
lock, then the cluster objects) from several threads for a fixed time, against kubesim (embedded)
and a database (--database-url, else SQLite). The syncer's lag is measured by bench/syncer_lag.py,
with kubesim and the syncer as processes.

    .venv/bin/python bench/job_pipeline.py --database-url mysql+pymysql://...
Prints figures; asserts nothing.
"""
from __future__ import annotations

from flask import current_app
import argparse
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
    args = parser.parse_args()


    from admin_pages import fresh_app
    from kubesim import KubeSim
    from portal.cluster.client import Cluster
    from portal.cluster.manifests import ClusterSettings
    from portal.extensions import db
    from portal.models import Account, Membership, User
    from portal.services import jobs
    from portal.services.context import Actor

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
                               command="true", cpu_milli=100, memory_mib=1024,
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
                job = jobs.submit_job(actor, form(f"{t}-{n}", "forever"), cluster, jobs.SubmitSettings.from_config(current_app.config))
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

    sim.stop()


if __name__ == "__main__":
    main()
