"""Mail to users through the outbox. `enqueue_job_ended` adds a notice to the caller's transaction
(the one that ends the job), so a notice exists exactly when the change does; the syncer's sender
(`portal.sync.outbox`) delivers due notices with `deliver_due`. Mail goes through CRATER_SMTP_URL:
smtp://[user:password@]host[:port] (plain), smtp+starttls://... or smtps://..., in the owner's
language, with the same state and reason words as the pages. Credentials never reach a log line.

Delivery: a sender claims a notice (a guarded update, committed) before talking to the mail
server and marks it sent afterwards, so no two senders deliver it at once and a delivered notice is
never sent again. Failures retry with a growing delay (capped at an hour) until they go through."""
from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import or_, select, update

from .. import vocabulary
from ..extensions import db
from ..models import Job, OutboxMessage
from .transactions import retrying
import contextlib

log = logging.getLogger("crater.notify")
JOB_ENDED = "job_ended"
CLAIM_SECONDS = 120  # longer than one SMTP conversation with its timeout
MAX_RETRY_DELAY = 3600


@dataclass(frozen=True)
class MailSettings:
    smtp_url: str
    sender: str
    public_url: str = ""
    timeout: float = 10.0

    @classmethod
    def from_config(cls, config) -> MailSettings:
        return cls(config.get("SMTP_URL", ""), config.get("SMTP_FROM", "crater@localhost"), config.get("PUBLIC_URL", ""),
                   float(config.get("SMTP_TIMEOUT", 10.0)))


# Notice kinds and whether they are mailed unless the user says otherwise (Settings).
MAIL_DEFAULTS = {"job_started": False, "job_succeeded": False, "job_failed": True, "job_stopped_policy": True,
                 "job_stopped_admin": True, "warning_idle_gpu": True, "warning_time_limit": True, "job_preempted": True,
                 "extension_decided": True, "drain_warning": True, "maintenance": True}
END_KINDS = ("job_succeeded", "job_failed", "job_stopped_policy", "job_stopped_admin", "job_stopped_user")
# Stopped for these reasons: a policy did it. A drain (Evicted) is an administrator's act.
POLICY_REASONS = ("IdleGPU", "PendingTooLong", "DeadlineExceeded")


def kind_words() -> dict[str, str]:
    return {"job_started": _("a job of mine starts running"), "job_succeeded": _("a job of mine succeeds"),
            "job_failed": _("a job of mine fails or is lost"),
            "job_stopped_policy": _("a policy stops a job of mine (idle GPUs, time limit)"),
            "job_stopped_admin": _("a manager or administrator stops a job of mine, or drains its node"),
            "warning_idle_gpu": _("a job of mine is warned for idle GPUs"),
            "warning_time_limit": _("a job of mine nears its time limit"),
            "job_preempted": _("a borrowed job of mine is preempted (it waits to run again)"),
            "extension_decided": _("a manager decides on my request for more time"),
            "drain_warning": _("a job of mine will be stopped because its node is drained"),
            "maintenance": _("maintenance is announced that touches my jobs")}


def end_kind(state: str, reason: str) -> str:
    if state == vocabulary.JobState.SUCCEEDED.value:
        return "job_succeeded"
    if state == vocabulary.JobState.STOPPED.value:
        if reason in POLICY_REASONS:
            return "job_stopped_policy"
        return "job_stopped_user" if reason == vocabulary.Reason.STOPPED_BY_USER else "job_stopped_admin"
    return "job_failed"


def wants_mail(user_id: int, kind: str) -> bool:
    from ..models import User
    prefs = db.session.execute(select(User.mail_prefs).where(User.id == user_id)).scalar() or {}
    return bool(prefs.get(kind, MAIL_DEFAULTS.get(kind, False)))


def wants_mail_of(user_ids: set[int], kind: str) -> dict[int, bool]:
    """`wants_mail` for many users in one query."""
    from ..models import User
    prefs = dict(db.session.execute(select(User.id, User.mail_prefs).where(User.id.in_(sorted(user_ids)))).all()) if user_ids else {}
    return {u: bool((prefs.get(u) or {}).get(kind, MAIL_DEFAULTS.get(kind, False))) for u in user_ids}


