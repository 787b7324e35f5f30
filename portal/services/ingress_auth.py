"""External authentication for the ingress (ingress-nginx's auth-url): may this browser request
pass to a job's notebook? Only the job's owner, signed in to the portal, or an admin, and only
while the job runs; the answer hands the notebook's token on to the backend in a header the
ingress forwards (auth-response-headers), so the token never travels in a link or reaches the
browser. No Kubernetes call but the first for each job in each process (the token is kept in
memory, bounded: safe to lose)."""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from urllib.parse import urlsplit

from sqlalchemy import select

from ..cluster.client import Cluster
from ..extensions import db
from ..models import Job, JobState
from ..vocabulary import JobType
from .context import Actor
from .job_ports import is_open

_TOKENS: OrderedDict[int, str] = OrderedDict()
_LOCK = threading.Lock()
KEEP = 2000


def target_of(original_url: str, base_path: str) -> tuple[int, int] | None:
    """(job, port) a proxied URL is for: <base>/crater-<id>/... a notebook (port 0), or
    /ports/crater-<id>-<port>/... a job's opened port. None: not one of ours."""
    path = urlsplit(original_url or "").path
    match = re.match(rf"^{re.escape(base_path.rstrip('/'))}/crater-(\d{{1,12}})(/|$)", path)
    if match:
        return int(match.group(1)), 0
    match = re.match(r"^/ports/crater-(\d{1,12})-(\d{1,5})(/|$)", path)
    return (int(match.group(1)), int(match.group(2))) if match else None


def may_pass(actor: Actor, job_id: int, port: int = 0) -> bool:
    """The job's owner or an admin, while the job runs: into its notebook (port 0), or into a port
    its owner opened."""
    if actor.user is None:
        return False
    row = db.session.execute(select(Job.user_id, Job.job_type, Job.state, Job.hidden).where(Job.id == job_id)).one_or_none()
    opened = port == 0 or (row is not None and is_open(job_id, port))
    db.session.commit()
    if row is None or row.hidden or row.state != JobState.RUNNING.value or not opened:
        return False
    if port == 0 and row.job_type != JobType.JUPYTER:
        return False
    return row.user_id == actor.user.id or bool(actor.user.is_admin)


def token_for(job_id: int, cluster: Cluster) -> str:
    with _LOCK:
        if job_id in _TOKENS:
            _TOKENS.move_to_end(job_id)
            return _TOKENS[job_id]
    token = cluster.jupyter_token(job_id)  # ClusterError: the caller answers "try again"
    with _LOCK:
        _TOKENS[job_id] = token
        while len(_TOKENS) > KEEP:
            _TOKENS.popitem(last=False)
    return token
