"""Submitting and controlling jobs. A submission cannot half-fail: the job row is inserted
(Submitting) by the quota admission and committed, then the cluster objects are created
(deterministic names, so a retry is safe), then the job becomes Pending; if the cluster refuses
or fails, whatever was created is removed and the job ends Failed with reason SubmitError and the
cluster's message. Touches the DB and, through portal.cluster, the cluster."""
from __future__ import annotations

import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, replace
from collections.abc import Iterator
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..cluster.client import Cluster, ClusterError
from ..cluster.manifests import JobRequest
from ..extensions import db
from ..models import ACTIVE_STATES, OPEN_STATES, Account, Job, JobPort, JobState, User
from ..telemetry import count_submission
from ..vocabulary import STOP_REASONS, JobType, Reason, state_word
from . import accounts, audit, datasets, images, job_rules, job_spec, job_states, policies, restrictions
from .context import SYSTEM, Actor
from .errors import Conflict, NotFound, ValidationFailed
from .job_rules import SubmissionPolicy
from .job_spec import Submission
from .scheduling.admission import Ask, QuotaExceeded, admit_submission
from .scheduling.state import QueueSettings
from .transactions import retrying

log = logging.getLogger("crater.jobs")


@dataclass(frozen=True)
class SubmitSettings:
    """What the deployment allows a submission (its policy) and how its queue orders jobs."""
    policy: SubmissionPolicy
    queue: QueueSettings

    @classmethod
    def from_config(cls, config) -> SubmitSettings:
        return cls(SubmissionPolicy.from_config(config), QueueSettings.from_config(config))


def check_rules(actor: Actor, form: Submission, settings: SubmitSettings) -> None:
    """The submission rules alone (ValidationFailed naming every broken one), as submit_job checks
    them: what a form shows when some of its fields did not even parse."""
    job_rules.check(form, settings.policy, {i.reference for i in images.offered(actor, form.job_type)})


def submit_job(actor: Actor, form: Submission, cluster: Cluster, settings: SubmitSettings,
               now: datetime | None = None) -> Job:
    """Check the rules (ValidationFailed, nothing written), admit against the quota and the
    account's queue (services/scheduling/admission.py): a job that fits now gets its cluster objects and becomes
    Pending (or ends SubmitError with nothing left in the cluster); one that fits only later is
    Queued, unless the form said to refuse it (QuotaExceeded, nothing written), and the syncer's
    admitter launches it here in `launch` when its turn comes. The same idempotency key from the
    same user returns the first job (a double-clicked submit). A time limit of 0 means the type's
    default. Every entry point passes the deployment's settings (so none can skip its rules).
    `now` (default: the wall clock) is the submission time."""
    policy = settings.policy
    user = actor.user
    restrictions.check(user, restrictions.SUBMIT, now)
    if form.idempotency_key:
        existing = by_key(user.id, form.idempotency_key)
        if existing is not None:
            return existing
    if not form.time_limit_seconds and form.job_type in policy.time_limits:
        form = replace(form, time_limit_seconds=policy.default_seconds(form.job_type))
    try:
        check_rules(actor, form, settings)
    except ValidationFailed as exc:
        count_submission(form.job_type, "invalid", min(exc.errors) if exc.errors else "")
        raise
    picked = datasets.resolve(actor, form.datasets)  # each one the submitter may use
    form = replace(form, datasets=tuple(d.name for d in picked), dataset_mounts=datasets.mounts_of(picked))
    account = db.session.get(Account, form.account_id)
    if account is None:
        raise NotFound(_("No such account."))
    if form.borrow and form.job_type == JobType.JUPYTER and not account.borrow_jupyter and not account.is_default:
        # The account's rule, not the request's shape: refused like a quota (409), as the API states.
        raise QuotaExceeded(_("JupyterLab jobs may not borrow GPUs beyond account %(name)s's quota; "
                              "choose to wait in the queue or to be refused.", name=account.name), kind="borrow_jupyter")
    grace = grace_seconds()
    ask = Ask(gpus=form.gpus * form.workers, gpu_model=form.gpu_model if form.gpus else "",
                    cpu_milli=form.cpu_milli * form.workers, memory_mib=form.memory_mib * form.workers)
    job = Job(job_type=form.job_type, display_name=form.display_name, image=form.image, workers=form.workers,
              time_limit_seconds=form.time_limit_seconds, notify=form.notify,
              idempotency_key=form.idempotency_key or None, spec=job_spec.to_stored(form), borrow=form.borrow)
    user_id, username, account_id, account_name = user.id, user.username, account.id, account.name
    admitted = {}

    def keep(job: Job) -> None:
        admitted["id"], admitted["state"] = job.id, job.state
        datasets.record_mounts(job.id, picked)
        for port in form.ports:  # opened with the job: they answer once it runs
            db.session.add(JobPort(job_id=job.id, port=port, name="", opened_by=user_id, opened_at=now))
            audit.record(actor, "job.port_open", "job", job.id, {"port": port, "name": "", "from": "submission"})
        admitted["request"] = job_spec.cluster_request(job.id, form, username, account_name, bool(job.borrowed), grace)
        if job.state == JobState.QUEUED.value:
            audit.record(actor, "job.queue", "job", job.id, {"type": form.job_type, "account": account_name,
                                                             "gpus": ask.gpus, "gpu_model": ask.gpu_model,
                                                             "blocker": job.queue_blocker})
    try:
        retrying(lambda: admit_submission(user_id, account_id, ask, job, jupyter_limit=policy.jupyter_limit, before_commit=keep,
                                     queue_if_full=form.queue_if_full, settings=settings.queue, now=now))
    except QuotaExceeded as exc:
        count_submission(form.job_type, "refused", exc.kind)
        raise
    except IntegrityError:  # the same key, submitted twice at the same moment
        db.session.rollback()
        existing = by_key(user_id, form.idempotency_key)
        if existing is None:
            raise
        return existing
    if admitted["state"] == JobState.QUEUED.value:
        count_submission(form.job_type, "queued")
        return db.session.get(Job, admitted["id"], populate_existing=True)
    # The admission's commit ended the transaction, and nothing is read again before the cluster
    # has answered: no transaction is open while the cluster is called.
    job = _launch(actor, admitted["id"], admitted["request"], cluster, requeue_if_away=False)
    if job.reason != Reason.SUBMIT_ERROR:  # a SubmitError is counted where the cluster's answer is known
        count_submission(form.job_type, "admitted")
    return job


