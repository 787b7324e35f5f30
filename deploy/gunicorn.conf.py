"""gunicorn settings for the portal's web processes (gunicorn -c deploy/gunicorn.conf.py app:app).

Two kinds of process serve the same app (CRATER_WEB_WORKER_CLASS):

- pages, the API and polled fragments: short requests, best served by `sync` workers (the load
  benchmark's figures: gthread workers answer about 12 % fewer requests per second on the same
  cores). The kustomize base runs them as crater-web.
- the long requests, a web terminal's websocket and a followed log (`/jobs/<id>/terminal/ws`,
  `/jobs/<id>/logs/follow`): each holds a thread for as long as it lasts, so they go to `gthread`
  workers with CRATER_WEB_THREADS threads each (default 8): with 2 workers, 16 at once, terminals
  capped per user (CRATER_TERMINAL_MAX_PER_USER) and ended when idle
  (CRATER_TERMINAL_IDLE_SECONDS). The base runs them as crater-live; its ingress sends those two
  paths there and everything else to crater-web.

One process of either kind serves everything too (the default is gthread, so that a single
process, e.g. in the tests, keeps pages answering while terminals are open). SO_REUSEPORT lets the
kernel spread connections evenly. `timeout` watches a worker's main loop: for sync workers that is
a request's length (30 s, longer than any page); gthread workers keep a terminal open for hours.
"""
import multiprocessing
import os
import tempfile

# /metrics counts every worker: prometheus-client's multiprocess mode needs a folder shared by the
# workers, named before they start. One of its own unless the deployment names one.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="crater-metrics-"))

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
