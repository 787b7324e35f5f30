"""Benchmark: the job list with 200,000 historical jobs and the polled status fragments, under
gunicorn on loopback, next to a trivial route measured in the same run.

    .venv/bin/python bench/job_list.py --database-url mysql+pymysql://...   # MariaDB (the goal's case)
    .venv/bin/python bench/job_list.py                                      # SQLite under a temp dir

For each route: requests per second under load (wrk, 8 connections, or a keep-alive Python client)
as a ratio to /healthz, and the p95 latency of requests sent one at a time (the server's own time
plus loopback). Prints figures; asserts nothing.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from http.client import HTTPConnection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from admin_pages import (arguments, database_url, fresh_app, gunicorn, insert_people, load_python,  # noqa: E402
                         login_cookie)

STATES = ["Succeeded"] * 6 + ["Failed"] * 2 + ["Stopped", "Lost"]
NAMES = ["resnet50 训练", "bert finetune", "llama 推理", "notebook", "diffusion", "ablation"]


def seed(url: str, jobs: int, users: int, accounts: int, active: int) -> tuple[int, int]:
    """Schema from the migrations, then users, accounts, memberships and `jobs` jobs in bulk. The
    admin owns 1 job in 40 (5,000 of 200,000). Returns the ids of a running and a pending job."""
    from sqlalchemy import insert, text

    from portal.extensions import db
    from portal.models import Job, Membership, Node, SyncHeartbeat, utcnow

    app = fresh_app(url)
    with app.app_context():
        now = utcnow()
        user_ids, account_ids = insert_people(now, users, accounts)
        db.session.execute(insert(Membership), [
            {"account_id": account_ids[i % accounts], "user_id": u, "role": "manager" if i < accounts else "member",
             "created_at": now} for i, u in enumerate(user_ids)])
        db.session.execute(insert(Node), [
            {"name": f"a100-{n}", "gpu_model": "A100", "gpus": 8, "gpus_requested": 8 if n < 20 else 4, "ready": True,
             "unschedulable": False, "cpu_milli": 128000, "cpu_requested_milli": 0, "memory_mib": 1 << 20,
             "memory_requested_mib": 0} for n in range(24)])
        db.session.add(SyncHeartbeat(id=1, holder="bench", beat_at=now))
        batch = 10_000
        for start in range(0, jobs, batch):
            rows = []
            for n in range(start, min(jobs, start + batch)):
                user = user_ids[0] if n % 40 == 0 else user_ids[1 + n % (len(user_ids) - 1)]
                live = n >= jobs - active
                state = ("Running" if n % 3 else "Pending") if live else STATES[n % len(STATES)]
                rows.append({"user_id": user, "account_id": account_ids[n % accounts], "job_type": ("batch", "jupyter", "distributed")[n % 3],
                             "display_name": f"{NAMES[n % len(NAMES)]} {n}", "state": state, "reason": "" if live else "ExitCode",
                             "message": "", "image": "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime", "gpu_model": "A100",
                             "gpus": 1 + n % 4, "cpu_milli": 4000, "memory_mib": 16384, "workers": 1,
                             "time_limit_seconds": 86400, "notify": False, "hidden": False, "created_at": now,
                             "started_at": now if state != "Pending" else None,
                             "spec": '{"image": "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime", "command": "python train.py"}'})
            db.session.execute(insert(Job), rows)
            db.session.commit()
        pending = db.session.execute(text("SELECT id FROM jobs WHERE state = 'Pending' ORDER BY id DESC LIMIT 1")).scalar()
        running = db.session.execute(text("SELECT id FROM jobs WHERE state = 'Running' ORDER BY id DESC LIMIT 1")).scalar()
        db.engine.dispose()
        return running, pending


def load_wrk(port: int, path: str, headers: dict, seconds: int, connections: int) -> float:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(args + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise SystemExit(f"wrk saw error responses for {path}:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def sequential(port: int, path: str, headers: dict, count: int) -> list[float]:
    """Seconds of `count` requests sent one at a time on one keep-alive connection, sorted."""
    conn = HTTPConnection("127.0.0.1", port)
    times = []
    for _ in range(count):
        t = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status in (200, 204), (path, response.status)
        times.append(time.perf_counter() - t)
    return sorted(times)


def sequential_p95(port: int, path: str, headers: dict, count: int) -> float:
    times = sequential(port, path, headers, count)
    return times[int(len(times) * 0.95)] * 1000


def main() -> None:
    args = arguments(__doc__, jobs=200_000, users=2_000, accounts=200, active=60, sequential=300).parse_args()
    url = database_url(args)
    print(f"seeding {args.jobs} jobs ({args.active} active), {args.users} users, {args.accounts} accounts into "
          f"{url.split(':', 1)[0]} ...", flush=True)
    t = time.perf_counter()
    running, pending = seed(url, args.jobs, args.users, args.accounts, args.active)
    print(f"  seeded in {time.perf_counter() - t:.0f} s", flush=True)
    htmx = {"HX-Request": "true", "HX-Target": "jobs-table"}
    routes = [
        ("trivial (/healthz)", "/healthz", {}),
        ("job list, mine (5,000 jobs), page 1", "/jobs", {}),
        ("job list, all (200,000), page 1", "/jobs?scope=all", {}),
        ("job list, all, state=Failed, page 5", "/jobs?scope=all&state=Failed&page=5", {}),
        ("job list, all, search 'bert'", "/jobs?scope=all&q=bert", {}),
        ("job list, all, sorted by GPUs", "/jobs?scope=all&sort=gpus", {}),
        ("job table poll fragment (active)", "/jobs?scope=all&state=active", htmx),
        ("status poll, running job, unchanged (204)", f"/jobs/{running}/status?v=0", {"HX-Request": "true"}),
        ("status poll, running job, changed (render)", f"/jobs/{running}/status?v=99", {"HX-Request": "true"}),
        ("status poll, pending job (place in line)", f"/jobs/{pending}/status", {"HX-Request": "true"}),
    ]
    use_wrk = shutil.which("wrk") is not None
    print(f"load: {'wrk' if use_wrk else 'python keep-alive client'}, {args.connections} connections, {args.seconds} s "
          f"per route, gunicorn {args.workers} workers; p95 from {args.sequential} sequential requests", flush=True)
    with gunicorn(url, args.workers) as port:
        cookie = login_cookie(port)
        trivial = None
        for label, path, headers in routes:
            h = dict(headers, Cookie=cookie)
            sequential_p95(port, path, h, 20)  # warm-up
            p95 = sequential_p95(port, path, h, args.sequential)
            if use_wrk:
                rps = load_wrk(port, path, h, args.seconds, args.connections)
            else:
                rps = load_python(port, path, cookie, args.seconds, args.connections, headers)[0]
            trivial = trivial or rps
            print(f"  {label:45s} {rps:8.0f} req/s = {rps / trivial:4.2f} x trivial   p95 {p95:6.1f} ms", flush=True)


if __name__ == "__main__":
    main()
