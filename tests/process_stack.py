"""The portal as it runs in production, as separate processes on loopback: kubesim (`python -m
kubesim serve` with --state and --tls-dir, so it can be stopped, hung and restarted like a real
control plane), `crater sync` (one or more replicas), and the portal under gunicorn, plus a real
SMTP server (aiosmtpd) that counts what it receives. Used by the resilience tests and by
bench/sick_api.py. Everything listens on 127.0.0.1 only."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import requests

from kubesim_fixtures import wait_for

ROOT = Path(__file__).resolve().parent.parent
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
SECRET = "resilience-test-secret-" + "x" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    """A real SMTP server on loopback; `messages` is every mail it received."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list = []
        self.lock = threading.Lock()
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with box.lock:
                    box.messages.append(envelope.content.decode("utf-8", errors="replace"))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def subjects(self) -> list[str]:
        with self.lock:
            return [next((line for line in m.splitlines() if line.startswith("Subject:")), "") for m in self.messages]

    def stop(self) -> None:
        self.controller.stop()


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is `parent` (gunicorn's workers, what the demo started), from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(entry))
    return pids


class Process:
    def __init__(self, name: str, argv: list[str], env: dict, log: Path):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        self._log = self.log_path.open("a")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig) -> None:
        os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.signal(signal.SIGCONT)
                self.signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self._log.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Stack:
    """kubesim + syncer(s) + gunicorn against one database; `settings` are CRATER_* overrides."""

    def __init__(self, folder: Path, database_url: str, settings: dict | None = None, time_scale: float = 20.0,
                 run_seconds: float = 100.0):
        """Jobs run `run_seconds` of simulated time (unless their command looks like a server, e.g.
        "sleep infinity": those run until stopped); kubesim runs `time_scale` times faster."""
        import yaml

        from kubesim.cluster import DEMO_CLUSTER

        self.folder, self.database_url, self.time_scale = folder, database_url, time_scale
        self.cluster_file = folder / "cluster.yaml"
        self.cluster_file.write_text(yaml.safe_dump(dict(DEMO_CLUSTER, defaultRunSeconds=run_seconds)))
        self.ca = str(folder / "tls" / "ca.crt")
        self.kube_port, self.web_port = free_port(), free_port()
        self.kubeconfig = folder / "kubeconfig"
        self.mailbox = Mailbox()
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", CRATER_ENV="development", CRATER_SECRET_KEY=SECRET,
                        CRATER_DATABASE_URL=database_url, CRATER_KUBECONFIG=str(self.kubeconfig),
                        CRATER_JOB_NAMESPACE="crater-jobs", CRATER_SMTP_URL=self.mailbox.url,
                        CRATER_CLUSTER_TIMEOUT="2", CRATER_LEASE_SECONDS="3", CRATER_WATCH_TIMEOUT="5",
                        CRATER_RECONCILE_SECONDS="1", CRATER_ORPHAN_GRACE_SECONDS="2", CRATER_SYNC_STALE_SECONDS="5",
                        CRATER_SHORT_CACHE_SECONDS="0")
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            self.env.pop(name, None)
        self.env.update(settings or {})
        self.kubesim: Process | None = None
        self.syncers: list[Process] = []
        self.web: Process | None = None

    # ---- the pieces -------------------------------------------------------------------------------

    def start_kubesim(self) -> Process:
        self.kubesim = Process("kubesim", [sys.executable, "-m", "kubesim", "serve", "--port", str(self.kube_port),
                                           "--kubeconfig", str(self.kubeconfig), "--cluster", str(self.cluster_file), "--state", str(self.folder / "kubesim.json"),
                                           "--tls-dir", str(self.folder / "tls"), "--time-scale", str(self.time_scale)],
                               self.env, self.folder / "kubesim.log").start()
        wait_for(lambda: self.kubesim_ready() or not self.kubesim.alive(), timeout=30, what="kubesim")
        assert self.kubesim.alive(), self.kubesim.output()[-2000:]
        return self.kubesim

    def kubesim_ready(self) -> bool:
        if not self.kubeconfig.exists():
            return False
        try:
            return requests.get(f"https://127.0.0.1:{self.kube_port}/healthz", timeout=1, verify=self.ca).status_code == 200
        except requests.RequestException:
            return False

    def start_syncer(self) -> Process:
        n = len(self.syncers)
        proc = Process(f"syncer-{n}", [sys.executable, "-m", "flask", "--app", "app", "sync"], self.env,
                       self.folder / f"syncer-{n}.log").start()
        self.syncers.append(proc)
        return proc

    def start_web(self, workers: int = 2, worker_class: str = "gthread") -> Process:
        # As production runs it (deploy/gunicorn.conf.py), on loopback; sync workers to compare.
        self.web = Process("web", [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                                   "-w", str(workers), "-b", f"127.0.0.1:{self.web_port}", "--log-level", "warning",
                                   "app:app"], {**self.env, "CRATER_WEB_WORKER_CLASS": worker_class},
                           self.folder / "web.log").start()
        wait_for(lambda: self._web_up() or not self.web.alive(), timeout=30, what="gunicorn")
        assert self.web.alive(), self.web.output()[-2000:]
        return self.web

    def _web_up(self) -> bool:
        try:
            return requests.get(self.url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, syncers: int = 1) -> Stack:
        self.start_kubesim()
        for _ in range(syncers):
            self.start_syncer()
        self.start_web()
        return self

    def stop(self) -> None:
        for proc in [self.web, *self.syncers, self.kubesim]:
            if proc is not None:
                proc.stop()
        self.mailbox.stop()
        if "PYTEST_CURRENT_TEST" in os.environ:  # a benchmark prints its figures alone
            self.print_tails()

    def print_tails(self, chars: int = 4000) -> None:
        """The end of each process's log on stdout: pytest shows it only beside a failed test."""
        for proc in [self.kubesim, *self.syncers, self.web]:
            if proc is not None:
                print(f"----- {proc.name} (last {chars} characters) -----\n{proc.output()[-chars:]}")

    # ---- making the cluster API sick -----------------------------------------------------------

    def api_down(self) -> None:
        """The API server goes away: connections are refused (its state is kept for the restart)."""
        assert self.kubesim.stop() == 0, self.kubesim.output()[-2000:]

    def api_up(self) -> None:
        self.start_kubesim()

    def api_hang(self) -> None:
        """The API server stops answering: connections are accepted by the kernel, nothing more."""
        self.kubesim.signal(signal.SIGSTOP)

    def api_resume(self) -> None:
        self.kubesim.signal(signal.SIGCONT)

    def faults(self, **fault) -> None:
        """kubesim's fault injection (delay, errorCode, reset, garbage, ...); {} clears."""
        token = "kubesim-token"
        url = f"https://127.0.0.1:{self.kube_port}/kubesim/faults"
        headers = {"Authorization": f"Bearer {token}"}
        if fault:
            requests.post(url, json=fault, headers=headers, timeout=5, verify=self.ca).raise_for_status()
        else:
            requests.delete(url, headers=headers, timeout=5, verify=self.ca).raise_for_status()

    # ---- a user -----------------------------------------------------------------------------------

    def session(self, username: str, password: str) -> requests.Session:
        return signed_in(self.url, username, password)


