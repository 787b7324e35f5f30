"""Benchmark: the JSON API with 200,000 jobs, under gunicorn on loopback, next to a trivial route
measured in the same run; and what token authentication costs.

    .venv/bin/python bench/api.py --database-url mysql+pymysql://...   # MariaDB (the goal's case)
    .venv/bin/python bench/api.py                                      # SQLite under a temp dir

Figures: requests per second (wrk, 8 connections) of GET /api/v1/jobs pages as a ratio to
/healthz (goal: the first page at least 0.2x); the token's cost per request, in-process
(`tokens.authenticate`: one indexed lookup and a SHA-256, goal at most 0.5 ms) and over HTTP (the
same route with the token and with the session cookie, sequential p50). Prints; asserts nothing.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from http.client import HTTPConnection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from admin_pages import arguments, database_url, gunicorn, login_cookie  # noqa: E402
from job_list import load_wrk, seed, sequential  # noqa: E402


def make_token(url: str) -> str:
    from portal import create_app
    from portal.extensions import db
    from portal.models import User
    from portal.services import tokens
    from portal.services.context import Actor

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-secret-" + "x" * 32})
    with app.app_context():
        admin = db.session.query(User).filter_by(username="aaa-admin").one()
        _row, token = tokens.create(Actor(admin), "bench", "read", 30)
        db.engine.dispose()
    return token


def authenticate_cost(url: str, token: str, rounds: int) -> dict[str, float]:
    """Mean ms, in-process on one connection: tokens.authenticate (the token's row with its user,
    and the checks), what a session costs instead (its user by id), the hash alone, a bare round trip."""
    import hashlib

    from sqlalchemy import text

    from portal import create_app
    from portal.extensions import db
    from portal.models import User
    from portal.services import tokens

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-secret-" + "x" * 32})
    with app.app_context():
        _row, user = tokens.authenticate(token)
        user_id = user.id

        def mean(fn) -> float:
            t = time.perf_counter()
            for _ in range(rounds):
                fn()
            return (time.perf_counter() - t) / rounds * 1000
        figures = {"token": mean(lambda: tokens.authenticate(token)),
                   "session": mean(lambda: (db.session.expire_all(), db.session.get(User, user_id))),
                   "hash": mean(lambda: hashlib.sha256(token.encode()).hexdigest()),
                   "round trip": mean(lambda: db.session.execute(text("SELECT 1")).scalar())}
        db.engine.dispose()
    return figures


def sequential_p50(port: int, path: str, headers: dict, count: int) -> float:
    return statistics.median(sequential(port, path, headers, count)) * 1000


def deep_cursor(port: int, token: str, pages: int) -> str:
    """The URL of page `pages` of every job, reached by following next links."""
    conn = HTTPConnection("127.0.0.1", port)
    url = "/api/v1/jobs?scope=all&limit=50"
    for _ in range(pages):
        conn.request("GET", url, headers={"Authorization": f"Bearer {token}"})
        url = json.loads(conn.getresponse().read())["links"]["next"]
    return url


def main() -> None:
    args = arguments(__doc__, jobs=200_000, users=2_000, accounts=200, active=60, rounds=2000).parse_args()
    url = database_url(args)
    print(f"seeding {args.jobs} jobs into {url.split(':', 1)[0]} ...", flush=True)
    t = time.perf_counter()
    seed(url, args.jobs, args.users, args.accounts, args.active)
    token = make_token(url)
    print(f"  seeded in {time.perf_counter() - t:.0f} s", flush=True)
    cost = authenticate_cost(url, token, args.rounds)
    print(f"in-process: the token's lookup and checks {cost['token']:.3f} ms, a session's user instead "
          f"{cost['session']:.3f} ms: the token adds {cost['token'] - cost['session']:+.3f} ms (goal <= 0.5 ms); "
          f"the hash {cost['hash'] * 1000:.1f} us; a bare round trip {cost['round trip']:.3f} ms", flush=True)
    os.environ["CRATER_RATE_LIMIT_API"] = "100000000 per minute"  # measured here: the work, not the limit
    with gunicorn(url, args.workers) as port:
        cookie = login_cookie(port)
        auth = {"Authorization": f"Bearer {token}"}
        routes = [("trivial (/healthz)", "/healthz", {}),
                  ("GET /api/v1/jobs, mine (5,000), first page", "/api/v1/jobs", auth),
                  ("GET /api/v1/jobs, all (200,000), first page", "/api/v1/jobs?scope=all", auth),
                  ("GET /api/v1/jobs, all, page 40 by cursor", deep_cursor(port, token, 40), auth),
                  ("GET /api/v1/jobs, all, state=Failed", "/api/v1/jobs?scope=all&state=Failed", auth),
                  ("GET /api/v1/jobs, all, sorted by name", "/api/v1/jobs?scope=all&sort=name", auth),
                  ("GET /api/v1/me", "/api/v1/me", auth)]
        trivial = None
        for label, path, headers in routes:
            sequential_p50(port, path, headers, 20)
            rps = load_wrk(port, path, headers, args.seconds, args.connections)
            trivial = trivial or rps
            print(f"  {label:48s} {rps:8.0f} req/s = {rps / trivial:4.2f} x trivial", flush=True)
        with_token = sequential_p50(port, "/api/v1/gpus", auth, 500)
        with_cookie = sequential_p50(port, "/api/v1/gpus", {"Cookie": cookie}, 500)
        print(f"GET /api/v1/gpus sequential p50: token {with_token:.2f} ms, session cookie {with_cookie:.2f} ms "
              f"(difference {with_token - with_cookie:+.2f} ms)", flush=True)


if __name__ == "__main__":
    main()
