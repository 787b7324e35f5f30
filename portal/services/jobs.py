"""Submitting and controlling jobs. A submission cannot half-fail: the job row is inserted
(Submitting) by the quota admission and committed, then the cluster objects are created
(deterministic names, so a retry is safe), then the job becomes Pending; if the cluster refuses
or fails, whatever was created is removed and the job ends Failed with reason SubmitError and the
cluster's message. Touches the DB and, through portal.cluster, the cluster."""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..cluster.client import Cluster, ClusterError
from ..cluster.manifests import JobRequest, Mount
from ..extensions import db
from ..models import Account, Job, JobState, User, utcnow
from . import accounts, audit, quota
from .context import Actor
from .errors import Conflict, NotFound


@dataclass(frozen=True)
class Submission:
    """What a submission form yields once validated."""
    job_type: str
    account_id: int
    display_name: str
    image: str
    command: tuple[str, ...] | str = ()
    env: tuple[tuple[str, str], ...] = ()
    gpu_model: str = ""
    gpus: int = 0  # per worker
    cpu_milli: int = 2000  # per worker
    memory_mib: int = 8192  # per worker
    shm_mib: int = 0
    working_dir: str = ""
    time_limit_seconds: int = 0
    workers: int = 1
    mount_home: bool = False
    mount_share: bool = False
    notify: bool = False
    idempotency_key: str = ""
    annotations: tuple[tuple[str, str], ...] = field(default=())


def submit_job(actor: Actor, form: Submission, cluster: Cluster, jupyter_limit: int | None = None) -> Job:
    """Admit, create, mark Pending; or end SubmitError with nothing left in the cluster. The same
    idempotency key from the same user returns the first job (a double-clicked submit)."""
    user = actor.user
    if form.idempotency_key:
        existing = _by_key(user.id, form.idempotency_key)
        if existing is not None:
            return existing
    account = db.session.get(Account, form.account_id)
    if account is None:
        raise NotFound(_("No such account."))
    ask = quota.Ask(gpus=form.gpus * form.workers, gpu_model=form.gpu_model if form.gpus else "",
                    cpu_milli=form.cpu_milli * form.workers, memory_mib=form.memory_mib * form.workers)
    job = Job(job_type=form.job_type, display_name=form.display_name, image=form.image, workers=form.workers,
              time_limit_seconds=form.time_limit_seconds, notify=form.notify,
              idempotency_key=form.idempotency_key or None, spec=_spec(form))
    try:
        job = quota.admit(user.id, account.id, ask, job, jupyter_limit=jupyter_limit)
    except IntegrityError:  # the same key, submitted twice at the same moment
        db.session.rollback()
        existing = _by_key(user.id, form.idempotency_key)
        if existing is None:
            raise
        return existing
    token = secrets.token_urlsafe(32) if form.job_type == "jupyter" else ""
    try:
        cluster.create_job(_request(job, form, user, account), token=token)
    except ClusterError as exc:
        _undo(cluster, job)
        job.state, job.reason, job.message, job.finished_at = JobState.FAILED.value, "SubmitError", exc.message[:2000], utcnow()
        audit.record(actor, "job.submit_failed", "job", job.id, {"error": exc.message[:500]})
        db.session.commit()
        return job
    job.state, job.reason, job.message = JobState.PENDING.value, "Created", ""
    audit.record(actor, "job.submit", "job", job.id, {"type": job.job_type, "account": account.name, "gpus": job.gpus,
                                                      "gpu_model": job.gpu_model})
    db.session.commit()
    return job


def _undo(cluster: Cluster, job: Job) -> None:
    try:
        cluster.delete_job(job.id)
    except ClusterError:
        pass  # the syncer's orphan sweep removes what is left once the API answers again


def _by_key(user_id: int, key: str) -> Job | None:
    return db.session.execute(select(Job).where(Job.user_id == user_id, Job.idempotency_key == key)).scalar_one_or_none()


def _spec(form: Submission) -> dict:
    """The submitted form without secrets (there are none in it: the Jupyter token never is)."""
    return {"job_type": form.job_type, "display_name": form.display_name, "image": form.image,
            "command": form.command if isinstance(form.command, str) else list(form.command),
            "env": [list(pair) for pair in form.env], "gpu_model": form.gpu_model, "gpus": form.gpus,
            "cpu_milli": form.cpu_milli, "memory_mib": form.memory_mib, "shm_mib": form.shm_mib,
            "working_dir": form.working_dir, "time_limit_seconds": form.time_limit_seconds, "workers": form.workers,
            "mount_home": form.mount_home, "mount_share": form.mount_share, "notify": form.notify}