def signed_in(base: str, username: str, password: str) -> requests.Session:
    """A session signed in through the local sign-in form, as a browser would."""
    s = requests.Session()
    token = CSRF.search(s.get(base + "/login", timeout=10).text).group(1)
    page = s.post(base + "/login", data={"csrf_token": token, "username": username, "password": password}, timeout=10)
    assert page.url == base + "/", page.text[:500]
    return s


def submit_form(s: requests.Session, base: str, account_id: int, job_type: str = "batch", **fields) -> requests.Response:
    """Post a job form (batch unless said) as a browser would (CSRF token and submission key from
    the page); a JupyterLab form ignores the command fields."""
    form = s.get(f"{base}/jobs/new/{job_type}", timeout=10).text
    data = {"csrf_token": CSRF.search(form).group(1),
            "idempotency_key": re.search(r'name="idempotency_key" type="hidden" value="([^"]+)"', form).group(1),
            "display_name": "resilience", "account_id": str(account_id), "image": "pytorch/pytorch:2.4",
            "command": "python train.py", "command_mode": "shell", "gpus": "0", "cpu": "1", "memory_gib": "2",
            "time_limit_hours": "1", "notify": "y"}
    data.update(fields)
    return s.post(f"{base}/jobs/new/{job_type}", data=data, timeout=60, allow_redirects=True)


def csrf_of(s: requests.Session, url: str) -> str:
    return CSRF.search(s.get(url, timeout=10).text).group(1)