def notice(job_id: int, user_id: int, kind: str, key: str, mail: bool | None = None) -> None:
    """A notice in the caller's transaction: on the notifications page (not the owner's own stop),
    and by mail when `mail` (None: as the user's preferences say). `key` makes it unique: the
    same notice is never recorded or mailed twice."""
    from ..models import Notification
    if kind != "job_stopped_user":
        db.session.add(Notification(user_id=user_id, job_id=job_id, kind=kind, dedupe_key=key))
    if mail if mail is not None else wants_mail(user_id, kind):
        mail_kind = JOB_ENDED if kind in END_KINDS else kind
        db.session.add(OutboxMessage(kind=mail_kind, dedupe_key=f"{JOB_ENDED}:{job_id}" if kind in END_KINDS else key,
                                     user_id=user_id, job_id=job_id))


def enqueue_job_ended(job, always: bool = False, state: str | None = None, reason: str | None = None) -> None:
    """The end-of-job notice, in the transaction that ends the job: mailed when the job asked for
    it, when someone else ended it and the owner must know why (`always`), or as the owner's
    preferences say for how it ended."""
    kind = end_kind(state or job.state, reason if reason is not None else job.reason)
    mail = True if (job.notify or always) else None
    notice(job.id, job.user_id, kind, f"ended:{job.id}", mail=mail)


def enqueue_job_started(job_id: int, user_id: int, run: int = 0) -> None:
    """`run`: how often the job was preempted before (each run after a preemption starts anew)."""
    notice(job_id, user_id, "job_started", f"started:{job_id}" + (f":{run}" if run else ""))


def enqueue_job_preempted(job_id: int, user_id: int, preemption_id: int) -> None:
    notice(job_id, user_id, "job_preempted", f"preempted:{preemption_id}")


def job_preempted_message(job: Job, sender: str, base_url: str) -> EmailMessage:
    from ..models import Preemption
    p = db.session.execute(select(Preemption).where(Preemption.job_id == job.id).order_by(Preemption.id.desc())).scalar()
    with force_locale(job.user.language or "en"):
        msg = EmailMessage()
        msg["Subject"] = _("[Crater] Job %(name)s (#%(id)s) was preempted and waits to run again", name=job.display_name,
                           id=job.id)
        msg["From"], msg["To"] = sender, job.user.email
        lines = [vocabulary.preemption_words(p) if p is not None else ""]
        lines.append(_("It ran on GPUs lent beyond its account's guarantee. It is back in its account's queue, in its "
                       "original place, and runs again by itself when GPUs are free; a job that writes checkpoints to "
                       "$CRATER_CHECKPOINT_DIR can resume from its last one."))
        if base_url:
            lines.append(_("Details: %(url)s", url=f"{base_url}/jobs/{job.id}"))
        msg.set_content("\n\n".join(line for line in lines if line) + "\n")
    return msg


def extension_message(job: Job, request_id: int, sender: str, base_url: str) -> EmailMessage | None:
    """A manager's decision on the owner's request for more time."""
    from ..models import ExtensionRequest
    request = db.session.get(ExtensionRequest, request_id)
    if request is None:
        return None
    granted = request.state == "granted"
    with force_locale(job.user.language or "en"):
        msg = EmailMessage()
        msg["Subject"] = (_("[Crater] More time for job %(name)s (#%(id)s): granted", name=job.display_name, id=job.id)
                          if granted else
                          _("[Crater] More time for job %(name)s (#%(id)s): refused", name=job.display_name, id=job.id))
        msg["From"], msg["To"] = sender, job.user.email
        lines = [vocabulary.extension_decision_words(granted, request.hours, request.decided_by, request.note)]
        if granted:
            lines.append(_("Its time limit is now %(hours)s hours.", hours=round((job.time_limit_seconds or 0) / 3600, 1)))
        if base_url:
            lines.append(_("Details: %(url)s", url=f"{base_url}/jobs/{job.id}"))
        msg.set_content("\n\n".join(lines) + "\n")
    return msg


