"""Benchmark: recovery after a cluster API outage, with the portal (gunicorn), the syncer (`crater
sync`) and kubesim as separate processes on loopback.

Jobs run; the API goes away for --outage seconds (default 60), refusing connections (the process
ended) or hung (SIGSTOP); meanwhile half of the jobs finish in the simulation. The figure is the
time from the API answering again to the database matching the cluster (every job's state as the
cluster says), and whether every end-of-job mail arrived exactly once. Pages are timed during the
outage too (they must keep answering from the database).

    .venv/bin/python bench/sick_api.py [--mode refused|hung|both] [--outage 60] [--database-url mysql+pymysql://...]
Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))


def cluster_states(stack) -> dict[int, str]:
    import requests
    url = f"https://127.0.0.1:{stack.kube_port}/apis/batch/v1/namespaces/crater-jobs/jobs"
    items = requests.get(url, headers={"Authorization": "Bearer kubesim-token"}, timeout=10, verify=stack.ca).json()["items"]
    states = {}
    for job in items:
        conditions = {c["type"] for c in job.get("status", {}).get("conditions", []) if c.get("status") == "True"}
        states[int(job["metadata"]["labels"]["crater.io/job-id"])] = (
            "Succeeded" if "Complete" in conditions else "Failed" if "Failed" in conditions else "Running")
    return states


def db_states(app, ids) -> dict[int, str]:
    from portal.extensions import db
    from portal.models import Job
    with app.app_context():
        result = dict(db.session.query(Job.id, Job.state).filter(Job.id.in_(ids)).all())
        db.session.remove()
        return result


def run(mode: str, outage: float, url: str, jobs: int) -> None:
    from admin_pages import fresh_app
    from kubesim_fixtures import wait_for
    from process_stack import Stack, submit_form
    from portal.extensions import db
    from portal.models import Account, Membership, User

    folder = Path(tempfile.mkdtemp(prefix=f"crater-sick-{mode}-"))
    url = url or f"sqlite:///{folder}/bench.sqlite3"
    app = fresh_app(url)
    with app.app_context():
        from werkzeug.security import generate_password_hash
        user = User(username="bench", display_name="Bench", email="bench@example.edu", auth_source="local",
                    password_hash=generate_password_hash("bench-password", "pbkdf2:sha256:1000"))
        account = Account(name="bench-lab", display_name="Bench lab")
        db.session.add_all([user, account])
        db.session.flush()
        db.session.add(Membership(user_id=user.id, account_id=account.id))
        db.session.commit()
        account_id = account.id
    # Finishing jobs run 200 simulated seconds = 10 s at 20x: they end during the outage.
    stack = Stack(folder, url, time_scale=20, run_seconds=200).start()
    try:
        s = stack.session("bench", "bench-password")
        ids = []
        for n in range(jobs):
            command = "sleep infinity" if n % 2 else "python train.py"
            ids.append(int(submit_form(s, stack.url, account_id, display_name=f"j{n}", command=command).url.rsplit("/", 1)[1]))
        wait_for(lambda: all(v == "Running" for v in db_states(app, ids).values()), timeout=60, what="all running")
        down, up = (stack.api_down, stack.api_up) if mode == "refused" else (stack.api_hang, stack.api_resume)
        down()
        started = time.monotonic()
        page_times = []
        while time.monotonic() - started < outage:
            t = time.monotonic()
            page = s.get(stack.url + "/jobs", timeout=30)
            page_times.append((time.monotonic() - t) * 1000)
            assert page.status_code == 200
            time.sleep(1)
        alive = all(p.alive() for p in stack.syncers)
        up()
        back = time.monotonic()
        # The cluster itself settles first (the jobs whose time ran out end at its first ticks).
        finishing = sum(1 for n in range(jobs) if not n % 2)
        want = wait_for(lambda: (lambda w: w if sum(v == "Succeeded" for v in w.values()) == finishing else None)(
            cluster_states(stack)), timeout=60, interval=0.05, what="the cluster settling")
        wait_for(lambda: db_states(app, ids) == {i: want[i] for i in ids}, timeout=120, interval=0.05,
                 what="the database matching the cluster")
        converged = time.monotonic() - back
        finished = sum(1 for i in ids if want[i] == "Succeeded")
        wait_for(lambda: len(stack.mailbox.messages) >= finished, timeout=60, what="the mails")
        time.sleep(3)
        mails = len(stack.mailbox.messages)
        print(f"[{mode}, {url.split(':')[0]}] outage {outage:.0f} s, {jobs} jobs ({finished} ended during it): "
              f"database matches the cluster {converged:.2f} s after the API is back (goal <= 5 s); "
              f"syncer alive through it: {alive}; mails {mails} for {finished} ended jobs (goal: exactly one each); "
              f"job list during the outage p50 {statistics.median(page_times):.0f} ms, max {max(page_times):.0f} ms",
              flush=True)
    finally:
        stack.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["refused", "hung", "both"], default="both")
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    for mode in (["refused", "hung"] if args.mode == "both" else [args.mode]):
        run(mode, args.outage, args.database_url, args.jobs)


if __name__ == "__main__":
    main()
