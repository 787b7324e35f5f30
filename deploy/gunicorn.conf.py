"""gunicorn settings for the portal's web process (gunicorn -c deploy/gunicorn.conf.py app:app).

Sync workers (one request at a time each) with SO_REUSEPORT so the kernel spreads connections
evenly; scale with CRATER_WEB_WORKERS per pod and with replicas across pods.
"""
import multiprocessing
import os

bind = os.environ.get("CRATER_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("CRATER_WEB_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "sync"
reuse_port = True
timeout = 30
graceful_timeout = 20
max_requests = 2000  # recycle workers now and then (bounded memory growth)
max_requests_jitter = 200
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
