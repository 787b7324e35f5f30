"""pods/exec as a cluster answers it: the websocket channel protocols (v5.channel.k8s.io and
v4.channel.k8s.io), so `kubectl exec` and the kubernetes client's `stream` work against kubesim.

A development tool, and it says so: the command runs as a REAL process on kubesim's own machine,
as kubesim's user, in a scratch folder per pod (under KUBESIM_EXEC_ROOT, default a folder in the
system's temporary directory), with only the container's environment (its literal `env` values,
HOME, HOSTNAME, TERM, and a PATH whose first folder holds a `nvidia-smi` that prints the pod's
simulated GPUs and their utilisation). Nothing else of kubesim's environment reaches it. kubesim
listens on loopback and asks for its bearer token, as for every other call.

Channels (the first byte of each binary message): 0 stdin, 1 stdout, 2 stderr, 3 the final
Status (exit code), 4 terminal resize ({"Width": .., "Height": ..}); v5 adds 255, a client's
"close this channel" (255, 0: end of stdin). With tty=true the process gets a pseudo-terminal.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import pty
import shlex
import struct
import subprocess
import tempfile
import termios
import threading
import time
from pathlib import Path

from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from . import errors

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def exec_root() -> Path:
    return Path(os.environ.get("KUBESIM_EXEC_ROOT") or Path(tempfile.gettempdir()) / "kubesim-exec")


def choose_protocol(offered: str) -> str | None:
    asked = [p.strip() for p in (offered or "").split(",") if p.strip()]
    return next((p for p in PROTOCOLS if p in asked), None)


class ExecRequest:
    """A checked exec: the pod is there and running, the container is one of its own."""

    def __init__(self, sim, namespace: str, name: str, query: dict[str, list[str]]):
        from .resources import core
        from .sim import container_of
        pod = sim.store.get(core("pods"), namespace, name)
        container = container_of(pod, (query.get("container") or [""])[-1])
        statuses = {s["name"]: s for s in pod.get("status", {}).get("containerStatuses", [])}
        if "running" not in statuses.get(container, {}).get("state", {}):
            raise errors.bad_request(f"unable to upgrade connection: container not found (\"{container}\")")
        self.command = query.get("command") or []
        if not self.command:
            raise errors.bad_request("you must specify at least 1 command")
        flag = lambda key: (query.get(key) or ["false"])[-1] in ("1", "true")  # noqa: E731
        self.stdin, self.stdout, self.stderr, self.tty = flag("stdin"), flag("stdout"), flag("stderr"), flag("tty")
        if not (self.stdin or self.stdout or self.stderr):
            raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
        self.sim, self.pod, self.namespace, self.name, self.container = sim, pod, namespace, name, container
        spec = next(c for c in pod["spec"]["containers"] if c["name"] == container)
        self.scratch = exec_root() / namespace / name
        tools = self.scratch / ".kubesim" / "bin"
        tools.mkdir(parents=True, exist_ok=True)
        self.env = {e["name"]: str(e["value"]) for e in spec.get("env") or [] if "value" in e}
        self.env.update(HOME=str(self.scratch), HOSTNAME=name, PATH=f"{tools}:/usr/local/bin:/usr/bin:/bin",
                        KUBESIM_POD=f"{namespace}/{name}")
        if self.tty:
            self.env["TERM"] = "xterm-256color"
        self.gpu_file = self.scratch / ".kubesim" / "nvidia-smi.txt"
        smi = tools / "nvidia-smi"
        smi.write_text(f"#!/bin/sh\n# kubesim: this pod's simulated GPUs\ncat {shlex.quote(str(self.gpu_file))}\n")
        smi.chmod(0o755)
        self.write_gpus()

    def write_gpus(self) -> None:
        """What `nvidia-smi` prints now: the GPUs the pod holds on its node and their utilisation."""
        from . import metrics
        key = (self.namespace, self.name, self.pod["metadata"]["uid"])
        node = self.pod.get("spec", {}).get("nodeName") or ""
        with self.sim.store.lock:
            held = sorted(i for i, holder in self.sim.gpu_allocations.get(node, {}).items() if holder[0] == key)
        labels = {}
        if node:
            from .resources import core
            labels = ((self.sim.store.find(core("nodes"), "", node) or {}).get("metadata") or {}).get("labels") or {}
        model = labels.get("nvidia.com/gpu.product", "GPU").replace("-", " ")
        total = int(labels.get("nvidia.com/gpu.memory", "0") or 0)
        lines = [time.strftime("%a %b %d %H:%M:%S %Y"),
                 f"NVIDIA-SMI {metrics.DRIVER} (simulated by kubesim)   Driver Version: {metrics.DRIVER}",
                 f"{'GPU':>3}  {'Name':<28} {'Memory-Usage':>20}  {'GPU-Util':>8}"]
        for index in held:
            util = metrics._util(self.pod, True)
            used = min(total, int(0.6 * total)) if util > 0 else 512
            lines.append(f"{index:>3}  {model:<28} {f'{used}MiB / {total}MiB':>20}  {f'{util:.0f}%':>8}")
        if not held:
            lines.append("No devices were found")
        tmp = self.gpu_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.gpu_file)


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def _status(code: int | None, error: str = "") -> bytes:
    if error:
        body = {"metadata": {}, "status": "Failure", "message": error, "reason": "InternalError",
                "details": {"causes": [{"reason": "ExitCode", "message": "126"}]}}
    elif code == 0:
        body = {"metadata": {}, "status": "Success"}
    else:
        body = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                "message": f"command terminated with non-zero exit code: exit status {code}",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
    return json.dumps(body).encode()


class Session:
    """One exec: the process and the websocket between it and the client."""

    def __init__(self, req: ExecRequest, rfile, sock, protocol: str):
        self.req, self.rfile, self.sock, self.protocol = req, rfile, sock, protocol
        self.ws = Connection(ConnectionType.SERVER)
        self.send_lock = threading.Lock()
        self.done = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.master: int | None = None

    def send(self, channel: int, data: bytes = b"") -> None:
        with self.send_lock:
            if self.done.is_set() and channel != ERROR:
                return
            with contextlib.suppress(OSError):
                self.sock.sendall(self.ws.send(BytesMessage(data=bytes([channel]) + data)))

    def run(self) -> None:
        req = self.req
        try:
            if req.tty:
                self.master, slave = pty.openpty()
                self.proc = subprocess.Popen(req.command, stdin=slave, stdout=slave, stderr=slave, cwd=req.scratch,
                                             env=req.env, start_new_session=True, close_fds=True,
                                             preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
                os.close(slave)
                pumps = [(self.master, STDOUT)]
            else:
                self.proc = subprocess.Popen(req.command, stdin=subprocess.PIPE if req.stdin else subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=req.scratch,
                                             env=req.env, start_new_session=True)
                pumps = [(self.proc.stdout.fileno(), STDOUT), (self.proc.stderr.fileno(), STDERR)]
        except OSError as exc:
            reason = "executable file not found in $PATH" if isinstance(exc, FileNotFoundError) else exc.strerror
            self.send(ERROR, _status(None, f'exec: "{req.command[0]}": {reason}'))
            self._close()
            return
        threads = [threading.Thread(target=self._pump, args=(fd, ch), daemon=True) for fd, ch in pumps]
        threads.append(threading.Thread(target=self._read_client, daemon=True))
        threads.append(threading.Thread(target=self._gpus, daemon=True))
        for t in threads:
            t.start()
        code = self.proc.wait()
        for t in threads[:len(pumps)]:
            t.join(2)
        self.send(ERROR, _status(code))
        self._close()

    def _pump(self, fd: int, channel: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # a pty whose process ended reads EIO
                break
            if not chunk:
                break
            if (channel == STDOUT and self.req.stdout) or (channel == STDERR and self.req.stderr):
                self.send(channel, chunk)

    def _gpus(self) -> None:
        while not self.done.wait(2):
            with contextlib.suppress(OSError):
                self.req.write_gpus()

    def _read_client(self) -> None:
        pending = b""
        try:
            while not self.done.is_set():
                data = self.rfile.read1(65536)
                if not data:
                    break
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, (BytesMessage, TextMessage)):
                        # A message may come in parts; the channel is its first byte. Clients send
                        # text frames too (the kubernetes Python client does, for str data).
                        part = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
                        pending += part
                        if event.message_finished:
                            self._message(pending)
                            pending = b""
                    elif isinstance(event, Ping):
                        with self.send_lock:
                            self.sock.sendall(self.ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        raise ConnectionResetError
        except (OSError, ValueError, ConnectionResetError):
            pass
        finally:
            if not self.done.is_set() and self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):  # the client went away: so does the command
                    os.killpg(self.proc.pid, 15)

    def _message(self, data: bytes) -> None:
        if not data:
            return
        channel, payload = data[0], data[1:]
        if channel == STDIN and self.req.stdin:
            fd = self.master if self.master is not None else (self.proc.stdin.fileno() if self.proc.stdin else None)
            if fd is not None and payload:
                with contextlib.suppress(OSError):
                    os.write(fd, payload)
        elif channel == RESIZE and self.master is not None:
            with contextlib.suppress(ValueError, OSError, TypeError, AttributeError):
                size = json.loads(payload)
                rows, cols = int(size.get("Height", 24)), int(size.get("Width", 80))
                if 0 < rows < 10000 and 0 < cols < 10000:
                    fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        elif channel == CLOSE and self.protocol == PROTOCOLS[0] and payload[:1] == bytes([STDIN]):
            if self.master is not None:
                with contextlib.suppress(OSError):
                    os.write(self.master, b"\x04")  # end of input on a terminal
            elif self.proc.stdin:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()

    def _close(self) -> None:
        with self.send_lock:
            self.done.set()
            with contextlib.suppress(OSError, Exception):
                self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream:
                    with contextlib.suppress(OSError):
                        stream.close()
