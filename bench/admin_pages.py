"""Benchmark: the admin users page (10,000 users) and accounts page (500 accounts) under gunicorn on
loopback, next to a trivial route measured in the same run, plus SQL queries per request.

    .venv/bin/python bench/admin_pages.py                      # SQLite under a temp dir
    .venv/bin/python bench/admin_pages.py --database-url mysql+pymysql://...   # e.g. MariaDB
    scripts/bench                                              # both, MariaDB started for you

Prints figures; asserts nothing (these machines are shared and noisy). Load comes from wrk when it
is installed (apt-get install wrk), else from a keep-alive Python client.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-key-" + "x" * 32
ADMIN_PASSWORD = "bench admin password"


def fresh_app(url: str):
    """An app on a schema the migrations build from scratch (whatever the database held is dropped)."""
    from flask_migrate import upgrade
    from sqlalchemy import text

    from portal import create_app
    from portal.extensions import db

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET})
    with app.app_context():
        db.drop_all()
        db.session.execute(text("DROP TABLE IF EXISTS alembic_version"))
        db.session.commit()
        upgrade()
    return app


def insert_people(now, users: int, accounts: int) -> tuple[list[int], list[int]]:
    """The admin, `users` researchers and `accounts` labs in bulk; (user ids, account ids)."""
    from sqlalchemy import insert, text

    from portal.extensions import db
    from portal.models import Account, User

    insert_admin(now)
    db.session.execute(insert(User), [
        {"username": f"user{n:05d}", "display_name": f"研究员 {n}", "email": f"user{n}@example.edu", "role": "user",
         "active": True, "auth_source": "oidc", "oidc_issuer": "https://sso", "oidc_subject": f"s{n}", "created_at": now}
        for n in range(users)])
    db.session.execute(insert(Account), [
        {"name": f"lab-{n:04d}", "display_name": f"实验室 {n}", "description": "", "gpu_quota": 64, "created_at": now}
        for n in range(accounts)])
    return ([r[0] for r in db.session.execute(text("SELECT id FROM users ORDER BY id"))],
            [r[0] for r in db.session.execute(text("SELECT id FROM accounts ORDER BY id"))])


def insert_admin(now) -> None:
    """The local administrator the benchmarks sign in as (`login_cookie`)."""
    from sqlalchemy import insert
    from werkzeug.security import generate_password_hash

    from portal.extensions import db
    from portal.models import User

    db.session.execute(insert(User), [
        {"username": "aaa-admin", "role": "admin", "active": True, "auth_source": "local", "display_name": "Admin",
         "email": "admin@example.edu", "password_hash": generate_password_hash(ADMIN_PASSWORD), "created_at": now}])


def seed(url: str, users: int, accounts: int) -> None:
    """Fresh schema (real migrations) and the rows, inserted in bulk."""
    from sqlalchemy import insert, text

    from portal.extensions import db
    from portal.models import Account, AccountGpuQuota, Membership, User, utcnow

    app = fresh_app(url)
    with app.app_context():
        now = utcnow()
        insert_admin(now)
        db.session.execute(insert(User), [
            {"username": f"user{n:05d}", "display_name": f"研究员 {n}", "email": f"user{n}@example.edu",
             "role": "user", "active": n % 50 != 0, "auth_source": "oidc", "oidc_issuer": "https://sso.example.edu",
             "oidc_subject": f"s{n}", "created_at": now, "last_login_at": now} for n in range(users)])
        db.session.execute(insert(Account), [
            {"name": f"lab-{n:04d}", "display_name": f"实验室 {n}", "description": "", "gpu_quota": 16,
             "cpu_quota": 256, "memory_quota_gib": 1024, "max_jobs": 20, "created_at": now} for n in range(accounts)])
        ids = [row[0] for row in db.session.execute(text("SELECT id FROM accounts ORDER BY id"))]
        user_ids = [row[0] for row in db.session.execute(text("SELECT id FROM users ORDER BY id"))]
        db.session.execute(insert(AccountGpuQuota), [
            {"account_id": a, "gpu_model": model, "gpus": 8} for a in ids for model in ("A100", "RTX-4090")])
        db.session.execute(insert(Membership), [
            {"account_id": a, "user_id": user_ids[(i * 7 + k) % len(user_ids)], "role": "manager" if k == 0 else "member",
             "created_at": now} for i, a in enumerate(ids) for k in range(3)])
        db.session.commit()
        db.engine.dispose()


def count_queries(url: str, paths: list[str]) -> dict[str, int]:
    from sqlalchemy import event

    from portal import create_app
    from portal.extensions import db

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    client.post("/login", data={"username": "aaa-admin", "password": ADMIN_PASSWORD})
    with app.app_context():
        engine = db.engine
    counts = {}
    for path in paths:
        client.get(path)
        seen = []
        listener = lambda *a, seen=seen: seen.append(1)  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        assert client.get(path).status_code == 200, path
        event.remove(engine, "before_cursor_execute", listener)
        counts[path] = len(seen)
    return counts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def gunicorn(url: str, workers: int):
    port = free_port()
    env = dict(os.environ, CRATER_DATABASE_URL=url, CRATER_SECRET_KEY=SECRET, CRATER_ENV="development")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "-w", str(workers),
         "-b", f"127.0.0.1:{port}", "--log-level", "warning", "app:app"], cwd=ROOT, env=env)  # as production runs it
    try:
        for _ in range(100):
            try:
                HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def login_cookie(port: int) -> str:
    conn = HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/login")
    response = conn.getresponse()
    page = response.read().decode()
    cookie = response.getheader("Set-Cookie").split(";")[0]
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    from urllib.parse import urlencode
    body = urlencode({"username": "aaa-admin", "password": ADMIN_PASSWORD, "csrf_token": token, "next": "/"})
    conn.request("POST", "/login", body=body, headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    response.read()
    assert response.status == 302, response.status
    return response.getheader("Set-Cookie").split(";")[0]


def load_wrk(port: int, path: str, cookie: str, seconds: int, connections: int) -> tuple[float, float]:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Cookie: {cookie}",
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    value, unit = float(p99.group(1)), p99.group(2)
    ms = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise SystemExit(f"wrk saw error responses for {path}:\n{out}")
    return rps, ms


def load_python(port: int, path: str, cookie: str, seconds: int, connections: int,
                headers: dict | None = None) -> tuple[float, float]:
    """(requests per second, p99 ms) from `connections` keep-alive clients; any 2xx counts (an
    unchanged status poll answers 204), anything else stops the benchmark."""
    deadline = time.perf_counter() + seconds
    sent = {**(headers or {}), "Cookie": cookie}
    latencies: list[float] = []
    lock = threading.Lock()

    def worker():
        conn = HTTPConnection("127.0.0.1", port)
        mine = []
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            conn.request("GET", path, headers=sent)
            response = conn.getresponse()
            response.read()
            if not 200 <= response.status < 300:
                raise SystemExit(f"the python client saw {response.status} for {path}")
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    return len(latencies) / (time.perf_counter() - start), latencies[int(len(latencies) * 0.99)] * 1000


def arguments(doc: str, **defaults) -> argparse.ArgumentParser:
    """The options every page benchmark takes; `defaults`: its own integer options."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--database-url", default="", help="default: SQLite under a temp dir")
    for name, value in dict(defaults, seconds=5, connections=8, workers=2).items():
        parser.add_argument(f"--{name}", type=int, default=value)
    return parser


