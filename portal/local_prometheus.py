"""A Prometheus of our own on loopback, for the demo and the tests (development only): Debian's
`prometheus` binary scraping the given targets (kubesim's DCGM-style /metrics) at a short
interval. Production points CRATER_PROMETHEUS_URL at the cluster's Prometheus instead."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPrometheus:
    def __init__(self, targets: list[str], data_dir: Path, scrape_interval: float = 1.0, binary: str | None = None,
                 port: int = 0, retention: str = "2d"):
        self.targets, self.data_dir, self.interval = targets, Path(data_dir), scrape_interval
        self.binary = binary or shutil.which("prometheus")
        self.port, self.retention = port, retention
        self.proc: subprocess.Popen | None = None

    @property
    def available(self) -> bool:
        return bool(self.binary)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalPrometheus:
        if not self.binary:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        self.port = self.port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "prometheus.yml"
        targets = ", ".join(f"'{t}'" for t in self.targets)
        config.write_text(f"global:\n  scrape_interval: {self.interval:g}s\n  evaluation_interval: {self.interval:g}s\n"
                          f"scrape_configs:\n  - job_name: dcgm\n    honor_labels: true\n"
                          f"    static_configs:\n      - targets: [{targets}]\n")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.data_dir / 'data'}",
             f"--storage.tsdb.retention.time={self.retention}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}")
            try:
                if requests.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("prometheus did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
