"""craterctl: the Crater portal from a terminal or a script, through its API (/api/v1).

    craterctl login https://crater.example.edu      # paste a personal access token (Settings -> Access tokens)
    craterctl submit job.yaml                       # the YAML a job page shows as "Submitted spec"
    craterctl ls --state active
    craterctl get 42 -o yaml
    craterctl logs 42 -f
    craterctl stop 42
    craterctl quota
    craterctl gpus

The token is kept in $XDG_CONFIG_HOME/crater/config.json (~/.config/crater/config.json), mode
0600; CRATER_URL and CRATER_TOKEN override it (for CI jobs). Output for scripts: -o json or
-o yaml, and `ls -o ids`. Exit codes: 0 done, 1 other error, 2 wrong usage, 3 not signed in or
the token refused, 4 not found, 5 not possible now (conflict, quota), 6 invalid input (each
field's error is printed), 7 rate limited, 8 the portal cannot be reached.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
import unicodedata
from pathlib import Path

import requests
import yaml

TIMEOUT = (5, 60)
EXIT = {401: 3, 403: 3, 404: 4, 409: 5, 422: 6, 429: 7}


class Failure(Exception):
    def __init__(self, message: str, code: int = 1, fields: dict | None = None):
        super().__init__(message)
        self.message, self.code, self.fields = message, code, fields or {}


# ---- configuration ------------------------------------------------------------------------------

def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "crater" / "config.json"


def load_config() -> dict:
    path = config_path()
    try:
        stored = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as exc:
        raise Failure(f"cannot read {path} ({_why(exc)}): run `craterctl login URL` again", 3) from None
    if not isinstance(stored, dict):
        raise Failure(f"{path} is not craterctl's: run `craterctl login URL` again", 3)
    url = os.environ.get("CRATER_URL") or stored.get("url", "")
    token = os.environ.get("CRATER_TOKEN") or stored.get("token", "")
    if not url or not token:
        raise Failure("not signed in: run `craterctl login URL` (or set CRATER_URL and CRATER_TOKEN)", 3)
    return {"url": url.rstrip("/"), "token": token}


def save_config(url: str, token: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token}, f)
    os.chmod(path, 0o600)  # an existing file keeps its mode on open: make sure
    return path


# ---- the API ------------------------------------------------------------------------------------

class Client:
    def __init__(self, url: str, token: str):
        self.url, self.session = url.rstrip("/"), requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json",
                                     "User-Agent": "craterctl"})

    def call(self, method: str, path: str, *, stream: bool = False, timeout=TIMEOUT, **kw) -> requests.Response:
        try:
            response = self.session.request(method, f"{self.url}/api/v1{path}", stream=stream, timeout=timeout, **kw)
        except requests.ConnectionError as exc:
            raise Failure(f"cannot reach {self.url}: {exc.__class__.__name__}", 8) from None
        except requests.Timeout:
            raise Failure(f"{self.url} did not answer in time; try again", 8) from None
        if response.status_code >= 400:
            raise problem(response)
        return response

    def json(self, method: str, path: str, **kw):
        response = self.call(method, path, **kw)
        return response.json() if response.content else None


def problem(response: requests.Response) -> Failure:
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = body.get("detail") or body.get("title") or response.reason or "error"
    if response.status_code == 429 and response.headers.get("Retry-After"):
        detail += f" (try again in {response.headers['Retry-After']} s)"
    return Failure(f"{detail} [{response.status_code}]", EXIT.get(response.status_code, 1), body.get("errors"))


# ---- output -------------------------------------------------------------------------------------

def emit(data, fmt: str, table=None) -> None:
    if fmt == "json":
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif fmt == "yaml":
        print(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), end="")
    else:
        table(data)


def width(text: str) -> int:
    """Columns a terminal gives `text`: two for wide (CJK) characters, none for combining marks."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def print_table(rows: list[list], header: list[str]) -> None:
    cells = [header] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(width(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c + " " * (w - width(c)) for c, w in zip(row, widths)).rstrip())


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or exc.__class__.__name__


def read_spec_file(name: str) -> str:
    """The spec's text: a one-line error (exit 2) for a file that is missing, unreadable or not text."""
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except IsADirectoryError:
        raise Failure(f"{name} is a folder, not a spec file", 2) from None
    except UnicodeDecodeError:
        raise Failure(f"{name} is not a text file (UTF-8 YAML or JSON)", 2) from None
    except OSError as exc:
        raise Failure(f"cannot read {name}: {_why(exc)}", 2) from None