def _launch(actor: Actor, job_id: int, request: JobRequest, cluster: Cluster, requeue_if_away: bool) -> Job:
    """Create an admitted (Submitting) job's cluster objects and mark it Pending. If the cluster
    refuses, whatever was created is removed and the job ends SubmitError; if it cannot answer
    now, a job that waited in the queue goes back to its head (`requeue_if_away`: the create is
    safe to repeat), a fresh submission ends SubmitError (its user is there to try again)."""
    token = secrets.token_urlsafe(32) if request.job_type == JobType.JUPYTER else ""
    try:
        cluster.create_job(request, token=token)
    except ClusterError as exc:
        if requeue_if_away and (exc.retryable or not exc.answered):
            why = exc.message

            def back() -> Job:
                job_states.requeued(job_id, why)
                db.session.commit()
                return db.session.get(Job, job_id, populate_existing=True)
            return retrying(back)
        _undo(cluster, job_id, exc)
        error = exc.message
        count_submission(request.job_type, "submit_error", f"http-{exc.status}" if exc.status else "unreachable")
        return retrying(lambda: _end_submit_error(actor, job_id, error))

    def mark_pending() -> Job:
        # Only from Submitting: the syncer may have moved it on already (Running, even Succeeded).
        job_states.created(job_id)
        audit.record(actor, "job.submit", "job", job_id, {"type": request.job_type, "account": request.account,
                                                          "gpus": request.gpus * request.workers,
                                                          "gpu_model": request.gpu_model})
        db.session.commit()
        return db.session.get(Job, job_id, populate_existing=True)
    return retrying(mark_pending)


def launch(job_id: int, cluster: Cluster) -> Job | None:
    """Create the cluster objects of a job the admitter has just admitted (Submitting), from its
    submitted spec, through the same steps as a web submission. A job stopped meanwhile is left
    alone (None)."""
    row = db.session.execute(select(Job.state, Job.spec, Job.account_id, Job.idempotency_key, Job.borrowed, User.username,
                                    Account.name).join(User, User.id == Job.user_id)
                             .join(Account, Account.id == Job.account_id).where(Job.id == job_id)).one_or_none()
    if row is None or row.state != JobState.SUBMITTING.value:
        db.session.commit()
        return None
    form = job_spec.from_stored(row.spec or {}, row.account_id)
    request = job_spec.cluster_request(job_id, form, row.username, row.name, bool(row.borrowed), grace_seconds())
    db.session.commit()  # no transaction stays open while the cluster is called
    return _launch(SYSTEM, job_id, request, cluster, requeue_if_away=True)


