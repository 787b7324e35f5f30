"""Benchmark: one pass of every fair-use policy over 2,000 running GPU jobs, with a real Prometheus
holding each job's GPU utilisation for the last 3 hours (backfilled with promtool), counting the
Prometheus queries the pass makes.

    .venv/bin/python bench/policies.py --database-url mysql+pymysql://...   # MariaDB
    .venv/bin/python bench/policies.py                                      # SQLite under a temp dir

A third of the jobs are idle (they get warned), the rest busy; none is due to be stopped, so the
pass calls no cluster. Prints figures; asserts nothing.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from admin_pages import arguments, database_url, fresh_app, insert_people  # noqa: E402


def main() -> None:
    args = arguments(__doc__, jobs=2000, users=200, accounts=20, repeat=3).parse_args()
    url = database_url(args)
    tmp = Path(tempfile.mkdtemp(prefix="crater-bench-policies-"))
    from sqlalchemy import insert

    from portal.extensions import db
    from portal.local_prometheus import LocalPrometheus
    from portal.metrics import MetricsSettings, Prometheus
    from portal.models import Job, Membership, utcnow
    from portal.services import policies
    from portal.sync.clock import Clock
    from portal.sync.policies import PolicyPasses

    app = fresh_app(url)
    with app.app_context():
        now = utcnow()
        users, accounts = insert_people(now, args.users, args.accounts)
        db.session.execute(insert(Membership), [{"account_id": accounts[i % args.accounts], "user_id": u, "role": "member",
                                                 "created_at": now} for i, u in enumerate(users[1:])])
        db.session.execute(insert(Job), [
            {"user_id": users[1 + n % (args.users - 1)], "account_id": accounts[n % args.accounts],
             "job_type": ("batch", "jupyter", "distributed")[n % 3], "display_name": f"job {n}", "state": "Running",
             "reason": "", "message": "", "image": "pytorch:2", "gpu_model": "A100", "gpus": 1 + n % 4, "cpu_milli": 2000,
             "memory_mib": 8192, "workers": 1, "time_limit_seconds": 7 * 86400, "notify": False, "hidden": False,
             "created_at": now - timedelta(hours=6), "started_at": now - timedelta(hours=5),
             "pods": [{"name": f"crater-{n + 1}-bench", "node": f"n{n % 250}", "phase": "Running"}]}
            for n in range(args.jobs)])
        db.session.commit()
        ids = [j for (j,) in db.session.query(Job.id).order_by(Job.id)]
        pods = {job_id: f"crater-{n + 1}-bench" for n, job_id in enumerate(ids)}
    # three hours of samples at 15 s for every pod: a third idle, the rest busy
    promtool, binary = shutil.which("promtool"), shutil.which("prometheus")
    if not (promtool and binary):
        raise SystemExit("this benchmark needs prometheus and promtool (apt-get install prometheus)")
    end = int(time.time()) - 30
    rng = random.Random(5)
    lines = ["# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).", "# TYPE DCGM_FI_DEV_GPU_UTIL gauge"]
    for n, (_job_id, pod) in enumerate(pods.items()):
        idle = n % 3 == 0
        labels = f'gpu="0",UUID="GPU-{n}",Hostname="n{n % 250}",namespace="crater-jobs",pod="{pod}"'
        lines += [f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} {0 if idle else rng.randrange(30, 100)} {t}"
                  for t in range(end - 3 * 3600, end, 15)]
    (tmp / "samples.om").write_text("\n".join(lines) + "\n# EOF\n")
    data = tmp / "prom" / "data"
    data.mkdir(parents=True)
    t = time.perf_counter()
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(tmp / "samples.om"), str(data)], check=True,
                   capture_output=True)
    print(f"backfilled {len(lines) - 2:,} samples in {time.perf_counter() - t:.0f} s", flush=True)
    prom = LocalPrometheus(["127.0.0.1:9"], tmp / "prom", 15, binary=binary, retention="30d").start()
    try:
        settings = MetricsSettings(url=prom.url, step=15)
        prometheus = Prometheus(settings)
        calls = []
        real_get = prometheus._get
        prometheus._get = lambda path, params: calls.append(path) or real_get(path, params)  # count the queries

        class NoCluster:  # the pass must not need the cluster here: nothing is due to be stopped
            def __getattr__(self, name):
                raise AssertionError(f"the pass called the cluster ({name})")

        with app.app_context():
            for i in range(args.repeat):
                passes = PolicyPasses(NoCluster(), prometheus, Clock(), "crater-jobs", every=0)
                calls.clear()
                t = time.perf_counter()
                done = passes.run_due()
                seconds = time.perf_counter() - t
                idle = done.get("idle_gpu")
                print(f"  pass {i + 1}: {seconds:.2f} s for {idle.looked_at if idle else 0} running GPU jobs, "
                      f"{len(calls)} Prometheus quer{'y' if len(calls) == 1 else 'ies'}, "
                      f"warned {len(idle.warn) if idle else 0}, stopped {len(idle.stop) if idle else 0}", flush=True)
            print(f"  (runs logged: {policies.list_runs(_system(), '', 1, 10).total})")
    finally:
        prom.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if not args.database_url:
            shutil.rmtree(url.removeprefix("sqlite:///").rsplit("/", 1)[0], ignore_errors=True)


def _system():
    from portal.services.context import SYSTEM
    return SYSTEM


if __name__ == "__main__":
    main()
