"""Benchmark: web terminals as production runs them. kubesim, `crater sync` and gunicorn
(deploy/gunicorn.conf.py, gthread) as processes on loopback, on a SQLite database of its own.
Prints figures, asserts nothing.

    .venv/bin/python bench/terminal.py [--terminals 50 --logs 10 --seconds 5 --keystrokes 200]

- A keystroke's echo: a key sent through the portal's websocket, kubesim's exec and its pseudo-
  terminal, until its echo comes back; p50 and p95 (goal: p95 under 50 ms on loopback).
- Pages while terminals are open: requests per second of the job list and of a polled job status,
  each as a ratio to a trivial route (/healthz) in the same run, without terminals and then with
  `--terminals` terminals open (idle) and `--logs` logs following (goal: within 10 % of the
  figures without them).
- The web process's memory (all workers' RSS) per open terminal.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
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

import requests  # noqa: E402

from queueing import percentile  # noqa: E402

PASSWORD = "bench-password-1"
A100 = "NVIDIA-A100-SXM4-80GB"


def prepare(url: str, people: int) -> tuple:
    from admin_pages import fresh_app
    from werkzeug.security import generate_password_hash

    from portal.extensions import db
    from portal.models import Account, Membership, User

    app = fresh_app(url)
    with app.app_context():
        account = Account(name="bench-lab", display_name="Bench Lab", gpu_quota=64)
        db.session.add(account)
        db.session.flush()
        for n in range(people):
            user = User(username=f"u{n:02d}", display_name=f"User {n}", email=f"u{n:02d}@example.edu", auth_source="local",
                        password_hash=generate_password_hash(PASSWORD, "pbkdf2:sha256:1000"))
            db.session.add(user)
            db.session.flush()
            db.session.add(Membership(user_id=user.id, account_id=account.id, role="member"))
        db.session.commit()
        account_id = account.id
        db.session.remove()
    return app, account_id


def rate(url: str, session: requests.Session, seconds: float, clients: int = 4) -> float:
    """Requests per second that `clients` threads get from `url` (each its own connection)."""
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def hammer(i: int) -> None:
        s = requests.Session()
        s.cookies.update(session.cookies)
        while time.monotonic() < stop:
            response = s.get(url, timeout=10)
            if response.status_code in (200, 204):
                counts[i] += 1
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def rss_kib(master: int) -> int:
    from process_stack import child_pids
    total = 0
    for pid in [master, *child_pids(master)]:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def pages(stack, session, job_id: int, version: int, seconds: float, rounds: int = 3) -> dict:
    """Each page's rate as a ratio to the trivial route's measured just before it, the median of
    `rounds` rounds (a shared 2-core machine swings a single window by tens of percent)."""
    ratios: dict[str, list[float]] = {"trivial": [], "jobs": [], "status": []}
    for _round in range(rounds):
        for key, path in (("jobs", "/jobs"), ("status", f"/jobs/{job_id}/status?v={version}")):
            trivial = rate(stack.url + "/healthz", session, seconds)
            ratios["trivial"].append(trivial)
            ratios[key].append(rate(stack.url + path, session, seconds) / trivial)
    return {key: statistics.median(values) for key, values in ratios.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terminals", type=int, default=50)
    parser.add_argument("--logs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=4.0, help="each rate measurement (3 rounds of each)")
    parser.add_argument("--keystrokes", type=int, default=200)
    parser.add_argument("--web-workers", type=int, default=2)
    args = parser.parse_args()

    from process_stack import Stack, signed_in, submit_form
    from test_terminal import connect, read_until

    folder = Path(tempfile.mkdtemp(prefix="crater-terminal-"))
    url = f"sqlite:///{folder / 'bench.sqlite3'}"
    people = max(1, -(-args.terminals // 3))
    app, account_id = prepare(url, people)
    # Threads per worker: SO_REUSEPORT spreads connections by a hash, not by load, so each worker
    # gets enough threads to hold every long connection and still serve pages (deploy/gunicorn.conf.py).
    threads = args.terminals + args.logs + 8
    stack = Stack(folder, url, time_scale=1, settings={"CRATER_WEB_THREADS": str(threads),
                                                        "CRATER_TERMINAL_MAX_PER_USER": "3",
                                                        "CRATER_RATE_LIMIT_LOGIN": "100000 per minute",
                                                        "CRATER_RATE_LIMIT_LOGIN_USER": "1000 per minute"})
    stack.start_kubesim()
    stack.start_syncer()
    stack.start_web(workers=args.web_workers)
    try:
        sessions = [signed_in(stack.url, f"u{n:02d}", PASSWORD) for n in range(people)]
        owner = sessions[0]
        deadline = time.monotonic() + 30
        while "NVIDIA-A100" not in owner.get(stack.url + "/jobs/new/batch", timeout=10).text:
            assert time.monotonic() < deadline, "no node inventory"
            time.sleep(0.5)
        jobs = []
        for n, s in enumerate(sessions):
            gpu = {"gpus": "1", "gpu_model": A100} if n == 0 else {}  # the others on CPU: the demo cluster's A100s are few
            page = submit_form(s, stack.url, account_id, display_name=f"shell-{n}", command="sleep infinity", **gpu)
            jobs.append(int(re.search(r"/jobs/(\d+)$", page.url).group(1)))
        for job_id in jobs:
            deadline = time.monotonic() + 60
            while 'id="open-terminal"' not in sessions[jobs.index(job_id)].get(f"{stack.url}/jobs/{job_id}", timeout=10).text:
                assert time.monotonic() < deadline, f"job {job_id} never ran"
                time.sleep(0.5)
        version = int(re.search(r"status\?v=(\d+)", owner.get(f"{stack.url}/jobs/{jobs[0]}", timeout=10).text).group(1))
        print(f"{args.terminals} terminals, {args.logs} logs following, {people} users; gunicorn {args.web_workers} gthread "
              f"workers x {threads} threads; SQLite; kubesim in real time")

        # A keystroke's echo: `cat` on a raw terminal sends each key back as it comes.
        ws = connect(stack.url, jobs[0], owner)
        ws.send(json.dumps({"i": "stty raw -echo; echo rea''dy; cat\n"}))
        read_until(ws, "ready")
        echoes = []
        for n in range(args.keystrokes):
            while ws.receive(timeout=0):  # nothing left over from the key before
                pass
            key = "abcdefghij"[n % 10]
            started = time.perf_counter()
            ws.send(json.dumps({"i": key}))
            read_until(ws, key, timeout=5)
            echoes.append((time.perf_counter() - started) * 1000)
        ws.close()
        print(f"keystroke echo through the portal and exec: p50 {statistics.median(echoes):.1f} ms, "
              f"p95 {percentile(echoes, 95):.1f} ms over {len(echoes)} keys   (goal: p95 < 50 ms)")

        time.sleep(1)
        quiet = pages(stack, owner, jobs[0], version, args.seconds)
        before_rss = rss_kib(stack.web.proc.pid)
        terminals = []
        for n in range(args.terminals):
            terminals.append(connect(stack.url, jobs[n // 3], sessions[n // 3]))
        stop = threading.Event()

        def follow(job_id: int, s: requests.Session) -> None:
            while not stop.is_set():
                with s.get(f"{stack.url}/jobs/{job_id}/logs/follow?tail=0", stream=True, timeout=(5, 90)) as r:
                    for _chunk in r.iter_content(chunk_size=None):
                        if stop.is_set():
                            return
        followers = [threading.Thread(target=follow, args=(jobs[n % len(jobs)], sessions[n % len(sessions)]), daemon=True)
                     for n in range(args.logs)]
        for t in followers:
            t.start()
        time.sleep(2)
        after_rss = rss_kib(stack.web.proc.pid)
        busy = pages(stack, owner, jobs[0], version, args.seconds)
        stop.set()
        print(f"{'':36}{'without':>12}{'with':>12}")
        print(f"{'/healthz req/s (trivial route)':36}{quiet['trivial']:12.0f}{busy['trivial']:12.0f}")
        for key, label in (("jobs", "/jobs (job list), x trivial"), ("status", "polled job status, x trivial")):
            change = (busy[key] / quiet[key] - 1) * 100
            print(f"{label:36}{quiet[key]:12.2f}{busy[key]:12.2f}   {change:+.1f} %   (goal: within 10 %)")
        print(f"web process memory: {before_rss / 1024:.0f} MiB without, {after_rss / 1024:.0f} MiB with; "
              f"{(after_rss - before_rss) / max(1, args.terminals):.0f} KiB per open terminal (logs included)")
        for t in terminals:
            with contextlib.suppress(Exception):  # closed already (idle)
                t.close()
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
