"""Load and crash benchmark: locust (bench/locustfile.py) against the portal as it runs in
production, every piece a process of its own on loopback: gunicorn (crater-web's gthread workers), `crater sync`,
kubesim and MariaDB, plus a real SMTP server for the end-of-job mails.

Simulated researchers sign in, browse the lists and job pages with their htmx polls, submit batch
jobs (30 % run until stopped, the rest end by themselves) and stop their long ones. With --crash,
while the load runs: a gunicorn worker is killed with SIGKILL, then the syncer (a new one is
started at once, as Kubernetes would), then MariaDB is restarted. Afterwards every open job is
stopped, and the run checks what matters:

- no job lost or duplicated: every submission that was answered made exactly one job, and a
  submission sent again with its key (its answer lost to a killed worker) made no second one;
- every job reaches a final state, none is stuck Submitting, and the database matches the cluster
  (no Job object of an ended job left after the orphan grace; no object without its row);
- one end-of-job mail per ended job that asked for one, none twice;
- after each crash, how long until every page answers again (goal: within 10 s).

    .venv/bin/python bench/load.py [--users 300] [--minutes 10] [--crash] [--web-workers 4] [--worker-class gthread|sync]
                                   [--database-url mysql+pymysql://...]

Prints the locust table (requests per second, p50/p95/p99 per page), the crash outcome and the
checks; returns the result (tests/test_load_smoke.py runs it for a minute with 30 users). Asserts
nothing itself.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

BENCH_DB = "mysql+pymysql://crater:crater-test-pw@127.0.0.1:3306/crater_test_bench?charset=utf8mb4"
OPEN = ("Queued", "Submitting", "Pending", "Running")
SUBJECT_ID = re.compile(r"\(#(\d+)\)")


@dataclass
class Result:
    rows: list[dict] = field(default_factory=list)  # the locust table
    total_requests: int = 0
    failures: int = 0
    failures_outside_crashes: int = 0
    crashes: list[dict] = field(default_factory=list)
    jobs: int = 0
    lost: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    not_final: dict = field(default_factory=dict)
    mismatched: dict = field(default_factory=dict)
    mails_twice: list = field(default_factory=list)
    mails_missing: list = field(default_factory=list)
    failure_samples: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.not_final or self.mismatched or self.mails_twice
                    or self.mails_missing)


def prepare(url: str, people: int, labs: int, folder: Path):
    from admin_pages import fresh_app
    from sqlalchemy import insert
    from werkzeug.security import generate_password_hash

    from portal.extensions import db
    from portal.models import Account, Membership, User

    app = fresh_app(url)
    password_hash = generate_password_hash("load-password", "pbkdf2:sha256:1000")  # sign-ins, not hashing, measured
    with app.app_context():
        db.session.execute(insert(User), [dict(username="root", display_name="Root", email="root@example.edu",
                                               auth_source="local", role="admin", password_hash=password_hash)]
                           + [dict(username=f"r{n:03d}", display_name=f"Researcher {n}", email=f"r{n:03d}@example.edu",
                                   auth_source="local", password_hash=password_hash) for n in range(people)])
        # Concurrent jobs per lab are limited, so some submissions wait in the queue.
        db.session.execute(insert(Account), [dict(name=f"lab-{n}", display_name=f"Lab {n}", gpu_quota=8, max_jobs=12)
                                             for n in range(labs)])
        users = dict(db.session.query(User.username, User.id))
        accounts = [a for (a,) in db.session.query(Account.id).order_by(Account.id)]
        db.session.execute(insert(Membership), [dict(user_id=users[f"r{n:03d}"], account_id=accounts[n % labs],
                                                     role="manager" if n < labs else "member") for n in range(people)])
        db.session.commit()
        db.session.remove()
    credentials = [{"username": f"r{n:03d}", "password": "load-password", "account_id": accounts[n % labs],
                    "manager": n < labs} for n in range(people)]
    (folder / "users.json").write_text(json.dumps(credentials))
    return app


class Probe:
    """An admin looking at every page type; after a crash, each page is asked for at once and
    again until it answers 200 (one thread per page, each its own session): the time until the
    last of them has answered."""
    PAGES = ("/", "/jobs", "/jobs?scope=all", "/nodes", "/queues", "/admin/users", "/admin/accounts")

    def __init__(self, stack):
        self.stack = stack

    def _first_answer(self, page: str, since: float, limit: float, out: dict) -> None:
        import requests
        session = None
        while time.monotonic() - since < limit:
            try:
                session = session or self.stack.session("root", "load-password")
                if session.get(self.stack.url + page, timeout=10).status_code == 200:
                    out[page] = time.monotonic() - since
                    return
            except (requests.RequestException, AssertionError, AttributeError):
                session = None
            time.sleep(0.2)

    def back_after(self, since: float, limit: float = 120) -> float | None:
        answered: dict[str, float] = {}
        threads = [threading.Thread(target=self._first_answer, args=(p, since, limit, answered)) for p in self.PAGES]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return max(answered.values()) if len(answered) == len(self.PAGES) else None


def restart_mariadb() -> float:
    """Shut MariaDB down cleanly and start it again; the (monotonic) time it answers again."""
    subprocess.run(["mariadb-admin", "-uroot", "shutdown"], check=True, timeout=60)
    subprocess.run([str(ROOT / "scripts" / "mariadb.sh")], check=True, timeout=120, stdout=subprocess.DEVNULL)
    return time.monotonic()


def crash_plan(stack, probe: Probe, seconds: float, windows: list, crashes: list, with_database: bool):
    """Kill a web worker at 35 % of the run, the syncer at 55 %, restart MariaDB at 75 %. A crash's
    window (for telling its failed requests from the rest) lasts until every page answers again."""
    start = time.monotonic()

    def at(fraction):
        time.sleep(max(0.0, start + seconds * fraction - time.monotonic()))

    def crash(what: str, act):
        """`act` crashes something; it may return when the thing is back (the pages are timed from
        then, else from the crash). `what` may name {away}: the seconds until then."""
        wall, t = time.time(), time.monotonic()
        back_from = act() or t
        back = probe.back_after(back_from)
        windows.append((wall - 0.5, time.time() + 0.5))
        crashes.append({"what": what.format(away=back_from - t), "pages back after s": back,
                        "failed requests in its window": 0})

    at(0.35)
    from process_stack import child_pids
    victim = child_pids(stack.web.proc.pid)[0]
    crash(f"kill -9 gunicorn worker {victim}", lambda: os.kill(victim, signal.SIGKILL))

    at(0.55)

    def kill_syncer():
        old = stack.syncers[-1]
        old.signal(signal.SIGKILL)
        old.proc.wait(10)
        stack.start_syncer()  # what Kubernetes does with the pod
    crash("kill -9 the syncer, a new one started", kill_syncer)

    if with_database:
        at(0.75)
        crash("MariaDB shut down and started again (away {away:.1f} s)", restart_mariadb)


def read_table(prefix: Path) -> list[dict]:
    with open(f"{prefix}_stats.csv") as f:
        return list(csv.DictReader(f))


def drain(app, stack, timeout: float = 180) -> None:
    """Stop every open job as the admin would, then wait until all are final."""
    from process_stack import csrf_of

    from portal.extensions import db
    from portal.models import Job

    s = stack.session("root", "load-password")
    with app.app_context():
        open_ids = [i for (i,) in db.session.query(Job.id).filter(Job.state.in_(OPEN))]
        db.session.remove()
    for job_id in open_ids:
        token = csrf_of(s, f"{stack.url}/jobs/{job_id}")
        s.post(f"{stack.url}/jobs/{job_id}/stop", data={"csrf_token": token}, timeout=30)

    wait_until_none(app, Job.id, Job.state.in_(OPEN), timeout, "every job final")


def wait_until_none(app, column, condition, timeout: float, what: str) -> None:
    """Wait until no row matches `condition` (asked once a second, each time in a fresh session)."""
    from kubesim_fixtures import wait_for

    from portal.extensions import db

    def none_left():
        with app.app_context():
            n = db.session.query(column).filter(condition).count()
            db.session.remove()
            return n == 0
    wait_for(none_left, timeout=timeout, interval=1, what=what)


def run(users: int = 300, minutes: float = 10, crash: bool = False, database_url: str = BENCH_DB,
        web_workers: int = 4, spawn_rate: float = 10, crash_database: bool = True, quiet: bool = False,
        worker_class: str = "gthread") -> Result:
    from process_stack import Stack

    folder = Path(tempfile.mkdtemp(prefix="crater-load-"))
    labs = max(3, users // 30)
    app = prepare(database_url, users, labs, folder)
    settings = {"CRATER_RATE_LIMIT_LOGIN": "100000 per minute", "CRATER_RATE_LIMIT_LOGIN_USER": "1000 per minute",
                "CRATER_RATE_LIMIT_SUBMIT": "1000 per minute", "CRATER_ORPHAN_GRACE_SECONDS": "5"}
    stack = Stack(folder, database_url, settings=settings, time_scale=20, run_seconds=60)
    stack.start_kubesim()
    stack.start_syncer()
    stack.start_web(workers=web_workers, worker_class=worker_class)
    result = Result()
    windows: list[tuple[float, float]] = []
    seconds = minutes * 60
    prefix = folder / "locust"
    env = dict(os.environ, CRATER_LOAD_USERS=str(folder / "users.json"), CRATER_LOAD_LOG=str(folder / "submissions.jsonl"),
               CRATER_LOAD_FAILURES=str(folder / "failures.jsonl"))
    try:
        locust = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
             "-u", str(users), "-r", str(spawn_rate), "-t", f"{int(seconds)}s", "--host", stack.url, "--csv", str(prefix),
             "--only-summary", "--stop-timeout", "10", "--loglevel", "WARNING"],
            env=env, cwd=ROOT, stdout=open(folder / "locust.log", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115  (the child keeps it)
        plan = None
        if crash:
            probe = Probe(stack)
            plan = threading.Thread(target=crash_plan, args=(stack, probe, seconds, windows, result.crashes,
                                                              crash_database), daemon=True)
            plan.start()
        locust.wait(timeout=seconds + 180)
        if plan is not None:
            plan.join(60)
        result.rows = read_table(prefix)
        aggregated = next(r for r in result.rows if r["Name"] == "Aggregated")
        result.total_requests, result.failures = int(aggregated["Request Count"]), int(aggregated["Failure Count"])
        drain(app, stack)
        settle_outbox(app)
        time.sleep(6)  # the orphan grace
        verify(app, stack, folder, result)
        failed = [json.loads(line) for line in (folder / "failures.jsonl").read_text().splitlines()] \
            if (folder / "failures.jsonl").exists() else []
        outside = [f for f in failed if not any(a <= f["t"] <= b for a, b in windows)]
        result.failures_outside_crashes = len(outside)
        for crashed, (a, b) in zip(result.crashes, windows):
            crashed["failed requests in its window"] = sum(1 for f in failed if a <= f["t"] <= b)
        result.failure_samples = (outside or failed)[:5]
    finally:
        stack.stop()
    if not quiet:
        report(result, users, minutes, web_workers, database_url, worker_class)
    return result


def settle_outbox(app, timeout: float = 300) -> None:
    """Wait until every notice has gone out (many jobs end at once when the run is drained)."""
    from portal.models import OutboxMessage
    wait_until_none(app, OutboxMessage.id, OutboxMessage.sent_at.is_(None), timeout, "the outbox empty")


def verify(app, stack, folder: Path, result: Result) -> None:
    import requests

    from portal.extensions import db
    from portal.models import Job

    answered: dict[str, set[int]] = {}
    for line in (folder / "submissions.jsonl").read_text().splitlines():
        entry = json.loads(line)
        answered.setdefault(entry["key"], set())
        if entry["job"]:
            answered[entry["key"]].add(entry["job"])
    with app.app_context():
        rows = db.session.query(Job.id, Job.idempotency_key, Job.state, Job.notify).all()
        db.session.remove()
    by_key: dict[str, list[int]] = {}
    for job_id, key, _state, _notify in rows:
        by_key.setdefault(key, []).append(job_id)
    result.jobs = len(rows)
    result.duplicated = [(k, ids) for k, ids in by_key.items() if len(ids) > 1]
    result.lost = [k for k, ids in answered.items() if ids and not (set(by_key.get(k, [])) & ids)]
    result.lost += [k for k, ids in answered.items() if len(ids) > 1]  # two answers, two jobs: one was duplicated
    result.not_final = {job_id: state for job_id, _k, state, _n in rows if state in OPEN}
    url = f"https://127.0.0.1:{stack.kube_port}/apis/batch/v1/namespaces/crater-jobs/jobs"
    items = requests.get(url, headers={"Authorization": "Bearer kubesim-token"}, timeout=30, verify=stack.ca).json()["items"]
    states = {job_id: state for job_id, _k, state, _n in rows}
    for obj in items:
        job_id = int(obj["metadata"]["labels"].get("crater.io/job-id", 0))
        conditions = {c["type"] for c in obj.get("status", {}).get("conditions", []) if c.get("status") == "True"}
        cluster = "Succeeded" if "Complete" in conditions else "Failed" if "Failed" in conditions else "Running"
        if states.get(job_id) != cluster:
            result.mismatched[job_id] = (states.get(job_id), cluster)
    ended_with_mail = {job_id for job_id, _k, state, notify in rows if notify and state not in OPEN
                       and state not in ("Cancelled",)}
    counts: dict[int, int] = {}
    with stack.mailbox.lock:
        messages = list(stack.mailbox.messages)
    for message in messages:
        subject = next((line for line in message.splitlines() if line.startswith("Subject:")), "")
        if "is running" in subject or "will be stopped" in subject or "time limit" in subject:
            continue
        found = SUBJECT_ID.search(subject)
        if found:
            counts[int(found.group(1))] = counts.get(int(found.group(1)), 0) + 1
    result.mails_twice = [j for j, n in counts.items() if n > 1]  # delivered twice, whatever their Message-ID
    result.mails_missing = sorted(ended_with_mail - set(counts))


def report(result: Result, users: int, minutes: float, workers: int, url: str, worker_class: str = "gthread") -> None:
    print(f"\n{users} users for {minutes:g} min; gunicorn {workers} {worker_class} workers (deploy/gunicorn.conf.py); "
          f"database {url.split(':')[0]}")
    print(f"{'page':38} {'requests':>9} {'fail':>5} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    for r in result.rows:
        print(f"{r['Type'] + ' ' + r['Name'] if r['Type'] not in ('GET', '') else r['Name']:38.38} {r['Request Count']:>9} "
              f"{r['Failure Count']:>5} {float(r['Requests/s']):7.1f} {r['50%']:>7} {r['95%']:>7} {r['99%']:>7}")
    for c in result.crashes:
        back = c["pages back after s"]
        print(f"crash: {c['what']}: every page answered again after {back:.1f} s; "
              f"{c['failed requests in its window']} requests failed meanwhile" if back is not None
              else f"crash: {c['what']}: pages NOT back within the limit")
    print(f"requests {result.total_requests}, failed {result.failures}, of which outside the crashes' windows "
          f"{result.failures_outside_crashes}" + (f" (samples: {result.failure_samples[:3]})" if result.failures else ""))
    print(f"jobs {result.jobs}: lost {len(result.lost)}, duplicated {len(result.duplicated)}, not final "
          f"{len(result.not_final)}, database/cluster mismatches {len(result.mismatched)}; end-of-job mails: "
          f"twice {len(result.mails_twice)}, missing {len(result.mails_missing)}")
    print("checks: " + ("all passed" if result.ok else "FAILED"), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--crash", action="store_true")
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--database-url", default=BENCH_DB)
    parser.add_argument("--worker-class", choices=("gthread", "sync"), default="gthread",
                        help="crater-web's gthread workers (deploy/gunicorn.conf.py), or sync workers to compare")
    args = parser.parse_args()
    run(args.users, args.minutes, args.crash, args.database_url, args.web_workers, args.spawn_rate,
        worker_class=args.worker_class)


if __name__ == "__main__":
    main()
