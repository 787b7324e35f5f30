"""The web terminal as its users and an attacker meet it: the portal on a real HTTP server, kubesim
(exec over the websocket channel protocol, a real local shell) and the syncer behind it. The owner
opens a shell, types, resizes, sees nvidia-smi and the exit status; the handshake refuses a
foreign Origin, no session, another user and one terminal too many; an admin may, audited; an
idle terminal closes by itself; opening and closing are in the audit log, keystrokes are not."""
import json
import re
import time

import pytest
import requests
from simple_websocket import Client, ConnectionClosed, ConnectionError as HandshakeRefused

from conftest import Factory
from kubesim_fixtures import wait_for
from process_stack import signed_in, submit_form
from test_browser import serving

A100 = "NVIDIA-A100-SXM4-80GB"


@pytest.fixture
def portal(tmp_path, fresh_sim):
    from portal.cluster.setup import cluster_for
    from portal.sync.syncer import SyncSettings, Syncer

    sim = fresh_sim(time_scale=1)[0]
    with serving(tmp_path, KUBECONFIG=str(sim.write_kubeconfig(tmp_path / "kc")), TERMINAL_IDLE_SECONDS=6.0,
                 TERMINAL_MAX_PER_USER=2, TERMINAL_PING_SECONDS=1.0) as (app, base):
        syncer = Syncer(app, cluster_for(app), settings=SyncSettings(lease_seconds=3, watch_timeout=5)).start()
        make = Factory(app)
        alice, bob = make.user("alice", password="alice-password-1"), make.user("bob", password="bob-password-12")
        make.user("root", password="root-password-1", role="admin")
        lab = make.account("vision-lab", gpu_quota=8, members={alice: "member", bob: "member"})
        yield app, base, lab
        syncer.stop()


def running_job(app, base, lab, session) -> int:
    def inventory():
        from portal.extensions import db
        from portal.models import Node
        with app.app_context():
            n = db.session.query(Node).filter(Node.gpus > 0).count()
            db.session.remove()
            return n
    wait_for(inventory, timeout=30, what="the node inventory")
    page = submit_form(session, base, lab, command="sleep infinity", gpus="1", gpu_model=A100)
    match = re.search(r"/jobs/(\d+)$", page.url)
    assert match, re.findall(r"class=\"error[^>]*>([^<]+)", page.text)
    job_id = int(match.group(1))

    def pods_running():
        from portal.extensions import db
        from portal.models import Job
        with app.app_context():
            job = db.session.get(Job, job_id)
            ok = job.state == "Running" and any(p.get("phase") == "Running" for p in job.pods or [])
            db.session.remove()
            return ok
    wait_for(pods_running, timeout=30, what="the job running")
    return job_id


def cookie_of(session: requests.Session) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


class BrowserLikeClient(Client):
    """simple-websocket's client, with the Host header a browser sends (host and port)."""

    def handshake(self):
        if self.port not in (80, 443):
            self.host = f"{self.host}:{self.port}"
        super().handshake()


def connect(base, job_id, session=None, origin=None) -> Client:
    headers = {"Origin": origin or base}
    if session is not None:
        headers["Cookie"] = cookie_of(session)
    return BrowserLikeClient.connect(base.replace("http://", "ws://") + f"/jobs/{job_id}/terminal/ws", headers=headers)


def handshake(base, job_id, session=None, origin=None) -> int:
    """The status the portal answers a websocket handshake with (requests sends the upgrade headers)."""
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": origin or base}
    get = (session or requests).get
    return get(f"{base}/jobs/{job_id}/terminal/ws", headers=headers, timeout=15, allow_redirects=False).status_code


def read_until(ws: Client, pattern: str, timeout: float = 15) -> str:
    seen, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = ws.receive(timeout=0.5)
        if chunk:
            seen += chunk
            if re.search(pattern, seen):
                return seen
    raise AssertionError(f"{pattern!r} never came: {seen[-2000:]!r}")


def audit(app, action):
    from portal.extensions import db
    from portal.models import AuditEntry
    with app.app_context():
        rows = [(a.actor_name, a.detail) for a in db.session.query(AuditEntry).filter_by(action=action)]
        db.session.remove()
        return rows


