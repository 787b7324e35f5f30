"""Job ports: the owner of a running job opens one of its ports (a TensorBoard on 6006, say) at a
per-job address behind the portal's sign-in, and closes it; audited; gone with the job (its
cluster objects are owned by the Job, its rows go when the job's do, and nothing answers once the
job has stopped running)."""
from __future__ import annotations

import re
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import func, select

from ..cluster.client import Cluster, ClusterError
from ..extensions import db
from ..models import JobPort, JobState
from ..vocabulary import state_word
from . import audit
from .context import Actor
from .errors import Conflict, NotFound, ValidationFailed
from .jobs import get_job

MAX_PORTS = 5
RESERVED = {8888}  # JupyterLab's own, published already
NAME = re.compile(r"^[\w .-]{0,32}$")


def _own_job(actor: Actor, job_id: int):
    job = get_job(actor, job_id)
    if actor.user is None or job.user_id != actor.user.id:
        raise NotFound(_("No job of yours here."))
    return job


def _own_running_job(actor: Actor, job_id: int):
    job = _own_job(actor, job_id)
    if job.state != JobState.RUNNING.value:
        raise Conflict(_("Ports open once the job runs (it is %(state)s).", state=state_word(job.state)))
    return job


def parse_port(raw: str) -> int:
    raw = (raw or "").strip()
    if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
        raise ValidationFailed({"port": _("A port is a whole number from 1024 to 65535.")})
    if int(raw) in RESERVED:
        raise ValidationFailed({"port": _("Port %(port)s is JupyterLab's own: use Open JupyterLab.", port=raw)})
    return int(raw)


def open_port(actor: Actor, job_id: int, raw_port: str, name: str, cluster: Cluster, now: datetime) -> str:
    """Open a port (idempotent: an open one stays as it is); its URL."""
    port = parse_port(raw_port)
    name = (name or "").strip()
    if not NAME.match(name):
        raise ValidationFailed({"name": _("A name is at most 32 letters, digits, spaces, dots, dashes or underscores.")})
    job = _own_running_job(actor, job_id)
    exists = db.session.execute(select(JobPort.id).where(JobPort.job_id == job.id, JobPort.port == port)).scalar()
    count = db.session.execute(select(func.count(JobPort.id)).where(JobPort.job_id == job.id)).scalar_one()
    if exists is None and count >= MAX_PORTS:
        raise Conflict(_("A job may have at most %(n)s ports open: close one first.", n=MAX_PORTS))
    db.session.commit()  # no transaction stays open while the cluster is called
    try:
        url = cluster.open_port(job.id, port)
    except ClusterError as exc:
        raise Conflict(_("The cluster could not open the port now: %(error)s Try again in a minute.",
                         error=exc.message)) from None
    if exists is None:
        db.session.add(JobPort(job_id=job.id, port=port, name=name, opened_by=actor.user.id, opened_at=now))
        audit.record(actor, "job.port_open", "job", job.id, {"port": port, "name": name})
    db.session.commit()
    return url


def close_port(actor: Actor, job_id: int, port: int, cluster: Cluster) -> None:
    job = _own_job(actor, job_id)
    row = db.session.execute(select(JobPort).where(JobPort.job_id == job.id, JobPort.port == port)).scalar_one_or_none()
    if row is None:
        raise NotFound(_("Port %(port)s is not open.", port=port))
    db.session.commit()
    try:
        cluster.close_port(job.id, port)
    except ClusterError as exc:
        raise Conflict(_("The cluster could not close the port now: %(error)s Try again in a minute.",
                         error=exc.message)) from None
    db.session.execute(JobPort.__table__.delete().where(JobPort.job_id == job.id, JobPort.port == port))
    audit.record(actor, "job.port_close", "job", job.id, {"port": port})
    db.session.commit()


def ports_of(job_id: int) -> list[JobPort]:
    return list(db.session.execute(select(JobPort).where(JobPort.job_id == job_id).order_by(JobPort.port)).scalars())


def is_open(job_id: int, port: int) -> bool:
    return db.session.execute(select(JobPort.id).where(JobPort.job_id == job_id, JobPort.port == port)).scalar() is not None
