"""Users: sign-in (OIDC and local passwords), the admin's user list, roles and deactivation.
Touches the DB only."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from flask_babel import gettext as _
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from ..extensions import db
from ..models import AuthSource, Role, User, utcnow
from . import accounts, audit
from .context import SYSTEM, Actor
from .errors import AuthenticationFailed, Conflict, Forbidden, NotFound, ValidationFailed
from .pagination import Page, contains_text, paginate

USERNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
MIN_PASSWORD = 12

@functools.cache
def _dummy_hash() -> str:
    """Checked when a username does not exist, so a wrong name costs as much time as a wrong
    password (made on first use, not at import)."""
    return generate_password_hash("crater-timing-equaliser")


def get_active_user(user_id) -> User | None:
    """The session's user (Flask-Login's loader): None when missing or deactivated, which ends
    every existing session of a deactivated user on its next request."""
    try:
        user = db.session.get(User, int(user_id))
    except (TypeError, ValueError):
        return None
    if user is None or not user.active:
        return None
    from .restrictions import PORTAL, find
    return None if find(user, PORTAL) else user  # restricted from the portal: signed out too


def find_by_username(username: str) -> User | None:
    return db.session.execute(select(User).where(User.username == username)).scalar_one_or_none()


# ---- sign-in -------------------------------------------------------------------------------

def authenticate_local(username: str, password: str, client_ip: str = "") -> User:
    user = find_by_username((username or "").strip().lower())
    hashed = user.password_hash if user is not None and user.password_hash else _dummy_hash()
    ok = check_password_hash(hashed, password or "")
    if user is None or not user.password_hash or not ok:
        raise AuthenticationFailed(_("Wrong username or password."))
    if not user.active:
        _refuse_login(user, client_ip, "deactivated")
    _check_restriction(user, client_ip)
    _record_login(user, client_ip, "local")
    return user


@dataclass
class OidcIdentity:
    issuer: str
    subject: str
    username: str
    display_name: str
    email: str
    groups: tuple[str, ...]


def identity_from_claims(issuer: str, claims: dict) -> OidcIdentity:
    sub = str(claims.get("sub") or "")
    if not sub:
        raise AuthenticationFailed(_("The sign-in provider sent no subject (sub) claim."))
    email = str(claims.get("email") or "")
    preferred = str(claims.get("preferred_username") or "") or email.split("@")[0] or sub
    groups = claims.get("groups") or ()
    if isinstance(groups, str):
        groups = (groups,)
    return OidcIdentity(
        issuer=issuer, subject=sub, username=_clean_username(preferred),
        display_name=str(claims.get("name") or "")[:128], email=email[:254],
        groups=tuple(str(g) for g in groups),
    )


def login_from_oidc(identity: OidcIdentity, admin_group: str = "", client_ip: str = "") -> User:
    """Create the user on first sign-in, refresh name/email (and role, when an admin group is
    configured) on later ones. The (issuer, subject) pair identifies a person, never the username."""
    user = _find_oidc_user(identity) or _create_oidc_user(identity, client_ip)
    if not user.active:
        _refuse_login(user, client_ip, "deactivated")
    _check_restriction(user, client_ip)
    user.display_name = identity.display_name or user.display_name
    user.email = identity.email or user.email
    if admin_group:
        user.role = Role.ADMIN.value if admin_group in identity.groups else Role.USER.value
    _record_login(user, client_ip, "oidc")
    return user


def _find_oidc_user(identity: OidcIdentity, current: bool = False) -> User | None:
    """`current`: a locking read, which sees rows committed after this transaction's snapshot
    (InnoDB's plain reads repeat the snapshot, so a racing first sign-in would stay invisible)."""
    stmt = select(User).where(User.oidc_issuer == identity.issuer, User.oidc_subject == identity.subject)
    return db.session.execute(stmt.with_for_update(read=True) if current else stmt).scalar_one_or_none()


def _create_oidc_user(identity: OidcIdentity, client_ip: str) -> User:
    """First sign-in. Two first sign-ins racing (the same person twice, or two people wanting the
    same username) meet the unique constraints: the loser looks again, then takes the next name."""
    for _attempt in range(3):
        try:
            with db.session.begin_nested():
                user = User(username=_free_username(identity.username), auth_source=AuthSource.OIDC.value,
                            oidc_issuer=identity.issuer, oidc_subject=identity.subject, role=Role.USER.value)
                db.session.add(user)
                db.session.flush()
        except IntegrityError:
            existing = _find_oidc_user(identity, current=True)
            if existing is not None:
                return existing
            continue
        accounts.join_default_account(user)
        audit.record(Actor(user, client_ip), "user.create", "user", user.id, {"source": "oidc"})
        return user
    raise Conflict(_("Your account could not be created; please sign in again."))


def _record_login(user: User, client_ip: str, source: str) -> None:
    user.last_login_at = utcnow()
    audit.record(Actor(user, client_ip), "user.login", "user", user.id, {"source": source})
    db.session.commit()


def _refuse_login(user: User, client_ip: str, why: str, message: str = ""):
    audit.record(Actor(user, client_ip), "user.login_refused", "user", user.id, {"reason": why})
    db.session.commit()
    raise Forbidden(message or _("This user is deactivated. Ask an administrator to reactivate it."))


def _check_restriction(user: User, client_ip: str) -> None:
    from .restrictions import PORTAL, find, message
    restriction = find(user, PORTAL)
    if restriction is not None:
        _refuse_login(user, client_ip, "restricted", message(restriction))


def _clean_username(raw: str) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", raw.strip().lower()).strip("-._")[:60]
    return name or "user"


def _free_username(base: str) -> str:
    """`base`, or `base-2`, `base-3`, ... : the first one no other user has."""
    taken = set(db.session.execute(
        select(User.username).where(or_(User.username == base, User.username.like(base + "-%")))
    ).scalars())
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


# ---- local administrators (command line) ---------------------------------------------------

def create_local_admin(username: str, password: str) -> tuple[User, bool]:
    """Create a local admin, or reset the password of an existing local user and make it admin
    (break-glass). Returns (user, created)."""
    username = (username or "").strip().lower()
    errors = {}
    if not USERNAME_RE.match(username):
        errors["username"] = _("Use 1-64 lowercase letters, digits, '.', '_' or '-'.")
    if len(password or "") < MIN_PASSWORD:
        errors["password"] = _("Use at least %(n)s characters.", n=MIN_PASSWORD)
    if errors:
        raise ValidationFailed(errors)
    user = find_by_username(username)
    created = user is None
    if user is None:
        user = User(username=username, auth_source=AuthSource.LOCAL.value)
        db.session.add(user)
        db.session.flush()
        accounts.join_default_account(user)
    elif user.auth_source != AuthSource.LOCAL.value:
        raise Conflict(_("User %(name)s signs in through SSO; it cannot get a local password.", name=username))
    user.password_hash = generate_password_hash(password)
    user.role = Role.ADMIN.value
    user.active = True
    audit.record(SYSTEM, "user.create_admin", "user", user.id, {"created": created})
    db.session.commit()
    return user, created


def set_language(user: User, language: str) -> None:
    user.language = language
    db.session.commit()


# ---- administration ------------------------------------------------------------------------

@dataclass
class UserFilter:
    q: str = ""
    role: str = ""
    status: str = ""  # "", "active", "inactive"


# What the users table shows. Its rows are plain mappings of these columns: cheaper to load and
# to read in the template than whole User objects.
LIST_COLUMNS = (User.id, User.username, User.display_name, User.email, User.role, User.active,
                User.auth_source, User.last_login_at, User.restricted)


def list_row(user: User) -> dict:
    """One user as a row of the users table (after a change, for the swapped row)."""
    return {column.key: getattr(user, column.key) for column in LIST_COLUMNS}


def list_users(actor: Actor, filters: UserFilter, page: int, per_page: int) -> Page:
    """A page of users (mappings of LIST_COLUMNS), filtered and sorted by username."""
    actor.require_admin()
    stmt = select(*LIST_COLUMNS)
    if filters.q:
        stmt = stmt.where(contains_text(filters.q, User.username, User.display_name, User.email))
    if filters.role in (Role.USER.value, Role.ADMIN.value):
        stmt = stmt.where(User.role == filters.role)
    if filters.status == "active":
        stmt = stmt.where(User.active.is_(True))
    elif filters.status == "inactive":
        stmt = stmt.where(User.active.is_(False))
    return paginate(stmt.order_by(User.username), page, per_page, rows="mappings")


def get_user(actor: Actor, user_id: int) -> User:
    actor.require_admin()
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(_("No such user."))
    return user


def set_role(actor: Actor, user_id: int, role: str) -> User:
    user = get_user(actor, user_id)
    if role not in (Role.USER.value, Role.ADMIN.value):
        raise ValidationFailed({"role": _("Choose user or admin.")})
    if actor.user is not None and user.id == actor.user.id and role != Role.ADMIN.value:
        raise Conflict(_("You cannot take away your own admin role; ask another administrator."))
    if user.role != role:
        audit.record(actor, "user.role", "user", user.id, {"from": user.role, "to": role, "username": user.username})
        user.role = role
        db.session.commit()
    return user


def set_active(actor: Actor, user_id: int, active: bool) -> User:
    user = get_user(actor, user_id)
    if actor.user is not None and user.id == actor.user.id and not active:
        raise Conflict(_("You cannot deactivate yourself."))
    if user.active != active:
        audit.record(actor, "user.reactivate" if active else "user.deactivate", "user", user.id,
                     {"username": user.username})
        user.active = active
        if not active:
            _cancel_queued_jobs(actor, user)
            from .tokens import revoke_all_of
            revoke_all_of(actor, user.id)  # its API tokens end with it
        db.session.commit()
    return user


def _cancel_queued_jobs(actor: Actor, user: User) -> None:
    """A deactivated user's queued jobs never start: they end Stopped (their running jobs are left
    to their time limits and the policies, as before). The caller commits."""
    from ..models import Job, JobState
    from ..vocabulary import Reason
    from . import job_states
    for job_id in db.session.execute(select(Job.id).where(Job.user_id == user.id, Job.state == JobState.QUEUED.value)).scalars().all():
        _job, ended = job_states.ended(job_id, (JobState.QUEUED.value,), JobState.STOPPED.value,
                                       Reason.STOPPED_BY_ADMIN, f"Cancelled in the queue: {user.username} was deactivated by {actor.name}.")
        if ended:
            audit.record(actor, "job.cancel", "job", job_id, {"reason": "owner deactivated"})
