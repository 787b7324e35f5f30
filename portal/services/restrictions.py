"""Admins' restrictions of a user: from submitting jobs, from the portal as a whole (pages, the API,
craterctl, terminals, WebDAV), or from the shared storage (/files and WebDAV), until a time or
until lifted, with a reason. Enforced here, for every door alike: `check(user, kind)` raises
`Restricted` (403) with the reason and the end. A portal restriction covers the other two.

Queued jobs of a user restricted from submitting wait (the admitter leaves them: `held_users`);
the admin chooses whether running jobs stop. A restriction ends by itself at its end time: every
check compares with now. `users.restricted` says whether to look at all, so an unrestricted user
costs no query; it is cleared the first time a check finds nothing left."""
from __future__ import annotations

from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import or_, select, update

from ..extensions import db
from ..models import ACTIVE_STATES, Job, JobState, Restriction, User, utcnow
from . import audit, job_states
from .context import Actor
from .errors import Conflict, Forbidden, NotFound, ValidationFailed

SUBMIT, PORTAL, STORAGE = "submit", "portal", "storage"
KINDS = (SUBMIT, PORTAL, STORAGE)


class Restricted(Forbidden):
    """The user is restricted from this; the message says why and until when."""


def words(kind: str) -> str:
    return {SUBMIT: _("submitting jobs"), PORTAL: _("the portal"), STORAGE: _("the shared storage")}[kind]


def message(r: Restriction) -> str:
    if r.until is None:
        return _("You are restricted from %(what)s until an administrator lifts it: %(reason)s",
                 what=words(r.kind), reason=r.reason)
    return _("You are restricted from %(what)s until %(until)s UTC: %(reason)s", what=words(r.kind),
             until=r.until.strftime("%Y-%m-%d %H:%M"), reason=r.reason)


def _active_query(now: datetime):
    return select(Restriction).where(Restriction.lifted_at.is_(None),
                                     or_(Restriction.until.is_(None), Restriction.until > now))


def active_of(user: User | None, now: datetime | None = None) -> list[Restriction]:
    """The user's restrictions in force now (none without a query when the user has none)."""
    if user is None or not user.restricted:
        return []
    now = now or utcnow()
    rows = list(db.session.execute(_active_query(now).where(Restriction.user_id == user.id)
                                   .order_by(Restriction.id)).scalars())
    if not rows:  # all ended: stop looking (guarded, in its own short commit)
        db.session.execute(update(User).where(User.id == user.id).values(restricted=False))
        db.session.commit()
        user.restricted = False
    return rows


def find(user: User | None, kind: str, now: datetime | None = None) -> Restriction | None:
    """The restriction that keeps `user` from `kind` now, if any (a portal restriction keeps them
    from everything)."""
    for r in active_of(user, now):
        if r.kind in (kind, PORTAL):
            return r
    return None


def check(user: User | None, kind: str, now: datetime | None = None) -> None:
    r = find(user, kind, now)
    if r is not None:
        raise Restricted(message(r))


def held_users(now: datetime) -> set[int]:
    """Users whose queued jobs wait: restricted from submitting (or from the portal). One query."""
    return set(db.session.execute(select(Restriction.user_id).where(
        Restriction.kind.in_((SUBMIT, PORTAL)), Restriction.lifted_at.is_(None),
        or_(Restriction.until.is_(None), Restriction.until > now))).scalars())


# ---- admins -------------------------------------------------------------------------------------

def list_of(actor: Actor, user_id: int) -> tuple[User, list[Restriction]]:
    actor.require_admin()
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(_("No such user."))
    rows = list(db.session.execute(select(Restriction).where(Restriction.user_id == user_id)
                                   .order_by(Restriction.id.desc()).limit(100)).scalars())
    return user, rows


def restrict(actor: Actor, user_id: int, kind: str, until: datetime | None, reason: str, stop_running: bool = False,
             now: datetime | None = None) -> tuple[Restriction, list[int]]:
    """Restrict a user; returns the row and the ids of the jobs to stop (those running or pending,
    when `stop_running` and the restriction is from submitting or from the portal: the caller
    stops them through the jobs service, which needs the cluster)."""
    user, _rows = list_of(actor, user_id)
    now = now or utcnow()
    errors = {}
    if kind not in KINDS:
        errors["kind"] = _("Choose what to restrict.")
    if until is not None and until <= now:
        errors["until"] = _("Choose a time in the future, or none.")
    reason = (reason or "").strip()
    if not reason:
        errors["reason"] = _("Say why: the user reads it.")
    elif len(reason) > 500:
        errors["reason"] = _("At most 500 characters.")
    if errors:
        raise ValidationFailed(errors)
    if actor.user is not None and actor.user.id == user.id:
        raise Conflict(_("You cannot restrict yourself."))
    row = Restriction(user_id=user.id, kind=kind, until=until, reason=reason, stop_running=bool(stop_running),
                      created_by=actor.user.id if actor.user else None, created_at=now)
    db.session.add(row)
    user.restricted = True
    db.session.flush()
    if kind in (SUBMIT, PORTAL):  # its queued jobs say why they wait (the admitter leaves them)
        held = list(db.session.execute(select(Job.id).where(Job.user_id == user.id,
                                                             Job.state == JobState.QUEUED.value)).scalars())
        if held:
            db.session.execute(update(Job).where(Job.id.in_(held)).values(
                queue_blocker={"kind": "restricted", "until": until.isoformat() if until else ""}, queue_position=None))
            job_states.touch(held)
    audit.record(actor, "user.restrict", "user", user.id, {"username": user.username, "kind": kind, "reason": reason,
                                                          "until": until.isoformat() if until else "indefinitely",
                                                          "stop_running": bool(stop_running)})
    db.session.commit()
    to_stop = []
    if stop_running and kind in (SUBMIT, PORTAL):
        to_stop = list(db.session.execute(select(Job.id).where(Job.user_id == user.id, Job.state.in_(
            [s for s in ACTIVE_STATES if s != JobState.QUEUED.value]))).scalars())
    return row, to_stop


def lift(actor: Actor, user_id: int, restriction_id: int, now: datetime | None = None) -> Restriction:
    actor.require_admin()
    row = db.session.get(Restriction, restriction_id)
    if row is None or row.user_id != user_id:
        raise NotFound(_("No such restriction."))
    if row.lifted_at is None:
        row.lifted_at, row.lifted_by = now or utcnow(), actor.user.id if actor.user else None
        audit.record(actor, "user.unrestrict", "user", user_id, {"kind": row.kind, "restriction": row.id})
        db.session.commit()
    return row