def _request(job: Job, form: Submission, user: User, account: Account) -> JobRequest:
    mounts = []
    if form.mount_home:
        mounts.append(Mount(f"users/{user.username}", f"/home/{user.username}"))
    if form.mount_share:
        mounts.append(Mount(f"accounts/{account.name}", "/shared"))
    return JobRequest(
        job_id=job.id, job_type=form.job_type, username=user.username, account=account.name,
        display_name=form.display_name, image=form.image, command=form.command, env=form.env,
        gpu_model=form.gpu_model if form.gpus else "", gpus=form.gpus, cpu=f"{form.cpu_milli}m",
        memory=f"{form.memory_mib}Mi", shm=f"{form.shm_mib}Mi" if form.shm_mib else "",
        working_dir=form.working_dir, time_limit_seconds=form.time_limit_seconds, workers=form.workers,
        mounts=tuple(mounts), annotations=form.annotations)


# ---- access and control ----------------------------------------------------------------------

def get_job(actor: Actor, job_id: int) -> Job:
    """The job, if the actor may see it: its owner, a manager of its account, or an admin.
    Anyone else gets NotFound, as if it did not exist."""
    job = db.session.get(Job, job_id)
    if job is None or job.hidden or not _may_see(actor, job):
        raise NotFound(_("No such job."))
    return job


def poll_state(actor: Actor, job_id: int) -> tuple[int, str]:
    """(version, state) of a job the actor may see, read without loading the job: what a status
    poll needs to tell whether anything changed. NotFound like `get_job`."""
    row = db.session.execute(select(Job.user_id, Job.account_id, Job.hidden, Job.version, Job.state)
                             .where(Job.id == job_id)).one_or_none()
    if row is None or row.hidden or not _may_see(actor, row):
        raise NotFound(_("No such job."))
    return row.version, row.state


def _may_see(actor: Actor, job) -> bool:
    return actor.is_admin or job.user_id == actor.user.id or accounts.is_manager(actor.user, job.account_id)


def stop_job(actor: Actor, job_id: int, cluster: Cluster) -> Job:
    """Stop a pending or running job: its cluster objects go, the row stays (Stopped)."""
    job = get_job(actor, job_id)
    if not job.is_active:
        raise Conflict(_("Job %(id)s has already ended (%(state)s).", id=job.id, state=job.state))
    try:
        cluster.delete_job(job.id)
    except ClusterError as exc:
        raise Conflict(_("The cluster could not stop the job now: %(error)s", error=exc.message)) from None
    by_owner = actor.user is not None and actor.user.id == job.user_id
    job.state, job.finished_at = JobState.STOPPED.value, utcnow()
    job.reason = "StoppedByUser" if by_owner else "StoppedByAdmin"
    job.message = _("Stopped by %(name)s.", name=actor.name)
    audit.record(actor, "job.stop", "job", job.id, {"reason": job.reason})
    db.session.commit()
    return job


def delete_job(actor: Actor, job_id: int) -> Job:
    """Hide an ended job from every list (the row and the audit log keep it)."""
    job = get_job(actor, job_id)
    if job.is_active:
        raise Conflict(_("Job %(id)s is still %(state)s; stop it first.", id=job.id, state=job.state))
    job.hidden = True
    audit.record(actor, "job.delete", "job", job.id, {"name": job.display_name})
    db.session.commit()
    return job


def read_log(actor: Actor, job_id: int, cluster: Cluster, pod: str = "", lines: int = 500) -> tuple[Job, str, bool]:
    """(job, text, live): the last `lines` of a pod's log from the cluster while the job is
    active; once it has ended (or when the cluster cannot answer) the lines the syncer kept."""
    job = get_job(actor, job_id)
    pods = [p["name"] for p in job.pods or []]
    if job.is_active and pods:
        name = pod if pod in pods else pods[0]
        try:
            return job, cluster.log(name, tail_lines=lines), True
        except ClusterError:
            pass
    return job, job.last_log or "", False


def jupyter_access(actor: Actor, job_id: int, cluster: Cluster) -> tuple[str, str]:
    """(url, token) of the owner's running JupyterLab job. Only the owner: a manager or an admin
    may see the job but never gets into the notebook. The token is read from the cluster."""
    job = get_job(actor, job_id)
    if job.job_type != "jupyter" or actor.user is None or job.user_id != actor.user.id:
        raise NotFound(_("No JupyterLab of yours here."))
    if job.state != JobState.RUNNING.value:
        raise Conflict(_("JupyterLab opens once the job runs (it is %(state)s).", state=job.state))
    try:
        return cluster.jupyter_url(job.id), cluster.jupyter_token(job.id)
    except ClusterError as exc:
        raise Conflict(_("The cluster could not answer now: %(error)s", error=exc.message)) from None
