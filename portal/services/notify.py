"""Email when a job ends (for jobs submitted with "email me when it ends"). Sent by the syncer, in
the owner's language, through CRATER_SMTP_URL: smtp://[user:password@]host[:port] (plain),
smtp+starttls://... or smtps://... . Credentials never reach a log line."""
from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _

from ..models import Job

log = logging.getLogger("crater.notify")


def _state_words(job: Job) -> str:
    return {"Succeeded": _("succeeded"), "Failed": _("failed"), "Stopped": _("was stopped"),
            "Lost": _("was lost")}.get(job.state, job.state)


def job_ended_message(job: Job, sender: str, base_url: str) -> EmailMessage:
    with force_locale(job.user.language or "en"):
        msg = EmailMessage()
        msg["Subject"] = _("[Crater] Job %(name)s (#%(id)s) %(state)s", name=job.display_name, id=job.id,
                           state=_state_words(job))
        msg["From"], msg["To"] = sender, job.user.email
        lines = [_("Your job %(name)s (#%(id)s) %(state)s.", name=job.display_name, id=job.id, state=_state_words(job))]
        if job.reason and job.state != "Succeeded":
            lines.append(_("Reason: %(reason)s %(message)s", reason=job.reason, message=job.message or ""))
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
        try:
            server.quit()
        except smtplib.SMTPException:
            pass


def job_ended(job: Job) -> bool:
    """Mail the owner; True when sent (or nothing to send), False to try again later."""
    smtp_url = current_app.config.get("SMTP_URL", "")
    if not smtp_url or not job.user.email:
        return True
    try:
        send(job_ended_message(job, current_app.config["SMTP_FROM"], current_app.config.get("PUBLIC_URL", "")), smtp_url)
        return True
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("mail about job %s not sent: %s", job.id, type(exc).__name__)
        return False