def database_url(args) -> str:
    return args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='crater-bench-')}/bench.sqlite3"


def main() -> None:
    args = arguments(__doc__, users=10_000, accounts=500).parse_args()
    url = database_url(args)
    backend = url.split(":", 1)[0]
    print(f"seeding {args.users} users and {args.accounts} accounts into {backend} ...", flush=True)
    seed(url, args.users, args.accounts)

    pages = {"trivial (/healthz)": "/healthz", "admin users, page 1": "/admin/users",
             "admin users, search + page 3": "/admin/users?q=user0&page=3", "admin accounts, page 1": "/admin/accounts",
             "admin accounts, page 10": "/admin/accounts?page=10"}
    queries = count_queries(url, [p for p in pages.values() if p != "/healthz"])
    load = load_wrk if shutil.which("wrk") else load_python
    print(f"load generator: {'wrk' if load is load_wrk else 'python keep-alive client'}, "
          f"{args.connections} connections, {args.seconds}s per route, gunicorn {args.workers} sync workers", flush=True)
    results = {}
    with gunicorn(url, args.workers) as port:
        cookie = login_cookie(port)
        for name, path in pages.items():
            load(port, path, cookie, 1, args.connections)  # warm-up
            results[name] = load(port, path, cookie, args.seconds, args.connections)
    trivial = results["trivial (/healthz)"][0]
    print(f"\n{'route':32} {'req/s':>8} {'p99 ms':>8} {'x trivial':>10} {'SQL/req':>8}   [{backend}]")
    for name, path in pages.items():
        rps, p99 = results[name]
        q = queries.get(path, 0)
        print(f"{name:32} {rps:8.0f} {p99:8.1f} {rps / trivial:10.2f} {q:8d}")
    if not args.database_url:
        shutil.rmtree(url.removeprefix("sqlite:///").rsplit("/", 1)[0], ignore_errors=True)


if __name__ == "__main__":
    main()
