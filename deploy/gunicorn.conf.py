"""gunicorn settings for the portal's web processes (gunicorn -c deploy/gunicorn.conf.py app:app).

Threaded workers (gthread, CRATER_WEB_THREADS threads each, default 8) with SO_REUSEPORT so the
kernel spreads connections evenly. A request holds a thread while it runs: a page for
milliseconds, a cluster call that hangs for its timeout, a web terminal's websocket or a followed
log for as long as it lasts. The kustomize base therefore runs the same app as two Deployments:

- crater-web: pages, the API and polled fragments. Threads keep pages answering while a sick
  cluster API holds some requests for their timeout (sync workers would each be held whole).
- crater-live: the long requests, `/jobs/<id>/terminal/ws`, `/jobs/<id>/logs/follow`, and the
  files' transfers and WebDAV (`/files`, `/dav`), which its ingress sends there; terminals are capped per user (CRATER_TERMINAL_MAX_PER_USER) and end
  when idle (CRATER_TERMINAL_IDLE_SECONDS). However many are open, they hold none of crater-web's
  threads, and each Deployment scales on its own.

One process serves everything too (the tests, the demo). CRATER_WEB_WORKER_CLASS=sync is accepted
for a pages-only process; the load benchmark measured the two within its noise of each other on
these machines (bench/load.py --worker-class). `timeout` watches a worker's main loop, not a
request's length, so a terminal open for hours is not killed.
"""
import multiprocessing
import os
import tempfile

# /metrics counts every worker: prometheus-client's multiprocess mode needs a folder shared by the
# workers, named before they start. One of its own unless the deployment names one.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="crater-metrics-"))

# What the portal writes to the shared storage (/files, /dav) is group-writable: its pods run in
# group 100 (users), as the notebook images' jobs do (deploy/k8s/README.md, step 1).
os.umask(0o002)

bind = os.environ.get("CRATER_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("CRATER_WEB_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = os.environ.get("CRATER_WEB_WORKER_CLASS", "gthread")
if worker_class not in ("sync", "gthread"):
    raise SystemExit(f"CRATER_WEB_WORKER_CLASS={worker_class!r}: sync (pages, API) or gthread (terminals, followed logs)")
threads = int(os.environ.get("CRATER_WEB_THREADS", 8))
reuse_port = True
# No keep-alive between a client and a worker: a kept connection whose worker died (or that the
# worker closed as idle while the client sent on it) answers the client's next request with a
# reset. Each request has a connection of its own, as with sync workers; websockets are upgraded
# connections and stay open. (In production the ingress keeps its own connections to browsers.)
keepalive = 0
timeout = 30
graceful_timeout = 20
# No recycling after N requests: a recycled worker would cut its open terminals and followed
# logs (after graceful_timeout). Memory is bounded by the caches' own limits instead.
max_requests = 0
accesslog = None  # the portal logs one line per request itself (portal/logs.py): no query strings
errorlog = "-"
forwarded_allow_ips = os.environ.get("CRATER_FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server):
    """Multiprocess metrics: start from an empty directory (samples of a previous run would add up)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            if name.endswith(".db"):
                os.remove(os.path.join(folder, name))


def child_exit(server, worker):
    """Multiprocess metrics (PROMETHEUS_MULTIPROC_DIR): a dead worker's live gauges stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)