def job_ended_message(job: Job, sender: str, base_url: str) -> EmailMessage:
    with force_locale(job.user.language or "en"):
        msg = EmailMessage()
        ended = vocabulary.ended_words(job.state)
        msg["Subject"] = _("[Crater] Job %(name)s (#%(id)s) %(state)s", name=job.display_name, id=job.id, state=ended)
        msg["From"], msg["To"] = sender, job.user.email
        lines = [_("Your job %(name)s (#%(id)s) %(state)s.", name=job.display_name, id=job.id, state=ended)]
        if job.reason and job.state != vocabulary.JobState.SUCCEEDED.value:
            lines.append(_("Reason: %(reason)s", reason=vocabulary.reason_text(job)))
        if job.exit_code is not None:
            lines.append(_("Exit code: %(code)s", code=job.exit_code))
        if base_url:
            lines.append(_("Details and logs: %(url)s", url=f"{base_url}/jobs/{job.id}"))
        msg.set_content("\n\n".join(lines) + "\n")
    return msg


def send(msg: EmailMessage, smtp_url: str, timeout: float = 10.0) -> None:
    url = urlsplit(smtp_url)
    host, port = url.hostname or "localhost", url.port
    if url.scheme == "smtps":
        server = smtplib.SMTP_SSL(host, port or 465, timeout=timeout, context=ssl.create_default_context())
    else:
        server = smtplib.SMTP(host, port or 25, timeout=timeout)
    try:
        if url.scheme == "smtp+starttls":
            server.starttls(context=ssl.create_default_context())
        if url.username:
            server.login(unquote(url.username), unquote(url.password or ""))
        server.send_message(msg)
    finally:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            server.quit()


# ---- the sender's side -------------------------------------------------------------------------

def job_started_message(job: Job, sender: str, base_url: str) -> EmailMessage:
    with force_locale(job.user.language or "en"):
        msg = EmailMessage()
        msg["Subject"] = _("[Crater] Job %(name)s (#%(id)s) is running", name=job.display_name, id=job.id)
        msg["From"], msg["To"] = sender, job.user.email
        lines = [_("Your job %(name)s (#%(id)s) started running.", name=job.display_name, id=job.id)]
        if base_url:
            lines.append(_("Details: %(url)s", url=f"{base_url}/jobs/{job.id}"))
        msg.set_content("\n\n".join(lines) + "\n")
    return msg


def warning_message(job: Job, kind: str, act_at: datetime | None, sender: str, base_url: str) -> EmailMessage:
    """A policy's warning: what will happen when, and what prevents it."""
    with force_locale(job.user.language or "en"):
        msg = EmailMessage()
        when = act_at.strftime("%Y-%m-%d %H:%M UTC") if act_at else "?"
        if kind == "idle_gpu":
            msg["Subject"] = _("[Crater] Job %(name)s (#%(id)s) will be stopped: its GPUs are idle", name=job.display_name,
                               id=job.id)
            lines = [_("The GPUs of your job %(name)s (#%(id)s) have been idle. It will be stopped at %(when)s unless "
                       "they become busy before then.", name=job.display_name, id=job.id, when=when),
                     _("If the job still needs its GPUs, start using them, or ask an administrator to lock the job; "
                       "otherwise stop it yourself so others can use them.")]
        else:
            msg["Subject"] = _("[Crater] Job %(name)s (#%(id)s) reaches its time limit soon", name=job.display_name, id=job.id)
            lines = [_("Your job %(name)s (#%(id)s) reaches its time limit at %(when)s and will then be stopped.",
                       name=job.display_name, id=job.id, when=when),
                     _("Ask for more time on the job's page if it needs longer.")]
        if base_url:
            lines.append(_("Details: %(url)s", url=f"{base_url}/jobs/{job.id}"))
        msg["From"], msg["To"] = sender, job.user.email
        msg.set_content("\n\n".join(lines) + "\n")
    return msg