def suspend_preempted(job_id: int, cluster: Cluster) -> bool:
    """Suspend the cluster Job of a preempted job (its pods stop with their grace period; the Job
    and its spec stay, so it is resumed when admitted again). False when the cluster did not take
    it now (the reconciler tries again)."""
    try:
        cluster.suspend_job(job_id)
        return True
    except ClusterError as exc:
        log.warning("could not suspend preempted job %s: %s", job_id, exc.message)
        return False


def relabel(job_id: int, cluster: Cluster) -> None:
    """The class label of a job's cluster Job after it was reclassified (best effort: the row is
    what the portal goes by)."""
    borrowed = db.session.execute(select(Job.borrowed).where(Job.id == job_id)).scalar()
    db.session.commit()
    with contextlib.suppress(ClusterError):
        cluster.set_job_class(job_id, bool(borrowed))


def grace_seconds() -> int:
    """The grace a job's containers get after SIGTERM when it is preempted or stopped (the
    preemption policy's setting, written into the pod template at creation)."""
    return int(policies.get("preemption").params["grace_seconds"])


def _end_submit_error(actor: Actor, job_id: int, error: str) -> Job:
    job, _ended = job_states.ended(job_id, ACTIVE_STATES, JobState.FAILED.value, Reason.SUBMIT_ERROR, error)
    audit.record(actor, "job.submit_failed", "job", job_id, {"error": error[:500]})
    db.session.commit()
    return job


def _undo(cluster: Cluster, job_id: int, cause: ClusterError) -> None:
    """Remove what a failed submission created. When the API did not answer at all, another
    attempt would only wait out a second timeout: the syncer's orphan pass removes whatever may
    exist once the API is back (the job is final, so its objects are orphans)."""
    if not cause.answered:
        return
    with contextlib.suppress(ClusterError):  # else the orphan pass removes it later
        cluster.delete_job(job_id)


def by_key(user_id: int, key: str) -> Job | None:
    return db.session.execute(select(Job).where(Job.user_id == user_id, Job.idempotency_key == key)).scalar_one_or_none()


def exported_spec(job: Job) -> dict:
    """The spec a job page shows and the API exports (job_spec.exported)."""
    return job_spec.exported(job.spec, job.account.name)


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


def stop_job(actor: Actor, job_id: int, cluster: Cluster, reason: str = "", message: str = "",
             tell_owner: bool = False) -> Job:
    """Stop a pending or running job: its cluster objects go, the row stays (Stopped) with the
    reason (StoppedByUser for the owner, StoppedByAdmin for others, or the policy's own, e.g.
    IdleGPU or Evicted) and an optional message. The change is guarded: a job that ended meanwhile
    keeps the end it reached. `tell_owner` mails the owner even if they asked for no mail."""
    job = job_to_stop(actor, job_id)
    by_owner = actor.user is not None and actor.user.id == job.user_id
    if job.is_queued and not reason:
        reason = Reason.CANCELLED if by_owner else Reason.STOPPED_BY_ADMIN
    reason = reason or (Reason.STOPPED_BY_USER if by_owner else Reason.STOPPED_BY_ADMIN)
    if reason not in STOP_REASONS:
        raise ValueError(f"not a stop reason: {reason}")
    message = (message or _("Stopped by %(name)s.", name=actor.name))[:2000]
    if job.is_queued:
        # No cluster objects yet: ended in the database alone, guarded, so a job the admitter
        # takes at the same moment is stopped below like any admitted job.
        job, ended = job_states.ended(job_id, (JobState.QUEUED.value,), JobState.STOPPED.value, reason, message,
                                      tell_owner=tell_owner or not by_owner)
        if ended:
            audit.record(actor, "job.cancel", "job", job.id, {"reason": reason})
            db.session.commit()
            if job.preempted_at is not None:  # its suspended Job stays in the cluster: removed now (or by the orphan pass)
                with contextlib.suppress(ClusterError):
                    cluster.delete_job(job_id)
            return job
        db.session.commit()
        if not job.is_open:
            raise Conflict(_("Job %(id)s has already ended (%(state)s).", id=job.id, state=state_word(job.state)))
    db.session.commit()  # no transaction stays open while the cluster is called
    try:
        cluster.delete_job(job_id)
    except ClusterError as exc:
        raise Conflict(_("The cluster could not stop the job now: %(error)s Try again in a minute.", error=exc.message)) from None

    def mark_stopped() -> Job:
        job, ended = job_states.ended(job_id, OPEN_STATES, JobState.STOPPED.value, reason, message, tell_owner=tell_owner)
        if ended:
            audit.record(actor, "job.stop", "job", job.id, {"reason": reason})
        db.session.commit()
        return job
    return retrying(mark_stopped)