STATES = ("Queued", "Submitting", "Pending", "Running", "Succeeded", "Failed", "Stopped", "Lost", "active")


def state_arg(value: str) -> str:
    """A job state in any case (queued, RUNNING) as the API spells it."""
    for state in STATES:
        if value.strip().lower() == state.lower():
            return state
    raise argparse.ArgumentTypeError(f"not a job state: {value!r} (one of: {', '.join(STATES)})")


def account_id(client: Client, account: str) -> int:
    """An account's id from its id or its name (among the accounts the token may see)."""
    if account.isdigit():
        return int(account)
    params, names = {"limit": 200}, []
    for everyone in ("false", "true"):
        params.update(all=everyone)
        params.pop("cursor", None)
        while True:
            try:
                page = client.json("GET", "/accounts", params=params)
            except Failure:
                if everyone == "true":  # not an admin: their own accounts were all
                    break
                raise
            for a in page["items"]:
                if a["name"] == account:
                    return a["id"]
                names.append(a["name"])
            if not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
    known = ", ".join(sorted(set(names))[:10]) or "none"
    raise Failure(f"no account named {account!r} (yours: {known})", 4)


def job_rows(items: list[dict]) -> None:
    rows = []
    for j in items:
        state = j["state"] + (f" ({j['reason']})" if j.get("reason") and j["state"] not in ("Running", "Succeeded") else "")
        if j["state"] == "Queued" and j.get("queue_position"):
            state += f" #{j['queue_position']}"
        rows.append([j["id"], j["name"], j["type"], state, j.get("gpus", 0), j.get("account", ""), j.get("created_at", "")])
    print_table(rows, ["ID", "NAME", "TYPE", "STATE", "GPUS", "ACCOUNT", "SUBMITTED"])


def job_table(j: dict) -> None:
    print(f"Job {j['id']}: {j['name']} ({j['type']}) in {j['account']}, by {j['user']}")
    print(f"State:   {j['state']}" + (f" - {j['reason_text']}" if j.get("reason_text") else ""))
    if j.get("message"):
        print(f"Message: {j['message']}")
    if j.get("queue"):
        q = j["queue"]
        print(f"Queue:   place {q.get('position')} of {q.get('waiting')}; waits for: {q.get('waiting_for') or '-'}; "
              f"estimated start {q.get('estimated_start') or 'unknown'}")
    print(f"Image:   {j['image']}")
    print(f"GPUs:    {j['gpus']}" + (f" {j['gpu_model']}" if j.get("gpu_model") else "") + f", workers {j['workers']}")
    for key in ("created_at", "started_at", "finished_at"):
        if j.get(key):
            print(f"{key.split('_')[0].capitalize() + ':':9}{j[key]}")
    for p in j.get("pods") or []:
        print(f"Pod:     {p['name']} {p['phase']} on {p['node'] or '-'} (restarts {p['restarts']})")


# ---- commands -----------------------------------------------------------------------------------

def cmd_login(args) -> int:
    url = args.url.rstrip("/")
    if args.token_stdin:
        token = sys.stdin.readline().strip()
    elif args.token:
        token = args.token
    else:
        token = getpass.getpass(f"Token (create one at {url}/settings/tokens): ").strip()
    if not token:
        raise Failure("no token given", 2)
    me = Client(url, token).json("GET", "/me")
    path = save_config(url, token)
    scope = (me.get("token") or {}).get("scope", "?")
    print(f"Signed in to {url} as {me['username']} (token {me['token']['name']}, {scope}); kept in {path}")
    return 0


def cmd_submit(args, client: Client) -> int:
    text = read_spec_file(args.file)
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        raise Failure(f"{args.file} is not YAML{at}: {getattr(exc, 'problem', None) or exc}", 6) from None
    if not isinstance(spec, dict):
        raise Failure(f"{args.file} must hold a mapping of the spec's fields", 6)
    if args.account:
        spec.pop("account_id", None)
        spec.pop("account", None)
        if args.account.isdigit():
            spec["account_id"] = int(args.account)
        else:
            spec["account"] = args.account
    if args.name:
        spec["display_name"] = args.name
    if args.when_full:
        spec["when_full"] = args.when_full
    response = client.call("POST", "/jobs", json=spec)
    job = response.json()
    if args.output in ("json", "yaml"):
        emit(job, args.output)
    else:
        words = f": {job['queue']['waiting_for']}" if job.get("queue") and job["queue"].get("waiting_for") else ""
        again = " (already submitted with this idempotency_key)" if response.status_code == 200 else ""
        borrowed = " (borrowed: on idle GPUs beyond the account's quota; may be preempted)" if job.get("borrowed") else ""
        print(f"job {job['id']} {job['state']}{borrowed}{words}{again}")
    return 1 if job.get("reason") == "SubmitError" else 0


