"""Benchmark: /files as production runs it (gunicorn with deploy/gunicorn.conf.py on loopback, a
SQLite database and a storage folder of its own).

    .venv/bin/python bench/files.py                  # 10,000 files, a 2 GiB upload and download
    .venv/bin/python bench/files.py --mib 256        # a quicker run

Prints: the listing of a folder of `--files` files (p50/p95 of requests sent one at a time, next
to /healthz measured the same way); a `--mib` upload and download through the portal in MiB/s,
next to copying the same file on the same disk (`cp`, then fsync), as a ratio; the web worker's
peak resident memory during each transfer, next to before. Asserts nothing.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import requests  # noqa: E402

from queueing import percentile  # noqa: E402
from terminal import PASSWORD, prepare, rss_kib  # noqa: E402


def timed(session: requests.Session, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        response = session.get(url, timeout=60)
        response.raise_for_status()
        out.append((time.perf_counter() - start) * 1000)
    return out


class PeakRss(threading.Thread):
    """The web processes' largest total resident memory while the block runs (sampled every 50 ms)."""

    def __init__(self, master: int):
        super().__init__(daemon=True)
        self.master, self.peak, self.done = master, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_kib(self.master))
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()


class Multipart:
    """A multipart body read from the file as it is sent (the client never holds it whole either);
    its length is known, so it goes with a Content-Length, as a browser sends it."""

    def __init__(self, path: Path, field: str, extra: dict):
        boundary = uuid.uuid4().hex
        head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in extra.items())
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{path.name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n")
        self.parts = [io.BytesIO(head.encode()), path.open("rb"), io.BytesIO(f"\r\n--{boundary}--\r\n".encode())]
        self.length = sum(len(p.getvalue()) for p in (self.parts[0], self.parts[2])) + path.stat().st_size
        self.content_type = f"multipart/form-data; boundary={boundary}"

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        while self.parts:
            block = self.parts[0].read(size if size and size > 0 else 1 << 20)
            if block:
                return block
            self.parts.pop(0).close()
        return b""


def upload(s: requests.Session, url: str, path: Path, token: str, cookie: str, client: str) -> int:
    if client == "curl":
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Cookie: {cookie}",
                              "-F", f"csrf_token={token}", "-F", "op=upload", "-F", f"files=@{path}", url],
                             capture_output=True, text=True, check=True)
        return int(out.stdout)
    body = Multipart(path, "files", {"csrf_token": token, "op": "upload"})
    return s.post(url, data=body, headers={"Content-Type": body.content_type}, timeout=600, allow_redirects=False).status_code