def job_to_stop(actor: Actor, job_id: int) -> Job:
    """A job its confirmation page may offer to stop (or cancel): open, and the actor's to stop."""
    job = get_job(actor, job_id)
    if not job.is_open:
        raise Conflict(_("Job %(id)s has already ended (%(state)s).", id=job.id, state=state_word(job.state)))
    return job


def job_to_delete(actor: Actor, job_id: int) -> Job:
    """A job its confirmation page may offer to delete: ended, and visible to the actor."""
    job = get_job(actor, job_id)
    if job.is_open:
        raise Conflict(_("Job %(id)s is still %(state)s; stop it first.", id=job.id, state=state_word(job.state)))
    return job


def delete_job(actor: Actor, job_id: int) -> Job:
    """Hide an ended job from every list (the row and the audit log keep it)."""
    job = job_to_delete(actor, job_id)
    job.hidden = True
    job_states.touched(job)
    audit.record(actor, "job.delete", "job", job.id, {"name": job.display_name})
    db.session.commit()
    return job


@dataclass(frozen=True)
class LogView:
    text: str
    live: bool  # read from the cluster just now
    unavailable: str = ""  # why the live log could not be read (the cluster's error), if it could not
    note: str = ""  # why there are no lines to show (no log yet, no kept lines of that pod)


def live_pod(job: Job, pod: str = "") -> str:
    """The pod whose live log to read: the one asked for if the job has it, else its first; ""
    when there is no live log (the job has ended, or has no pod yet): then the kept lines."""
    pods = [p["name"] for p in job.pods or []]
    if not job.is_open or not pods:
        return ""
    return pod if pod in pods else pods[0]


def follow_log(actor: Actor, job_id: int, cluster: Cluster, pod: str, tail: int, seconds: float,
               stopped_words: str) -> tuple[str, Iterator[bytes] | None]:
    """A log that follows itself: (the kept lines, None) when no pod of the job is live; else
    ("", chunks as the log grows) until the container ends, a quiet minute passes or `seconds`
    run out. A pending job's log begins once its container starts. `stopped_words` (made by the
    caller, with a %(error)s) ends the stream when the cluster stops sending."""
    job = get_job(actor, job_id)
    name, kept = live_pod(job, pod), job.last_log or ""
    db.session.commit()  # no transaction stays open while the log streams
    if not name:
        return kept, None

    def stream() -> Iterator[bytes]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                for chunk in cluster.follow_log(name, tail_lines=tail, seconds=max(1.0, deadline - time.monotonic())):
                    yield chunk
                    if time.monotonic() > deadline:
                        return
                return  # the container ended, or a quiet minute: the caller asks again if the job runs on
            except ClusterError as exc:
                if exc.not_started:
                    time.sleep(1)  # pending: the log begins once its container starts
                    continue
                yield ("\n[crater] " + stopped_words % {"error": exc.message} + "\n").encode()
                return
    return "", stream()


def read_log(actor: Actor, job_id: int, cluster: Cluster, pod: str = "", lines: int = 500) -> tuple[Job, LogView]:
    """The last `lines` of a pod's log from the cluster while the job is active; once it has
    ended, or when the cluster cannot answer (then saying so), the lines the syncer kept."""
    job = get_job(actor, job_id)
    name = live_pod(job, pod)
    if name:
        db.session.commit()  # no transaction stays open while the cluster is called
        try:
            return job, LogView(cluster.log(name, tail_lines=lines), True)
        except ClusterError as exc:
            return job, LogView(kept_lines(job, pod, lines)[0], False, exc.message)
    if job.is_open and not job.last_log:
        return job, LogView("", False, note=_("Job %(id)s is %(state)s: it has no log yet.", id=job.id,
                                              state=state_word(job.state)))
    text, note = kept_lines(job, pod, lines)
    return job, LogView(text, False, note=note)