def drain_message(job: Job, drain_id: int, sender: str, base_url: str) -> EmailMessage | None:
    """The warning of a drain with a grace period: when the job stops, and why."""
    from ..models import NodeDrain
    drain = db.session.get(NodeDrain, drain_id)
    if drain is None or drain.state == "cancelled":
        return None
    with force_locale(job.user.language or "en"):
        msg = EmailMessage()
        msg["Subject"] = _("[Crater] Job %(name)s (#%(id)s) will be stopped at %(when)s UTC: its node is drained",
                           name=job.display_name, id=job.id, when=drain.stop_at.strftime("%Y-%m-%d %H:%M"))
        msg["From"], msg["To"] = sender, job.user.email
        lines = [vocabulary.drain_words(drain),
                 _("Save a checkpoint before then; a job that writes checkpoints can be started again from them on "
                   "another node.")]
        if base_url:
            lines.append(_("Details: %(url)s", url=f"{base_url}/jobs/{job.id}"))
        msg.set_content("\n\n".join(lines) + "\n")
    return msg


def maintenance_message(row: OutboxMessage, maintenance_id: int, sender: str, base_url: str) -> EmailMessage | None:
    """An announced maintenance, to an owner of jobs it touches: what, when, which of their jobs."""
    from ..models import Maintenance
    m = db.session.get(Maintenance, maintenance_id)
    if m is None or m.cancelled_at is not None:
        return None
    mine = db.session.execute(m.touched_jobs(Job.id, Job.display_name).where(Job.user_id == row.user_id)
                              .distinct().order_by(Job.id).limit(50)).all()
    with force_locale(row.user.language or "en"):
        msg = EmailMessage()
        msg["Subject"] = _("[Crater] Maintenance from %(start)s to %(end)s UTC", start=m.starts_at.strftime("%Y-%m-%d %H:%M"),
                           end=m.ends_at.strftime("%Y-%m-%d %H:%M"))
        msg["From"], msg["To"] = sender, row.user.email
        lines = [vocabulary.maintenance_words(m), m.message]
        if mine:
            lines.append(_("Your jobs it touches:") + "\n" + "\n".join(
                f"  #{j.id} {j.display_name}" + (f"  {base_url}/jobs/{j.id}" if base_url else "") for j in mine))
        if m.drain_minutes is not None:
            lines.append(_("Jobs on these nodes are stopped when it starts; their owners are warned %(n)s minutes "
                           "before.", n=m.drain_minutes))
        msg.set_content("\n\n".join(lines) + "\n")
    return msg


def _compose(row: OutboxMessage, settings: MailSettings) -> EmailMessage | None:
    """The notice's mail, or None when there is nothing to say (any more)."""
    if row.kind == "maintenance":  # the only notice of no one job
        return maintenance_message(row, int(row.dedupe_key.split(":")[1]), settings.sender, settings.public_url)
    if row.job is None:
        return None
    if row.kind == "drain_warning":
        return drain_message(row.job, int(row.dedupe_key.split(":")[1]), settings.sender, settings.public_url)
    if row.kind == JOB_ENDED:
        return job_ended_message(row.job, settings.sender, settings.public_url)
    if row.kind == "job_started":
        return job_started_message(row.job, settings.sender, settings.public_url)
    if row.kind == "job_preempted":
        return job_preempted_message(row.job, settings.sender, settings.public_url)
    if row.kind == "extension_decided":
        return extension_message(row.job, int(row.dedupe_key.rsplit(":", 1)[1]), settings.sender, settings.public_url)
    if row.kind in ("warning_idle_gpu", "warning_time_limit"):
        from ..models import JobWarning
        kind = row.kind.removeprefix("warning_")
        warning = db.session.execute(select(JobWarning).where(JobWarning.job_id == row.job_id, JobWarning.kind == kind)).scalar()
        if warning is None:
            return None  # cleared before it went out (busy again, extended, locked, ended): nothing to say
        return warning_message(row.job, kind, warning.act_at, settings.sender, settings.public_url)
    return None