def download(s: requests.Session, url: str, target: Path, cookie: str, client: str) -> None:
    if client.startswith("curl-dav:"):
        subprocess.run(["curl", "-sf", "-o", str(target), "-u", "u00:" + client.split(":", 1)[1], url], check=True)
    elif client == "curl":
        subprocess.run(["curl", "-sf", "-o", str(target), "-H", f"Cookie: {cookie}", url], check=True)
    else:
        with s.get(url, stream=True, timeout=600) as got, target.open("wb") as out:
            got.raise_for_status()
            for chunk in got.iter_content(1 << 20):
                out.write(chunk)
    fd = os.open(target, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def dav_token(url: str) -> str:
    """A write token of the benchmark's user (WebDAV signs in with it)."""
    from portal import create_app
    from portal.extensions import db
    from portal.models import User
    from portal.services import tokens
    from portal.services.context import Actor
    app = create_app({"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        user = db.session.query(User).filter_by(username="u00").one()
        return tokens.create(Actor(user), "bench", "write", 7)[1]


def disk_copy_seconds(source: Path, target: Path, tool: str) -> float:
    """`cp` (an in-kernel copy) or `dd bs=1M` (read and write through user space, as a server
    must), then fsync: the two readings of "copying the same file on the same disk"."""
    argv = ["cp", str(source), str(target)] if tool == "cp" else ["dd", f"if={source}", f"of={target}", "bs=1M", "status=none"]
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    fd = os.open(target, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    seconds = time.perf_counter() - start
    target.unlink()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mib", type=int, default=2048, help="the size of the file uploaded and downloaded")
    parser.add_argument("--requests", type=int, default=30, help="listing requests (one at a time)")
    parser.add_argument("--client", choices=("curl", "python"), default="curl" if shutil.which("curl") else "python",
                        help="what sends and receives the file (curl: the server's speed, not a Python client's)")
    args = parser.parse_args()

    from process_stack import CSRF, Stack, signed_in

    folder = Path(tempfile.mkdtemp(prefix="crater-files-", dir=ROOT / "instance" if (ROOT / "instance").is_dir() else None))
    storage = folder / "storage"
    url = f"sqlite:///{folder / 'bench.sqlite3'}"
    prepare(url, 1)
    many = storage / "users" / "u00" / "many"
    many.mkdir(parents=True)
    for n in range(args.files):
        (many / f"file-{n:05d}.txt").write_bytes(b"x" * (n % 4096))
    big = folder / "big.bin"
    block = os.urandom(1 << 20)
    with big.open("wb") as f:
        for _ in range(args.mib):
            f.write(block)
    stack = Stack(folder, url, settings={"CRATER_STORAGE_ROOT": str(storage),
                                         "CRATER_UPLOAD_MAX_BYTES": str((args.mib + 16) << 20)})
    stack.start_web(workers=1)
    try:
        s = signed_in(stack.url, "u00", PASSWORD)
        trivial = timed(s, stack.url + "/healthz", args.requests)
        listing = timed(s, stack.url + "/files/users/u00/many", args.requests)
        print(f"listing {args.files:,} files (first page): p50 {percentile(listing, 50):.0f} ms, "
              f"p95 {percentile(listing, 95):.0f} ms; /healthz p50 {percentile(trivial, 50):.1f} ms "
              f"(ratio {percentile(listing, 50) / percentile(trivial, 50):.0f}x)")

        copy = disk_copy_seconds(big, folder / "copy.bin", "cp")
        dd = disk_copy_seconds(big, folder / "copy.bin", "dd")
        master = stack.web.proc.pid
        idle = rss_kib(master)
        token = CSRF.search(s.get(stack.url + "/files/users/u00", timeout=10).text).group(1)
        cookie = f"crater_session={s.cookies.get('crater_session')}"
        with PeakRss(master) as up_rss:
            start = time.perf_counter()
            status = upload(s, stack.url + "/files/users/u00", big, token, cookie, args.client)
            up = time.perf_counter() - start
        assert status == 303, status
        with PeakRss(master) as down_rss:
            start = time.perf_counter()
            download(s, stack.url + "/files/users/u00/big.bin", folder / "down.bin", cookie, args.client)
            down = time.perf_counter() - start
        same = (folder / "down.bin").stat().st_size == big.stat().st_size
        mib = args.mib
        print(f"disk copy of {mib} MiB: cp {mib / copy:.0f} MiB/s, dd bs=1M {mib / dd:.0f} MiB/s")
        print(f"upload:   {mib / up:.0f} MiB/s = {copy / up:.2f} x cp, {dd / up:.2f} x dd; web RSS {idle / 1024:.0f} MiB "
              f"idle, peak {up_rss.peak / 1024:.0f} MiB")
        print(f"download: {mib / down:.0f} MiB/s = {copy / down:.2f} x cp, {dd / down:.2f} x dd; web RSS peak "
              f"{down_rss.peak / 1024:.0f} MiB; same size: {same}")
        if args.client == "curl":  # the same file through WebDAV (a PUT's body, a GET), as rclone and davfs2 move it
            token = dav_token(url)
            with PeakRss(master) as put_rss:
                start = time.perf_counter()
                subprocess.run(["curl", "-sf", "-o", "/dev/null", "-u", f"u00:{token}", "-T", str(big),
                                f"{stack.url}/dav/users/u00/dav.bin"], check=True)
                put = time.perf_counter() - start
            with PeakRss(master) as get_rss:
                start = time.perf_counter()
                download(s, f"{stack.url}/dav/users/u00/dav.bin", folder / "dav-down.bin", "", "curl-dav:" + token)
                get = time.perf_counter() - start
            print(f"WebDAV PUT: {mib / put:.0f} MiB/s = {copy / put:.2f} x cp, {dd / put:.2f} x dd (RSS peak "
                  f"{put_rss.peak / 1024:.0f} MiB); GET: {mib / get:.0f} MiB/s = {copy / get:.2f} x cp, {dd / get:.2f} x dd "
                  f"(RSS peak {get_rss.peak / 1024:.0f} MiB)")
    finally:
        stack.stop()
        subprocess.run(["rm", "-rf", str(folder)], check=False)


if __name__ == "__main__":
    main()
