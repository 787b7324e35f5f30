"""The mail outbox: a notice is written with the change it tells of, delivered by the sender with
retries, never twice; its words are the pages' words. Against a real SMTP server on loopback."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from portal.extensions import db
from portal.models import Job, OutboxMessage, utcnow
from portal.services import notify
from process_stack import free_port


@pytest.fixture
def ended_job(make):
    alice = make.user("alice")
    lab = make.account("vision-lab", members={alice: "member"})
    return make.job(alice, lab, state="Failed", reason="OOMKilled", exit_code=137, notify=True, display_name="训练")


def settings_for(url: str) -> notify.MailSettings:
    return notify.MailSettings(url, "crater@example.edu", "https://crater.example.edu", timeout=2)


def queue(app, job_id):
    with app.app_context():
        notify.enqueue_job_ended(db.session.get(Job, job_id))
        db.session.commit()


def deliver(app, url, now=None):
    with app.app_context():
        result = notify.deliver_due(settings_for(url), now or utcnow())
        db.session.remove()
        return result


def test_a_queued_notice_is_sent_once(app, mailbox, ended_job):
    queue(app, ended_job)
    assert deliver(app, mailbox.url) == (1, 0)
    assert deliver(app, mailbox.url) == (0, 0)
    assert len(mailbox.messages) == 1
    with app.app_context():
        assert db.session.get(Job, ended_job).notified_at is not None


def test_the_mail_uses_the_pages_words_not_codes(app, mailbox, ended_job):
    queue(app, ended_job)
    deliver(app, mailbox.url)
    body = mailbox.messages[0]
    assert "Out of memory" in body and "OOMKilled" not in body and "/jobs/" in body


def test_the_same_notice_cannot_be_queued_twice(app, ended_job):
    queue(app, ended_job)
    with pytest.raises(IntegrityError):
        queue(app, ended_job)


def test_a_mail_server_that_is_away_gets_the_notice_later(app, mailbox, ended_job):
    queue(app, ended_job)
    dead = f"smtp://127.0.0.1:{free_port()}"
    assert deliver(app, dead) == (0, 1)
    assert deliver(app, mailbox.url) == (0, 0)  # not due yet: it waits before the next attempt
    with app.app_context():
        row = db.session.query(OutboxMessage).one()
        assert row.attempts == 1 and row.last_error and row.sent_at is None
    assert deliver(app, mailbox.url, utcnow() + timedelta(minutes=2)) == (1, 0)
    assert len(mailbox.messages) == 1


def test_a_notice_claimed_by_another_sender_is_left_to_it(app, mailbox, ended_job):
    queue(app, ended_job)
    with app.app_context():
        row = db.session.query(OutboxMessage).one()
        row.claimed_until = utcnow() + timedelta(seconds=60)
        db.session.commit()
    assert deliver(app, mailbox.url) == (0, 0) and mailbox.messages == []


def test_a_job_that_did_not_ask_queues_nothing(app, make):
    alice = make.user("alice")
    lab = make.account("vision-lab", members={alice: "member"})
    quiet = make.job(alice, lab, state="Succeeded", notify=False)
    queue(app, quiet)
    with app.app_context():
        assert db.session.query(OutboxMessage).count() == 0


def test_a_sent_notice_whose_mark_fails_is_not_sent_again(app, ended_job):
    """The mail server accepts the notice, then the database refuses the "sent" mark (here: a
    writer holds SQLite's lock past the busy timeout; in production a deadlock or a restart). The
    next round marks it first: once its claim has expired it is still not sent a second time."""
    import sqlite3
    import threading

    from aiosmtpd.controller import Controller
    from sqlalchemy.exc import OperationalError

    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if not uri.startswith("sqlite:///"):
        pytest.skip("holds SQLite's file lock; the logic is the same on MariaDB")
    path = uri[len("sqlite:///"):]
    received, release = [], threading.Event()

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope.content)
            if len(received) == 1:  # take the database's write lock before answering, keep it 6 s
                lock = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                lock.execute("BEGIN EXCLUSIVE")
                threading.Thread(target=lambda: (release.wait(6), lock.rollback(), lock.close()), daemon=True).start()
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        queue(app, ended_job)
        with pytest.raises(OperationalError):
            deliver(app, f"smtp://127.0.0.1:{port}")
        release.set()
        later = utcnow() + timedelta(seconds=notify.CLAIM_SECONDS + 60)  # the claim has long expired
        assert deliver(app, f"smtp://127.0.0.1:{port}", later) == (0, 0)
        with app.app_context():
            row = db.session.query(OutboxMessage).one()
            assert row.sent_at is not None and row.attempts == 1
        assert len(received) == 1
    finally:
        release.set()
        controller.stop()