def cmd_ls(args, client: Client) -> int:
    account = account_id(client, args.account) if args.account else None
    params = {k: v for k, v in {"scope": args.scope, "state": args.state, "type": args.type, "account": account,
                                "q": args.q, "sort": args.sort, "limit": args.limit}.items() if v not in (None, "")}
    items, path = [], "/jobs"
    while True:
        page = client.json("GET", path, params=params)
        items += page["items"]
        if not args.all or not page.get("next_cursor"):
            break
        params["cursor"] = page["next_cursor"]
    if args.output == "ids":
        for j in items:
            print(j["id"])
    else:
        emit(items, args.output, job_rows)
    return 0


def cmd_get(args, client: Client) -> int:
    emit(client.json("GET", f"/jobs/{args.id}"), args.output, job_table)
    return 0


def cmd_spec(args, client: Client) -> int:
    if args.output == "json":
        emit(client.json("GET", f"/jobs/{args.id}/spec"), "json")
    else:  # exactly the YAML the job page shows
        sys.stdout.write(client.call("GET", f"/jobs/{args.id}/spec", params={"format": "yaml"}).text)
    return 0


def cmd_logs(args, client: Client) -> int:
    if not args.follow:
        response = client.call("GET", f"/jobs/{args.id}/logs", params={"tail": args.tail, "pod": args.pod})
        sys.stdout.write(response.text)
        if response.headers.get("X-Crater-Log-Unavailable"):  # no log yet, or the cluster cannot say now
            print(f"[craterctl] {response.headers['X-Crater-Log-Unavailable']}", file=sys.stderr)
        return 0
    tail, told = args.tail, False
    while True:
        response = client.call("GET", f"/jobs/{args.id}/logs", params={"tail": tail, "pod": args.pod, "follow": "true"},
                               stream=True, timeout=(5, 90))
        if response.headers.get("X-Crater-Log-Unavailable") and not told:
            print(f"[craterctl] {response.headers['X-Crater-Log-Unavailable']}; waiting", file=sys.stderr)
            told = True
        for chunk in response.iter_content(chunk_size=None):
            sys.stdout.write(chunk.decode("utf-8", errors="replace"))
            sys.stdout.flush()
        job = client.json("GET", f"/jobs/{args.id}")
        if job["state"] not in ("Queued", "Submitting", "Pending", "Running"):
            print(f"[craterctl] job {job['id']} {job['state']}", file=sys.stderr)
            return 0
        tail = 0  # the stream ended early (a time cap, a quiet minute): go on with what is new
        time.sleep(1 if response.headers.get("X-Crater-Log") == "follow" else 2)


def cmd_stop(args, client: Client) -> int:
    job = client.json("POST", f"/jobs/{args.id}/stop")
    if args.output in ("json", "yaml"):
        emit(job, args.output)
    else:
        print(f"job {job['id']} {job['state']} ({job['reason']})")
    return 0


def cmd_quota(args, client: Client) -> int:
    accounts = client.json("GET", "/accounts")["items"]

    def table(items):
        rows = []
        for a in items:
            q, u = a["quota"], a["used"]
            rows.append([a["name"], a.get("role") or "", f"{u.get('gpus', 0)}/{q['gpus'] if q['gpus'] is not None else '-'}",
                         f"{u.get('cpu', 0):g}/{q['cpu'] if q['cpu'] is not None else '-'}",
                         f"{u.get('memory_gib', 0):g}/{q['memory_gib'] if q['memory_gib'] is not None else '-'}",
                         f"{u.get('jobs', 0)}/{q['max_jobs'] if q['max_jobs'] is not None else '-'}", a.get("queued", 0)])
        print_table(rows, ["ACCOUNT", "ROLE", "GPUS", "CPU", "MEMORY GIB", "JOBS", "QUEUED"])
    emit(accounts, args.output, table)
    return 0


