"""Benchmark: the cluster view with an inventory of 500 nodes, 4,000 GPUs and 20,000 pods, a job's
GPU chart data (one day at the scrape interval, from a real Prometheus holding a day of backfilled
DCGM samples), and the usage report for one month over 200,000 jobs, under gunicorn on loopback,
next to a trivial route measured in the same run.

    .venv/bin/python bench/cluster_view.py --database-url mysql+pymysql://...   # MariaDB (the goal's case)
    .venv/bin/python bench/cluster_view.py                                      # SQLite under a temp dir

For each route: p95 of sequential requests (server time plus loopback) and requests per second
under load (wrk, else a keep-alive Python client) as a ratio to /healthz. The CSV of the month is
timed to its first byte and to its end (it is streamed). Prints figures; asserts nothing.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from http.client import HTTPConnection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from admin_pages import arguments, database_url, fresh_app, gunicorn, insert_people, load_python, login_cookie  # noqa: E402
from job_list import load_wrk, sequential_p95  # noqa: E402

MODELS = [("NVIDIA-A100-SXM4-80GB", 81920), ("NVIDIA-H100-80GB-HBM3", 81920), ("NVIDIA-GeForce-RTX-4090", 24564)]
NAMESPACE = "crater-jobs"


def seed(url: str, nodes: int, gpus_per_node: int, pods: int, jobs: int, users: int, accounts: int) -> dict:
    """Nodes, one placement per pod (a portal job for each of the first `pods` jobs), a GPU device
    per GPU, and `jobs` ended jobs over the last month with their usage rows."""
    from sqlalchemy import insert, text

    from portal.extensions import db
    from portal.models import (GpuDevice, Job, Membership, Node, Placement, SyncHeartbeat, UsageDay, UsageModelDay,
                               UsageRollup, utcnow)

    rng = random.Random(7)
    app = fresh_app(url)
    with app.app_context():
        now = utcnow()
        user_ids, account_ids = insert_people(now, users, accounts)
        account_of = {u: account_ids[i % accounts] for i, u in enumerate(user_ids[1:])}  # one lab per researcher
        db.session.execute(insert(Membership), [{"account_id": a, "user_id": u, "role": "member", "created_at": now}
                                                for u, a in account_of.items()])
        names = [f"gpu-{n:04d}" for n in range(nodes)]
        labels = {"kubernetes.io/os": "linux", "nvidia.com/gpu.present": "true", "crater.io/node-pool": "pool"}
        db.session.execute(insert(Node), [
            {"name": name, "gpu_model": MODELS[n % 3][0], "gpu_memory_mib": MODELS[n % 3][1], "gpus": gpus_per_node,
             "gpus_requested": 0, "ready": n % 50 != 7, "unschedulable": n % 40 == 3, "cordon_reason": "maintenance" if n % 40 == 3 else "",
             "reserved_for": "lab-0001" if n % 100 == 5 else "", "cpu_milli": 128000, "cpu_requested_milli": 0,
             "memory_mib": 1 << 20, "memory_requested_mib": 0, "pods_count": 0, "jobs_count": 0,
             "gpu_util": round(rng.uniform(0, 100), 1), "metrics_at": now,
             "labels": dict(labels, **{"kubernetes.io/hostname": name, "nvidia.com/gpu.product": MODELS[n % 3][0]}),
             "taints": [], "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": ""}],
             "capacity": {"cpu": "128", "memory": "1Ti", "nvidia.com/gpu": str(gpus_per_node)},
             "allocatable": {"cpu": "128", "memory": "1Ti", "nvidia.com/gpu": str(gpus_per_node)}, "updated_at": now}
            for n, name in enumerate(names)])
        # running jobs: one per pod, 40 pods per node, GPUs on the first pods of each node
        batch = 5000
        running_rows = []
        per_node = pods // nodes
        for p in range(pods):
            node = p % nodes
            slot = p // nodes
            gpus = 1 if slot < gpus_per_node else 0
            owner = user_ids[1 + p % (users - 1)]
            running_rows.append({"user_id": owner, "account_id": account_of[owner],
                                 "job_type": "batch", "display_name": f"train {p}", "state": "Running", "reason": "",
                                 "message": "", "image": "pytorch:2", "gpu_model": MODELS[node % 3][0], "gpus": gpus,
                                 "cpu_milli": 2000, "memory_mib": 8192, "workers": 1, "time_limit_seconds": 86400,
                                 "notify": False, "hidden": False, "created_at": now - timedelta(hours=2),
                                 "started_at": now - timedelta(days=1, minutes=5),
                                 "pods": [{"name": f"crater-bench-{p}", "node": names[node], "phase": "Running"}]})
        for i in range(0, len(running_rows), batch):
            db.session.execute(insert(Job), running_rows[i:i + batch])
        db.session.commit()
        first = db.session.execute(text("SELECT MIN(id) FROM jobs")).scalar()
        placements = [{"namespace": NAMESPACE, "pod": f"crater-bench-{p}", "node": names[p % nodes], "job_id": first + p,
                       "gpus": 1 if p // nodes < gpus_per_node else 0, "cpu_milli": 2000, "memory_mib": 8192,
                       "phase": "Running"} for p in range(pods)]
        for i in range(0, len(placements), batch):
            db.session.execute(insert(Placement), placements[i:i + batch])
        devices = [{"node": names[n], "index": g, "uuid": f"GPU-{n:04d}-{g}", "model": MODELS[n % 3][0],
                    "util": round(rng.uniform(0, 100), 1), "memory_used_mib": 20000, "memory_total_mib": MODELS[n % 3][1],
                    "namespace": NAMESPACE, "pod": f"crater-bench-{g * nodes + n}", "job_id": first + g * nodes + n,
                    "sampled_at": now} for n in range(nodes) for g in range(gpus_per_node)]
        for i in range(0, len(devices), batch):
            db.session.execute(insert(GpuDevice), devices[i:i + batch])
        db.session.execute(text(f"UPDATE nodes SET gpus_requested = {gpus_per_node}, pods_count = {per_node}, "
                                f"jobs_count = {per_node}, cpu_requested_milli = {per_node * 2000}, "
                                f"memory_requested_mib = {per_node * 8192}"))
        db.session.add(SyncHeartbeat(id=1, holder="bench", beat_at=now))
        db.session.commit()
        # a month of ended jobs and their usage rows (a job that crosses midnight has two)
        from portal.services.usage import FIGURES, figures_of
        rollups: dict = {}
        month_start = (now - timedelta(days=30)).replace(hour=0, minute=0, second=0)
        for start in range(0, jobs, batch):
            rows, usage = [], []
            for n in range(start, min(jobs, start + batch)):
                begin = month_start + timedelta(seconds=rng.randrange(30 * 86400))
                end = begin + timedelta(seconds=rng.randrange(600, 12 * 3600))
                owner = user_ids[1 + n % (users - 1)]
                rows.append({"user_id": owner, "account_id": account_of[owner],
                             "job_type": "batch", "display_name": f"sweep {n}", "state": "Succeeded", "reason": "Completed",
                             "message": "", "image": "pytorch:2", "gpu_model": MODELS[n % 3][0], "gpus": 1 + n % 4,
                             "cpu_milli": 4000, "memory_mib": 16384, "workers": 1, "time_limit_seconds": 86400,
                             "notify": False, "hidden": False, "created_at": begin, "started_at": begin, "finished_at": end,
                             "usage_state": "final", "usage_at": now})
            db.session.execute(insert(Job), rows)
            ids = [r[0] for r in db.session.execute(text(f"SELECT id FROM jobs ORDER BY id DESC LIMIT {len(rows)}"))][::-1]
            from portal.metrics import day_overlaps
            for job_id, r in zip(ids, rows):
                util = rng.uniform(0, 1)
                for day, seconds in day_overlaps(r["started_at"], r["finished_at"]).items():
                    allocated = r["gpus"] * seconds
                    usage.append({"job_id": job_id, "day": day, "user_id": r["user_id"], "account_id": r["account_id"],
                                  "gpu_model": r["gpu_model"], "gpu_seconds": allocated, "used_gpu_seconds": allocated * util,
                                  "idle_gpu_seconds": allocated * (1 - util) * 0.5, "measured_gpu_seconds": allocated,
                                  "cpu_seconds": 4 * seconds, "memory_gib_seconds": 16 * seconds})
            db.session.execute(insert(UsageDay), usage)
            figures_of(usage, rollups)  # the rollups the usage pass keeps beside the rows, added up here
            db.session.commit()
        for kind, model in (("user", UsageRollup), ("model", UsageModelDay)):
            keys = ("day", "user_id", "account_id") if kind == "user" else ("day", "gpu_model")
            rows = [dict(zip(keys, key[1:]), **dict(zip(FIGURES, v))) for key, v in rollups.items() if key[0] == kind]
            for i in range(0, len(rows), batch):
                db.session.execute(insert(model), rows[i:i + batch])
        db.session.commit()
        chart_job = first  # the first running job: 1 GPU on gpu-0000, a day old
        db.engine.dispose()
        return {"node": names[0], "chart_job": chart_job, "chart_pod": "crater-bench-0", "start": month_start.date(),
                "end": now.date()}


def backfilled_prometheus(tmp: Path, pod: str, node: str, gpus: int, step: int):
    """A Prometheus holding one day of DCGM samples for `pod` on `node` at `step` seconds, built
    with promtool from OpenMetrics; returns (process, url) or None without the binaries."""
    from portal.local_prometheus import LocalPrometheus
    promtool, binary = shutil.which("promtool"), shutil.which("prometheus")
    if not (promtool and binary):
        return None
    end = int(time.time()) - 60
    start = end - 86400
    lines = ["# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).", "# TYPE DCGM_FI_DEV_GPU_UTIL gauge"]
    rng = random.Random(3)
    for g in range(gpus):
        labels = f'gpu="{g}",UUID="GPU-{g}",Hostname="{node}",modelName="NVIDIA A100",namespace="{NAMESPACE}",pod="{pod}"'
        lines += [f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} {rng.randrange(100)} {t}" for t in range(start, end, step)]
    lines += ["# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).", "# TYPE DCGM_FI_DEV_FB_USED gauge"]
    for g in range(gpus):
        labels = f'gpu="{g}",UUID="GPU-{g}",Hostname="{node}",modelName="NVIDIA A100",namespace="{NAMESPACE}",pod="{pod}"'
        lines += [f"DCGM_FI_DEV_FB_USED{{{labels}}} {20000 + rng.randrange(1000)} {t}" for t in range(start, end, step)]
    source = tmp / "day.om"
    source.write_text("\n".join(lines) + "\n# EOF\n")
    data = tmp / "prom" / "data"
    data.mkdir(parents=True, exist_ok=True)
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)], check=True,
                   capture_output=True)
    return LocalPrometheus(["127.0.0.1:9"], tmp / "prom", scrape_interval=step, binary=binary, retention="30d").start()


def streamed(port: int, path: str, cookie: str) -> tuple[float, float, int]:
    conn = HTTPConnection("127.0.0.1", port)
    t = time.perf_counter()
    conn.request("GET", path, headers={"Cookie": cookie})
    response = conn.getresponse()
    first = response.read(1)
    ttfb = time.perf_counter() - t
    size = len(first) + len(response.read())
    return ttfb * 1000, (time.perf_counter() - t) * 1000, size


def main() -> None:
    args = arguments(__doc__, nodes=500, gpus=8, pods=20_000, jobs=200_000, users=2_000, accounts=200,
                     sequential=200, step=15).parse_args()
    url = database_url(args)
    tmp = Path(tempfile.mkdtemp(prefix="crater-bench-cluster-"))
    print(f"seeding {args.nodes} nodes x {args.gpus} GPUs, {args.pods} pods, {args.jobs} jobs over a month into "
          f"{url.split(':', 1)[0]} ...", flush=True)
    t = time.perf_counter()
    seeded = seed(url, args.nodes, args.gpus, args.pods, args.jobs, args.users, args.accounts)
    print(f"  seeded in {time.perf_counter() - t:.0f} s", flush=True)
    prom = backfilled_prometheus(tmp, seeded["chart_pod"], seeded["node"], 8, args.step)
    if prom is None:
        print("  (no prometheus/promtool: the chart route is measured answering 'no metrics')")
    else:
        os.environ["CRATER_PROMETHEUS_URL"] = prom.url
        os.environ["CRATER_PROMETHEUS_STEP"] = str(args.step)
    month = f"start={seeded['start'].isoformat()}&end={seeded['end'].isoformat()}"
    routes = [
        ("trivial (/healthz)", "/healthz", {}),
        ("nodes page (500 nodes, page 1 of 10)", "/nodes", {}),
        ("nodes page, model + free>=1 filter", "/nodes?model=NVIDIA-A100-SXM4-80GB&free=1", {}),
        ("nodes poll, unchanged (204)", None, {"HX-Request": "true", "HX-Target": "nodes-live"}),
        ("node detail (8 GPUs, 40 pods)", f"/nodes/{seeded['node']}", {}),
        ("job chart data (1 day, 8 GPUs x 2)", f"/jobs/{seeded['chart_job']}/gpu.json", {}),
        ("usage report, one month, everyone", f"/usage?scope=all&{month}", {}),
    ]
    use_wrk = shutil.which("wrk") is not None
    print(f"load: {'wrk' if use_wrk else 'python keep-alive client'}, {args.connections} connections, {args.seconds} s "
          f"per route, gunicorn {args.workers} sync workers; p95 from {args.sequential} sequential requests", flush=True)
    try:
        with gunicorn(url, args.workers) as port:
            cookie = login_cookie(port)
            import re
            conn = HTTPConnection("127.0.0.1", port)
            conn.request("GET", "/nodes", headers={"Cookie": cookie})
            page = conn.getresponse().read().decode()
            poll = re.search(r'<div id="nodes-live" hx-get="([^"]+)"', page).group(1).replace("&amp;", "&")
            trivial = None
            for label, path, headers in routes:
                path = path or poll
                h = dict(headers, Cookie=cookie)
                count = args.sequential if "usage" not in path and "gpu.json" not in path else max(30, args.sequential // 5)
                sequential_p95(port, path, h, 5)  # warm-up
                p95 = sequential_p95(port, path, h, count)
                if use_wrk:
                    rps = load_wrk(port, path, h, args.seconds, args.connections)
                else:
                    rps = load_python(port, path, cookie, args.seconds, args.connections)[0]
                trivial = trivial or rps
                print(f"  {label:42s} {rps:8.0f} req/s = {rps / trivial:5.3f} x trivial   p95 {p95:7.1f} ms", flush=True)
            for group in ("user", "job"):
                ttfb, total, size = streamed(port, f"/usage.csv?scope=all&group={group}&{month}", cookie)
                print(f"  usage CSV, one month, per {group:5s}: first byte {ttfb:7.1f} ms, all {size / 1e6:6.2f} MB "
                      f"in {total:7.1f} ms", flush=True)
    finally:
        if prom is not None:
            prom.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if not args.database_url:
            shutil.rmtree(url.removeprefix("sqlite:///").rsplit("/", 1)[0], ignore_errors=True)


if __name__ == "__main__":
    main()
