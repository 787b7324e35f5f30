"""Benchmark: kubesim with 500 nodes and 20,000 pods, run as its own process (as tests and the
demo do), driven over HTTP on loopback. Prints figures; asserts nothing.

    .venv/bin/python bench/kubesim_scale.py [--nodes 500 --pods 20000 --watchers 50 --jobs 1000]

Figures: a label-selector list returning 100 pods; a full pod list; how soon 50 concurrent
watchers see a change; creating 1,000 Jobs (one pod each) until all their pods are bound; the
simulator's resident memory."""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"Authorization": "Bearer kubesim-token", "Content-Type": "application/json"}


class Http:
    """One keep-alive connection per thread."""

    def __init__(self, port):
        self.port = port
        self.local = threading.local()

    def request(self, method, path, body=None):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=HEADERS)
        response = conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return data


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(fn, repeat):
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--pods", type=int, default=20_000)
    parser.add_argument("--watchers", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="kubesim-bench-"))
    namespaces = [f"ns-{i:02d}" for i in range(40)]
    cluster = {"namespaces": namespaces + ["jobs"], "defaultRunSeconds": 100000,
               "nodePools": [{"name": "gpu", "count": args.nodes, "cpu": 128, "memory": "1024Gi",
                              "gpu": {"model": "NVIDIA-A100-SXM4-80GB", "count": 8, "memoryMiB": 81920}}]}
    (folder / "cluster.yaml").write_text(json.dumps(cluster))
    proc = subprocess.Popen([sys.executable, "-m", "kubesim", "serve", "--cluster", str(folder / "cluster.yaml"),
                             "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().split()[2].rstrip(",").rsplit(":", 1)[1])
        http = Http(port)
        print(f"kubesim pid {proc.pid} on port {port}: {args.nodes} nodes; seeding {args.pods} pods ...", flush=True)
        t0 = time.perf_counter()

        def create(i):
            ns = namespaces[i % len(namespaces)]
            http.request("POST", f"/api/v1/namespaces/{ns}/pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"pod-{i:05d}", "labels": {"app": f"app-{i % max(1, args.pods // 100)}", "tier": "bench"},
                             "annotations": {"kubesim.crater.io/run-seconds": "forever"}},
                "spec": {"containers": [{"name": "main", "image": "registry.local/server:1",
                                         "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}})
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create, range(args.pods)))
        seeded = time.perf_counter() - t0

        def running():
            body = json.loads(http.request("GET", "/api/v1/pods?fieldSelector=status.phase=Running&limit=1"))
            return body["metadata"].get("remainingItemCount", 0) + len(body["items"])
        while running() < args.pods and time.perf_counter() - t0 < 600:
            time.sleep(1)
        settled = time.perf_counter() - t0
        print(f"seeded in {seeded:.1f}s, all {args.pods} pods Running after {settled:.1f}s", flush=True)

        selector = lambda: http.request("GET", "/api/v1/pods?labelSelector=app%3Dapp-0")  # noqa: E731
        assert len(json.loads(selector())["items"]) == min(100, args.pods)
        sel_p50, sel_p95 = timed(selector, 50)
        full = lambda: http.request("GET", "/api/v1/pods")  # noqa: E731
        full_p50, full_p95 = timed(full, 5)
        size = len(full()) / 1e6

        # watchers
        rv = json.loads(http.request("GET", "/api/v1/namespaces/ns-00/configmaps"))["metadata"]["resourceVersion"]
        arrivals: dict[int, list[float]] = {}
        ready = threading.Barrier(args.watchers + 1)

        def watcher(n):
            conn = HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", f"/api/v1/namespaces/ns-00/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=60",
                         headers=HEADERS)
            response = conn.getresponse()
            ready.wait()
            mine = arrivals.setdefault(n, [])
            while len(mine) < 10:
                line = response.fp.readline()  # chunk size
                if not line:
                    break
                data = response.fp.readline()
                response.fp.readline()
                if data.strip():
                    mine.append(time.perf_counter())
            conn.close()

        threads = [threading.Thread(target=watcher, args=(n,)) for n in range(args.watchers)]
        for t in threads:
            t.start()
        ready.wait()
        sent = []
        for i in range(10):
            time.sleep(0.1)
            sent.append(time.perf_counter())
            http.request("POST", "/api/v1/namespaces/ns-00/configmaps", {"metadata": {"name": f"cm-{i}"}, "data": {"i": str(i)}})
        for t in threads:
            t.join(30)
        latencies = sorted((arrivals[n][i] - sent[i]) * 1000 for n in arrivals for i in range(len(arrivals[n])))
        seen = sum(len(v) for v in arrivals.values())

        # 1,000 jobs
        print(f"creating {args.jobs} jobs ...", flush=True)
        t1 = time.perf_counter()

        def create_job(i):
            http.request("POST", "/apis/batch/v1/namespaces/jobs/jobs", {
                "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"job-{i:04d}"},
                "spec": {"template": {"metadata": {"annotations": {"kubesim.crater.io/run-seconds": "forever"}},
                                      "spec": {"restartPolicy": "Never", "containers": [{
                                          "name": "main", "image": "registry.local/train:1",
                                          "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}})
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create_job, range(args.jobs)))
        created = time.perf_counter() - t1

        def bound():
            body = json.loads(http.request("GET", "/api/v1/namespaces/jobs/pods"))
            return sum(1 for p in body["items"] if p["spec"].get("nodeName"))
        while bound() < args.jobs and time.perf_counter() - t1 < 120:
            time.sleep(0.2)
        scheduled = time.perf_counter() - t1
        memory = rss_mib(proc.pid)

        print()
        print(f"label-selector list (100 of {args.pods} pods): p50 {sel_p50:.1f} ms, p95 {sel_p95:.1f} ms   (goal < 20 ms)")
        print(f"full pod list ({args.pods} pods, {size:.1f} MB): p50 {full_p50:.0f} ms, p95 {full_p95:.0f} ms   (goal < 1 s)")
        print(f"{args.watchers} watchers x 10 changes: {seen} deliveries, latency p50 {statistics.median(latencies):.1f} ms, "
              f"p95 {latencies[int(len(latencies) * 0.95)]:.1f} ms, max {latencies[-1]:.1f} ms   (goal < 100 ms)")
        print(f"{args.jobs} jobs created in {created:.1f}s, all their pods bound after {scheduled:.1f}s   (goal < 10 s)")
        print(f"kubesim resident memory: {memory:.0f} MiB   (goal < 1024 MiB)")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