def cmd_gpus(args, client: Client) -> int:
    items = client.json("GET", "/gpus")["items"]
    emit(items, args.output, lambda rows: print_table(
        [[g["model"] or "(unlabelled)", g["total"], g["used"], g["free"], g["largest_free_on_one_node"], g["waiting"]]
         for g in rows], ["MODEL", "TOTAL", "USED", "FREE", "LARGEST FREE", "WAITING"]))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="craterctl", description="The Crater GPU portal from a terminal.",
                                epilog="Exit codes: 0 done, 1 error, 2 usage, 3 not signed in or refused, 4 not found, "
                                       "5 not possible now, 6 invalid input, 7 rate limited, 8 unreachable.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formats = ["table", "json", "yaml"]

    s = sub.add_parser("login", help="keep a personal access token for a portal")
    s.add_argument("url", help="the portal, e.g. https://crater.example.edu")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--token-stdin", action="store_true", help="read the token from standard input")
    g.add_argument("--token", help="the token (visible to other users in the process list: prefer --token-stdin)")
    s.set_defaults(func=cmd_login, anonymous=True)

    s = sub.add_parser("submit", help="submit a job from a spec file (YAML or JSON)")
    s.add_argument("spec", nargs="?", metavar="FILE", help="the spec (as -f FILE); - reads standard input")
    s.add_argument("-f", "--file", help="the spec; - reads standard input")
    s.add_argument("--account", help="the account's name or id (instead of the spec's)")
    s.add_argument("--name", help="the job's name (instead of the spec's)")
    s.add_argument("--when-full", dest="when_full", choices=("queue", "refuse", "borrow"),
                   help="over the account's quota for now: wait in its queue (default), refuse, or borrow: run now on "
                        "idle GPUs beyond the quota (may be preempted and requeued)")
    s.add_argument("-o", "--output", choices=formats, default="table")
    s.set_defaults(func=cmd_submit)

    s = sub.add_parser("ls", help="list jobs")
    s.add_argument("--scope", choices=["mine", "account", "all"], default="mine")
    s.add_argument("--state", type=state_arg, help="a state (running, queued, ...; any case) or active")
    s.add_argument("--type", choices=["jupyter", "batch", "distributed"])
    s.add_argument("--account", help="an account's name or id")
    s.add_argument("-q", help="words in the name or image, or a job id")
    s.add_argument("--sort", choices=["newest", "oldest", "name", "state", "gpus"], default="newest")
    s.add_argument("--limit", type=int, default=50, help="jobs per page (1-200)")
    s.add_argument("--all", action="store_true", help="every page, not just the first")
    s.add_argument("-o", "--output", choices=formats + ["ids"], default="table")
    s.set_defaults(func=cmd_ls)

    s = sub.add_parser("get", help="one job")
    s.add_argument("id", type=int)
    s.add_argument("-o", "--output", choices=formats, default="table")
    s.set_defaults(func=cmd_get)

    s = sub.add_parser("spec", help="a job's spec, to submit again (a clone)")
    s.add_argument("id", type=int)
    s.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    s.set_defaults(func=cmd_spec)

    s = sub.add_parser("logs", help="a job's log")
    s.add_argument("id", type=int)
    s.add_argument("-f", "--follow", action="store_true", help="keep printing as it grows, until the job ends")
    s.add_argument("--tail", type=int, default=500, help="lines to start with (0-10000)")
    s.add_argument("--pod", default="", help="a pod of the job (default: the first)")
    s.set_defaults(func=cmd_logs)

    s = sub.add_parser("stop", help="stop a job (or cancel a queued one)")
    s.add_argument("id", type=int)
    s.add_argument("-o", "--output", choices=formats, default="table")
    s.set_defaults(func=cmd_stop)

    s = sub.add_parser("quota", help="my accounts' quotas and what is in use")
    s.add_argument("-o", "--output", choices=formats, default="table")
    s.set_defaults(func=cmd_quota)

    s = sub.add_parser("gpus", help="GPUs per model: total, used, free")
    s.add_argument("-o", "--output", choices=formats, default="table")
    s.set_defaults(func=cmd_gpus)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "submit":
        if args.spec and args.file and args.spec != args.file:
            p.error("submit takes one spec file: FILE or -f FILE, not both")
        args.file = args.file or args.spec
        if not args.file:
            p.error("submit needs a spec file: craterctl submit job.yaml (or -f job.yaml; - reads standard input)")
    try:
        if getattr(args, "anonymous", False):
            return args.func(args)
        config = load_config()
        return args.func(args, Client(config["url"], config["token"]))
    except Failure as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for field, message in (exc.fields or {}).items():
            print(f"  {field}: {message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
