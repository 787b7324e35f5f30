"""A terminal in the browser into a running job's pod: the page (xterm.js, vendored) and its
websocket, which the web process bridges to Kubernetes exec through the official client.

The websocket refuses at the handshake (an HTTP error, before any upgrade) a request without a
signed-in session, from a foreign Origin (cross-site websocket hijacking), for a job that is not
the caller's (admins may, audited) or not running, beyond the open terminals a user may have, or
when the cluster does not answer. Messages from the browser are JSON: {"i": "keys"} input,
{"r": [cols, rows]} a resize. Output goes back as text. Opening and closing are audited (never
what is typed). The bridge pings the browser, ends after the idle timeout and the maximum
duration, and when the job stops running. Worker model: see deploy/README.md (gthread)."""
from __future__ import annotations

import contextlib
import json
import socket as socket_module
import threading
import time
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from simple_websocket import ConnectionClosed, Server

from ..cluster.client import ClusterError
from ..models import utcnow
from ..security import CSP
from ..services import jobs, terminal
from .context import actor, cluster

bp = Blueprint("terminal", __name__)

MAX_MESSAGE = 64 * 1024


@bp.get("/jobs/<int:job_id>/terminal")
@login_required
def page(job_id):
    t = terminal.target(actor(), job_id, request.args.get("pod", ""))
    job = jobs.get_job(actor(), job_id)
    config = current_app.config
    html = render_template("jobs/terminal.html", job=job, target=t,
                           ws_path=_path(url_for("terminal.socket", job_id=job.id, pod=t.pod)),
                           idle_seconds=config["TERMINAL_IDLE_SECONDS"], longest_seconds=config["TERMINAL_MAX_SECONDS"])
    response = Response(html, mimetype="text/html")
    # xterm.js styles its rows with <style> elements: inline styles allowed on this page alone
    # (scripts stay 'self' only).
    response.headers["Content-Security-Policy"] = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
    return response


def _path(url: str) -> str:
    """A websocket rule's URL is built absolute (ws://host/...): the page wants the same-origin path."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def same_origin() -> bool:
    """The browser's Origin is the portal itself (or one configured as trusted)."""
    origin = (request.headers.get("Origin") or "").rstrip("/")
    scheme = {"ws": "http", "wss": "https"}.get(request.scheme, request.scheme)  # a websocket request's URL is ws://
    trusted = {f"{scheme}://{request.host}"} | set(current_app.config.get("TRUSTED_ORIGINS", ()))
    return bool(origin) and origin in trusted


class _Upgraded(Response):
    """What a view returns once its websocket has closed: the server already wrote everything on
    the socket, so nothing more is sent (what each server expects to be told differs)."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def __call__(self, environ, start_response):
        if self.mode == "gunicorn":
            raise StopIteration()
        if self.mode == "werkzeug":  # the development server writes a response after: end the socket first
            with contextlib.suppress(OSError):
                environ["werkzeug.socket"].shutdown(socket_module.SHUT_RDWR)
            return super().__call__(environ, start_response)
        return []


@bp.route("/jobs/<int:job_id>/terminal/ws", websocket=True)
def socket(job_id):
    if not current_user.is_authenticated:
        abort(401)
    if not same_origin():
        abort(403)
    who = actor()
    config = current_app.config
    t = terminal.target(who, job_id, request.args.get("pod", ""))
    session_id = terminal.open_session(who, t, utcnow(), config["TERMINAL_MAX_PER_USER"], config["TERMINAL_PING_SECONDS"])
    try:
        shell = cluster().exec_shell(t.pod)
    except ClusterError as exc:
        terminal.close_session(who, session_id, utcnow(), "cluster error")
        return Response(_("The cluster could not open a shell now: %(error)s Try again in a minute.", error=exc.message),
                        status=503, mimetype="text/plain")
    ws = Server(request.environ, ping_interval=config["TERMINAL_PING_SECONDS"], max_message_size=MAX_MESSAGE)
    reason, code = Bridge(ws, shell, who, session_id, job_id, config).run()
    terminal.close_session(who, session_id, utcnow(), reason, code)
    return _Upgraded(ws.mode)


class Bridge:
    """Keys from the browser to the pod's shell, output from the shell to the browser (a thread),
    until one side ends, the terminal idles or lasts too long, or the job stops running."""

    def __init__(self, ws: Server, shell, who, session_id: int, job_id: int, config):
        self.ws, self.shell, self.who, self.session_id, self.job_id = ws, shell, who, session_id, job_id
        self.idle, self.longest = config["TERMINAL_IDLE_SECONDS"], config["TERMINAL_MAX_SECONDS"]
        self.beat_every = config["TERMINAL_PING_SECONDS"]
        self.last = time.monotonic()
        self.done = threading.Event()
        self.ended = ""

    def run(self) -> tuple[str, int | None]:
        started = next_beat = time.monotonic()
        pump = threading.Thread(target=self._output, daemon=True)
        pump.start()
        reason = ""
        try:
            while not self.done.is_set():
                message = self.ws.receive(timeout=1)

                now = time.monotonic()
                if message is not None:
                    self.last = now
                    self._input(message)
                if now - self.last > self.idle:
                    reason = "idle"
                elif now - started > self.longest:
                    reason = "too long"
                elif now >= next_beat:
                    next_beat = now + self.beat_every
                    terminal.beat(self.session_id, utcnow())
                    if not terminal.job_running(self.job_id):
                        reason = "job ended"
                if reason:
                    break
        except ConnectionClosed:
            reason = "closed by the user"
        finally:
            self.done.set()
        pump.join(3)
        reason = reason or self.ended or "exited"
        code = None
        with contextlib.suppress(Exception):
            if not self.shell.is_open():
                code = self.shell.returncode
        with contextlib.suppress(Exception):
            self.shell.close()
        words = {"idle": _("The terminal was idle for too long and was closed."),
                 "too long": _("The terminal reached its longest time and was closed."),
                 "job ended": _("The job is no longer running."),
                 "cluster error": _("The cluster stopped answering."),
                 "exited": _("The shell ended (exit status %(code)s).", code=code if code is not None else "?")}
        with contextlib.suppress(Exception):
            if reason in words:
                self.ws.send(f"\r\n[{words[reason]}]\r\n")
            self.ws.close(1000, reason)
        return reason, code

    def _input(self, message) -> None:
        try:
            data = json.loads(message)
        except (TypeError, ValueError):
            return
        if not isinstance(data, dict):
            return
        keys = data.get("i")
        if isinstance(keys, str) and keys:
            self.shell.write_stdin(keys)
        size = data.get("r")
        if isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) and 0 < n < 1000 for n in size):
            self.shell.write_channel(4, json.dumps({"Width": size[0], "Height": size[1]}))

    def _output(self) -> None:
        try:
            while not self.done.is_set() and self.shell.is_open():
                self.shell.update(timeout=1)
                out = ""
                if self.shell.peek_stdout():
                    out += self.shell.read_stdout()
                if self.shell.peek_stderr():
                    out += self.shell.read_stderr()
                if out:
                    self.last = time.monotonic()
                    self.ws.send(out)
            self.ended = self.ended or "exited"
        except ConnectionClosed:
            self.ended = "closed by the user"
        except Exception:  # noqa: BLE001  the cluster's side broke: the terminal ends and says so
            self.ended = "cluster error"
        finally:
            self.done.set()