def _message_for(row: OutboxMessage, settings: MailSettings) -> EmailMessage | None:
    msg = _compose(row, settings) if row.user.email else None
    if msg is not None:
        # One Message-ID per notice, the same on every attempt: a notice sent twice (see
        # deliver_due) is one mail to the clients that go by it.
        msg["Message-ID"] = f"<crater-outbox-{row.id}.{row.created_at:%Y%m%d%H%M%S}@{_domain(settings)}>"
    return msg


def _domain(settings: MailSettings) -> str:
    return urlsplit(settings.public_url).hostname or "crater.invalid"


def _claim(row_id: int, now: datetime, sender_id: str) -> bool:
    claimed = db.session.execute(
        update(OutboxMessage).where(OutboxMessage.id == row_id, OutboxMessage.sent_at.is_(None),
                                    or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now))
        .values(claimed_until=now + timedelta(seconds=CLAIM_SECONDS), attempts=OutboxMessage.attempts + 1))
    db.session.commit()
    return claimed.rowcount == 1


# Notices the mail server accepted whose "sent" mark did not reach the database yet (it was away,
# or a deadlock victim): marked before anything else is sent, never sent again by this process.
_SENT_UNMARKED: dict[int, tuple[int | None, datetime]] = {}


def _mark_sent(row_id: int, job_id: int | None, at: datetime) -> None:
    def mark():
        db.session.execute(update(OutboxMessage).where(OutboxMessage.id == row_id).values(sent_at=at, last_error=""))
        if job_id is not None:
            db.session.execute(update(Job).where(Job.id == job_id).values(notified_at=at))
        db.session.commit()
    retrying(mark)


def _mark_unmarked() -> None:
    for row_id, (job_id, at) in list(_SENT_UNMARKED.items()):
        _mark_sent(row_id, job_id, at)  # raises while the database is still away: nothing else is sent then
        _SENT_UNMARKED.pop(row_id, None)


def deliver_due(settings: MailSettings, now: datetime, sender_id: str = "", limit: int = 20) -> tuple[int, int]:
    """Send up to `limit` due notices; (sent, failed). No transaction is open while the mail
    server is talked to: each notice is read and claimed (commit), sent, then marked (commit). A
    mark that fails after the server accepted the mail is kept and done first next time, so the
    claim never expires into a second sending. (A process killed between the server's answer and
    the mark would send that one notice again after CLAIM_SECONDS; its Message-ID stays the same,
    so mail clients show it once.)"""
    _mark_unmarked()
    rows = db.session.execute(
        select(OutboxMessage).where(OutboxMessage.sent_at.is_(None), OutboxMessage.next_attempt_at <= now,
                                    or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now))
        .order_by(OutboxMessage.id).limit(limit)).scalars().all()
    work = []
    for row in rows:
        work.append((row.id, row.job_id, row.attempts, None if not settings.smtp_url else _message_for(row, settings)))
    db.session.commit()  # end the read before any mail server is talked to
    sent = failed = 0
    for row_id, job_id, attempts, msg in work:
        if not _claim(row_id, now, sender_id):
            continue
        error = ""
        if msg is not None:
            try:
                send(msg, settings.smtp_url, settings.timeout)
            except (OSError, smtplib.SMTPException) as exc:
                error = type(exc).__name__
        if error:
            failed += 1
            delay = min(MAX_RETRY_DELAY, 30 * 2 ** min(attempts, 10))
            log.warning("mail %s not sent (%s); retrying in %s s", row_id, error, delay)
            db.session.execute(update(OutboxMessage).where(OutboxMessage.id == row_id).values(
                claimed_until=None, last_error=error[:200], next_attempt_at=now + timedelta(seconds=delay)))
            db.session.commit()
        else:
            sent += 1  # also: nothing to send (no mail configured, no address) counts as done
            _SENT_UNMARKED[row_id] = (job_id, now)
            _mark_sent(row_id, job_id, now)
            _SENT_UNMARKED.pop(row_id, None)
    return sent, failed