def test_the_owner_opens_a_shell_and_the_handshake_refuses_everyone_else(portal):
    app, base, lab = portal
    alice = signed_in(base, "alice", "alice-password-1")
    job_id = running_job(app, base, lab, alice)
    page = alice.get(f"{base}/jobs/{job_id}", timeout=10).text
    assert 'id="open-terminal"' in page
    terminal_page = alice.get(f"{base}/jobs/{job_id}/terminal", timeout=10)
    assert terminal_page.status_code == 200 and f'data-ws="/jobs/{job_id}/terminal/ws?pod=' in terminal_page.text
    ws_url = re.search(r'data-ws="([^"]+)"', terminal_page.text).group(1)
    assert "<noscript>" in terminal_page.text and "token" not in ws_url.lower()  # no secret in the websocket's URL
    assert "script-src 'self';" in terminal_page.headers["Content-Security-Policy"]

    ws = connect(base, job_id, alice)
    ws.send(json.dumps({"r": [100, 30]}))
    ws.send(json.dumps({"i": "echo $((6*7)); stty size; nvidia-smi\n"}))
    out = read_until(ws, r"(?s)42.*30 100.*kubesim")
    assert "A100" in out
    ws.send("not json")  # ignored, like any message that is not one of the two shapes
    ws.send(json.dumps({"i": "exit 7\n"}))
    out = read_until(ws, r"exit status 7")
    with pytest.raises(ConnectionClosed):
        for _ in range(20):
            ws.receive(timeout=0.5)
    opened, closed = audit(app, "job.terminal_open"), audit(app, "job.terminal_close")
    assert [(who, d["owner"]) for who, d in opened] == [("alice", True)]
    assert closed[0][0] == "alice" and closed[0][1]["reason"] == "exited" and closed[0][1]["exit_code"] == 7
    assert not [d for _w, d in opened + closed if "6*7" in json.dumps(d)]  # never what was typed

    # The handshake refuses, before any upgrade: no session, a foreign Origin, another user.
    assert handshake(base, job_id) in (401, 302)
    assert handshake(base, job_id, alice, origin="http://evil.example") == 403
    bob = signed_in(base, "bob", "bob-password-12")
    assert handshake(base, job_id, bob) == 404  # a member of the account, not the owner: nothing here for him
    assert bob.get(f"{base}/jobs/{job_id}/terminal", timeout=10).status_code == 404
    assert 'id="open-terminal"' not in bob.get(f"{base}/jobs/{job_id}", timeout=10).text
    with pytest.raises(HandshakeRefused, match="403"):
        connect(base, job_id, alice, origin="http://evil.example")

    # An admin may, and is recorded as someone else's terminal.
    root = signed_in(base, "root", "root-password-1")
    admin_ws = connect(base, job_id, root)
    admin_ws.send(json.dumps({"i": "echo admin-$((1+1))\n"}))
    read_until(admin_ws, "admin-2")
    admin_ws.close()
    wait_for(lambda: len(audit(app, "job.terminal_close")) == 2, timeout=10, what="the admin's terminal closed")
    assert ("root", False) in [(who, d["owner"]) for who, d in audit(app, "job.terminal_open")]

    # A terminal open when the job is stopped ends, and says so; a finished job opens none.
    last = connect(base, job_id, alice)
    last.send(json.dumps({"i": "echo before-stop\n"}))
    read_until(last, "before-stop")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', alice.get(f"{base}/jobs/{job_id}", timeout=10).text)
    alice.post(f"{base}/jobs/{job_id}/stop", data={"csrf_token": token.group(1)}, timeout=30)
    read_until(last, r"no longer running|exit status", timeout=30)
    wait_for(lambda: handshake(base, job_id, alice) == 409, timeout=20, what="a finished job refused")
    assert alice.get(f"{base}/jobs/{job_id}/terminal", timeout=10).status_code == 409


def test_terminals_are_capped_per_user_and_an_idle_one_closes_by_itself(portal):
    app, base, lab = portal
    alice = signed_in(base, "alice", "alice-password-1")
    job_id = running_job(app, base, lab, alice)
    first, second = connect(base, job_id, alice), connect(base, job_id, alice)
    assert handshake(base, job_id, alice) == 429  # two open: the most one may have here
    first.send(json.dumps({"i": "echo still-here\n"}))
    read_until(first, "still-here")
    # No keystroke and no output for the idle timeout (6 s here): closed, and said so.
    out = read_until(second, r"idle for too long", timeout=20)
    assert "idle" in out
    wait_for(lambda: any(d["reason"] == "idle" for _w, d in audit(app, "job.terminal_close")), timeout=10,
             what="the idle close audited")
    third = connect(base, job_id, alice)  # a place freed
    third.close()


@pytest.fixture
def stack(app, make, tmp_path, schema):
    from process_stack import Stack
    alice = make.user("alice", password="alice-password-1")
    lab = make.account("vision-lab", gpu_quota=8, members={alice: "member"})
    s = Stack(tmp_path, schema, time_scale=1, settings={"CRATER_TERMINAL_MAX_PER_USER": "3"})
    try:
        s.start()
        s.lab = lab
        yield s
    finally:
        s.stop()


def test_under_gunicorn_pages_keep_answering_while_terminals_are_open(app, stack):
    """The production worker model (deploy/gunicorn.conf.py, gthread, two workers here): three
    terminals open and in use, and the pages still answer at once."""
    alice = signed_in(stack.url, "alice", "alice-password-1")
    job_id = running_job(app, stack.url, stack.lab, alice)
    terminals = [connect(stack.url, job_id, alice) for _ in range(3)]
    for n, ws in enumerate(terminals):
        ws.send(json.dumps({"i": f"echo terminal-$((40+{n}))\n"}))
        read_until(ws, f"terminal-{40 + n}")
    for path in ("/healthz", "/", f"/jobs/{job_id}", "/jobs"):
        started = time.monotonic()
        assert alice.get(stack.url + path, timeout=10).status_code == 200
        assert time.monotonic() - started < 5, path
    terminals[0].send(json.dumps({"i": "exit 0\n"}))
    read_until(terminals[0], r"exit status 0")
    for ws in terminals[1:]:
        ws.close()
    wait_for(lambda: len(audit(app, "job.terminal_close")) >= 3, timeout=15, what="the three terminals recorded closed")
    # A hung cluster API: a new terminal is refused with "try again" (503) within the cluster's
    # timeout, before any upgrade; the pages keep answering; nothing is left counted as open.
    stack.api_hang()
    try:
        started = time.monotonic()
        assert handshake(stack.url, job_id, alice) == 503
        assert time.monotonic() - started < 15
        assert alice.get(stack.url + f"/jobs/{job_id}", timeout=10).status_code == 200
    finally:
        stack.api_resume()
    assert audit(app, "job.terminal_close")[-1][1]["reason"] == "cluster error"