def kept_lines(job: Job, pod: str, lines: int) -> tuple[str, str]:
    """The last `lines` of the lines kept when the job ended, of one pod when `pod` is named (a
    job of several pods keeps a section per pod), and why there are none when there are none."""
    text = job.last_log or ""
    sections = [("", text)]
    if text.startswith("==> "):
        sections = []
        for part in text.split("\n==> ") if text else []:
            head, _sep, body = part.removeprefix("==> ").partition(" <==\n")
            sections.append((head, body))
    names = [p["name"] for p in job.pods or []]
    if pod:
        per_pod = bool(sections[0][0])
        chosen = [sec for sec in sections if sec[0] == pod] if per_pod else (sections if not names or pod in names else [])
        if not chosen:
            kept = ", ".join(sec[0] for sec in sections if sec[0]) or ", ".join(names)
            return "", _("No lines were kept for pod %(pod)s (this job's: %(pods)s).", pod=pod, pods=kept or "-")
        sections = chosen

    def last(body: str) -> str:
        rows = body.splitlines()
        return "\n".join(rows[-lines:]) + ("\n" if rows and body.endswith("\n") else "")
    if len(sections) == 1 and (pod or not sections[0][0]):
        return last(sections[0][1]), ""
    return "\n".join(f"==> {name} <==\n{last(body)}" for name, body in sections), ""


def jupyter_access(actor: Actor, job_id: int, cluster: Cluster, with_token: bool = True) -> tuple[str, str]:
    """(url, token) of the owner's running JupyterLab job. Only the owner: a manager or an admin
    may see the job but never gets into the notebook. The token is read from the cluster; behind
    the ingress's external auth (`with_token` False) the link needs none ("")."""
    job = get_job(actor, job_id)
    if job.job_type != JobType.JUPYTER or actor.user is None or job.user_id != actor.user.id:
        raise NotFound(_("No JupyterLab of yours here."))
    if job.state != JobState.RUNNING.value:
        raise Conflict(_("JupyterLab opens once the job runs (it is %(state)s).", state=state_word(job.state)))
    db.session.commit()  # no transaction stays open while the cluster is called
    try:
        return cluster.jupyter_url(job.id), cluster.jupyter_token(job.id) if with_token else ""
    except ClusterError as exc:
        raise Conflict(_("The cluster could not answer now: %(error)s Try again in a minute.", error=exc.message)) from None


# ---- for the syncer's reconciler (acting as the system) ----------------------------------------

def end_abandoned_submissions(created_before: datetime, in_cluster: set[int], now: datetime) -> list[int]:
    """Jobs left Submitting since before `created_before` (their submission, or their admission
    from the queue) whose Job object the cluster does not have: the web process or the syncer
    died between the admission and the create. A fresh submission ends SubmitError (guarded,
    with an end time and its notice); a job admitted from the queue goes back to its head, as the
    create is safe to repeat. Whatever either may have created is then an orphan or re-used."""
    since = func.coalesce(Job.admitted_at, Job.created_at)
    stale = [(i, admitted) for i, admitted in db.session.execute(select(Job.id, Job.admitted_at).where(
        Job.state == JobState.SUBMITTING.value, since < created_before)) if i not in in_cluster]
    ended = []
    for job_id, admitted in stale:
        if admitted is not None:
            if job_states.requeued(job_id, "The portal stopped while creating this job; it is queued again."):
                audit.record(SYSTEM, "job.requeue", "job", job_id)
            continue
        _job, was_ended = job_states.ended(job_id, (JobState.SUBMITTING.value,), JobState.FAILED.value,
                                           Reason.SUBMIT_ERROR, "The portal stopped while submitting this job; nothing was created in the cluster. "
                               "Submit it again.", at=now)
        if was_ended:
            audit.record(SYSTEM, "job.submit_abandoned", "job", job_id)
            ended.append(job_id)
    db.session.commit()
    return ended


def states_of(job_ids: set[int]) -> dict[int, str]:
    """The database's state of each of these jobs (ids it does not know are left out); a queued
    job that was preempted reads PREEMPTED_QUEUED: its suspended cluster Job is kept for its
    next run."""
    states: dict[int, str] = {}
    ids = sorted(job_ids)
    for i in range(0, len(ids), 500):
        for job_id, state, preempted_at in db.session.execute(select(Job.id, Job.state, Job.preempted_at)
                                                              .where(Job.id.in_(ids[i:i + 500]))):
            states[job_id] = PREEMPTED_QUEUED if state == JobState.QUEUED.value and preempted_at else state
    db.session.commit()
    return states


PREEMPTED_QUEUED = "Queued (preempted)"


def remove_orphan(cluster: Cluster, job_id: int, state: str | None) -> None:
    """Delete the cluster objects of a job that is final (or unknown to the database), and audit
    it. Raises ClusterError when the cluster cannot do it now (the next pass tries again)."""
    cluster.delete_job(job_id)
    audit.record(SYSTEM, "job.orphan_removed", "job", job_id, {"state": state or "unknown"})
    db.session.commit()
