"""Accounts (labs/projects), their quotas and members. Admins manage every account; an account's
managers manage its members. Touches the DB only."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date

from flask_babel import gettext as _
from sqlalchemy import String, cast, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import contains_eager, joinedload

from ..extensions import db
from ..models import Account, AccountGpuQuota, Job, Membership, MemberRole, User
from ..models.account import DEFAULT_ACCOUNT, DEFAULT_DESCRIPTION
from ..models.types import MAX_ID
from . import audit
from .context import Actor
from .errors import Conflict, Forbidden, NotFound, ValidationFailed
from .pagination import Page, contains_text, paginate

QUOTA_FIELDS = ("gpu_quota", "cpu_quota", "memory_quota_gib", "max_jobs")
BORROW_FIELDS = ("borrow_limit", "lend_limit", "borrow_jupyter")  # services/scheduling, plan rule 6


@dataclass
class AccountInput:
    name: str
    display_name: str = ""
    description: str = ""
    gpu_quota: int | None = None
    cpu_quota: int | None = None
    memory_quota_gib: int | None = None
    max_jobs: int | None = None
    expires_on: date | None = None
    gpu_model_quotas: dict[str, int] = field(default_factory=dict)
    borrow_limit: int | None = None  # GPUs it may borrow beyond its guarantee at once (None: as many as are idle)
    lend_limit: int | None = None  # GPUs of its unused guarantee it never lends (None: lends all)
    borrow_jupyter: bool = False  # its JupyterLab jobs may borrow


# ---- the default account -------------------------------------------------------------------

def default_account() -> Account:
    """The account every user joins, created on first use (safe when two requests race)."""
    account = _by_name(DEFAULT_ACCOUNT)
    if account is not None:
        return account
    try:
        with db.session.begin_nested():
            account = Account(name=DEFAULT_ACCOUNT, display_name="Default",
                              description=DEFAULT_DESCRIPTION)
            db.session.add(account)
    except IntegrityError:
        account = _by_name(DEFAULT_ACCOUNT)
    return account


def join_default_account(user: User) -> None:
    db.session.add(Membership(account=default_account(), user_id=user.id, role=MemberRole.MEMBER.value))


def _by_name(name: str) -> Account | None:
    return db.session.execute(select(Account).where(Account.name == name)).scalar_one_or_none()


# ---- reading -------------------------------------------------------------------------------

def list_accounts(actor: Actor, q: str, page: int, per_page: int) -> Page:
    """Admin list: one page query gives each account's quotas, member count and per-model
    quotas (as `models`, {model: gpus}); rows are mappings, cheap to load and render."""
    actor.require_admin()
    stmt = _account_list_query()
    if q:
        stmt = stmt.where(contains_text(q, Account.name, Account.display_name))
    result = paginate(stmt, page, per_page, rows="mappings")
    result.items = [{**row, "models": _parse_models(row["models"])} for row in result.items]
    return result


@functools.cache
def _account_list_query():
    """Built once per process: SQL expressions are immutable, and building this one costs more
    than running it."""
    members = (select(func.count(Membership.id)).where(Membership.account_id == Account.id)
               .correlate(Account).scalar_subquery())
    models = (select(func.group_concat(AccountGpuQuota.gpu_model + "=" + cast(AccountGpuQuota.gpus, String)))
              .where(AccountGpuQuota.account_id == Account.id).correlate(Account).scalar_subquery())
    return (select(Account.id, Account.name, Account.display_name, *(getattr(Account, f) for f in QUOTA_FIELDS),
                   Account.expires_on, members.label("members"), models.label("models"))
            .order_by(Account.name))


def _parse_models(text: str | None) -> dict[str, int]:
    """"A100=4,V100=2" (from group_concat, in no particular order) -> {"A100": 4, "V100": 2}."""
    if not text:
        return {}
    return {model: int(gpus) for model, gpus in sorted(item.split("=") for item in text.split(","))}


def get_account(actor: Actor, account_id: int) -> Account:
    """The account (with its per-model quotas), if the actor may manage it: an admin, or a
    manager of this account."""
    account = db.session.get(Account, account_id, options=[joinedload(Account.gpu_model_quotas)])
    if account is None:
        raise NotFound(_("No such account."))
    if not actor.is_admin and not is_manager(actor.user, account.id):
        raise Forbidden(_("Only administrators and this account's managers can manage it."))
    return account


def account_to_edit(actor: Actor, account_id: int) -> Account:
    """An account for the admins' edit and delete pages."""
    actor.require_admin()
    return get_account(actor, account_id)


def is_manager(user: User | None, account_id: int) -> bool:
    if user is None:
        return False
    return db.session.execute(
        select(Membership.id).where(Membership.account_id == account_id, Membership.user_id == user.id,
                                    Membership.role == MemberRole.MANAGER.value)
    ).first() is not None


def my_memberships(user: User) -> list[Membership]:
    """The user's memberships with their accounts (joined) and per-model quotas: two queries."""
    return list(db.session.execute(
        select(Membership).where(Membership.user_id == user.id)
        .join(Membership.account).order_by(Account.name)
        .options(contains_eager(Membership.account).selectinload(Account.gpu_model_quotas))
    ).scalars())


def accounts_after(actor: Actor, everyone: bool, after_id: int | None, limit: int) -> tuple[list, dict, bool]:
    """The API's account listing: with `everyone` (admins only) every account after `after_id`,
    `limit` at a time; else the actor's own accounts, all at once. (accounts, role by account id,
    whether more follow)."""
    if everyone:
        actor.require_admin()
        stmt = select(Account).order_by(Account.id).limit(limit + 1)
        if after_id is not None:
            stmt = stmt.where(Account.id > after_id)
        rows = list(db.session.execute(stmt).scalars())
        return rows[:limit], {}, len(rows) > limit
    memberships = my_memberships(actor.user)
    return [m.account for m in memberships], {m.account.id: m.role for m in memberships}, False


def account_for_submission(actor: Actor, account_id: int | None, name: str) -> int:
    """The account a spec names (its id, or its name); without either, the user's only account
    besides the default account everyone is in. NotFound for a name that is not one of the
    user's (admins: any account's)."""
    if account_id is not None:
        if not 1 <= account_id <= MAX_ID:
            raise NotFound(_("No such account."))
        return account_id
    mine = my_memberships(actor.user)
    name = (name or "").strip()
    if name:
        found = [m.account.id for m in mine if m.account.name == name]
        if found:
            return found[0]
        if actor.is_admin:
            account = _by_name(name)
            if account is not None:
                return account.id
        raise NotFound(_("You are not a member of an account named %(name)s.", name=name))
    labs = [m for m in mine if m.account.name != DEFAULT_ACCOUNT]  # everyone is in the default one
    if len(labs) == 1 or len(mine) == 1:
        return (labs or mine)[0].account.id
    raise ValidationFailed({"account": _("Name the account (one of: %(names)s).",
                                         names=", ".join(m.account.name for m in mine) or "-")})


def list_members(actor: Actor, account_id: int, page: int, per_page: int) -> tuple[Account, Page]:
    account = get_account(actor, account_id)
    stmt = (select(Membership, User).join(User, Membership.user_id == User.id)
            .where(Membership.account_id == account.id)
            .order_by(Membership.role.desc(), User.username))
    return account, paginate(stmt, page, per_page, rows="tuples")


# ---- changing accounts (admins) ------------------------------------------------------------

def create_account(actor: Actor, data: AccountInput) -> Account:
    actor.require_admin()
    if _by_name(data.name) is not None:
        raise ValidationFailed({"name": _("An account named %(name)s already exists.", name=data.name)})
    _check_model_quotas(data)
    account = Account(name=data.name)
    _apply(account, data)
    db.session.add(account)
    try:
        db.session.flush()
    except IntegrityError:  # a concurrent create of the same name
        db.session.rollback()
        raise ValidationFailed({"name": _("An account named %(name)s already exists.", name=data.name)}) from None
    audit.record(actor, "account.create", "account", account.id, _describe(account, data))
    db.session.commit()
    return account


def update_account(actor: Actor, account_id: int, data: AccountInput) -> Account:
    """Change everything but the name, which is written into cluster labels and so never changes."""
    actor.require_admin()
    account = get_account(actor, account_id)
    _check_model_quotas(data)
    before = _snapshot(account)
    _apply(account, data)
    after = _snapshot(account)
    changed = {k: [before[k], after[k]] for k in after if before[k] != after[k]}
    if changed:
        audit.record(actor, "account.update", "account", account.id, {"name": account.name, "changed": changed})
    db.session.commit()
    return account


def delete_account(actor: Actor, account_id: int) -> None:
    actor.require_admin()
    account = get_account(actor, account_id)
    if account.is_default:
        raise Conflict(_("The default account cannot be deleted: every user belongs to it."))
    jobs = db.session.execute(select(func.count(Job.id)).where(Job.account_id == account.id)).scalar_one()
    if jobs:
        raise Conflict(_("Account %(name)s has %(n)s job(s) and cannot be deleted.", name=account.name, n=jobs))
    audit.record(actor, "account.delete", "account", account.id, {"name": account.name})
    db.session.delete(account)
    db.session.commit()


def _check_model_quotas(data: AccountInput) -> None:
    if data.lend_limit and (data.gpu_quota is None or data.lend_limit > data.gpu_quota):
        raise ValidationFailed({"lend_limit": _(
            "An account keeps back at most its guaranteed GPUs (%(total)s).", total=data.gpu_quota or 0)})
    if data.gpu_quota is None:
        return
    over = {m: n for m, n in data.gpu_model_quotas.items() if n > data.gpu_quota}
    if over:
        model, n = next(iter(over.items()))
        raise ValidationFailed({"gpu_model_quotas": _(
            "%(model)s: %(n)s GPUs is more than the account's total GPU quota (%(total)s).",
            model=model, n=n, total=data.gpu_quota)})


def _apply(account: Account, data: AccountInput) -> None:
    account.display_name = data.display_name
    account.description = data.description
    for name in QUOTA_FIELDS + BORROW_FIELDS:
        setattr(account, name, getattr(data, name))
    account.expires_on = data.expires_on
    current = {q.gpu_model: q for q in account.gpu_model_quotas}
    for model, gpus in data.gpu_model_quotas.items():
        if model in current:
            current.pop(model).gpus = gpus
        else:
            account.gpu_model_quotas.append(AccountGpuQuota(gpu_model=model, gpus=gpus))
    for stale in current.values():
        account.gpu_model_quotas.remove(stale)


def _snapshot(account: Account) -> dict:
    snap = {name: getattr(account, name) for name in ("display_name", "description", *QUOTA_FIELDS, *BORROW_FIELDS)}
    snap["expires_on"] = account.expires_on.isoformat() if account.expires_on else None
    snap["gpu_model_quotas"] = {q.gpu_model: q.gpus for q in account.gpu_model_quotas}
    return snap


def _describe(account: Account, data: AccountInput) -> dict:
    return {"name": account.name, **{k: v for k, v in _snapshot(account).items() if v not in (None, "", {})}}


# ---- members (admins and the account's managers) -------------------------------------------

def add_member(actor: Actor, account_id: int, username: str, role: str, gpu_cap: int | None,
               files_write: bool = False) -> Membership:
    """Add a member; `files_write`: they may write to the account's share too (managers always may)."""
    account = get_account(actor, account_id)
    user = db.session.execute(select(User).where(User.username == username.strip().lower())).scalar_one_or_none()
    if user is None:
        raise ValidationFailed({"username": _("No user named %(name)s.", name=username)})
    _check_member_input(account, role, gpu_cap)
    exists = db.session.execute(
        select(Membership.id).where(Membership.account_id == account.id, Membership.user_id == user.id)
    ).first()
    if exists:
        raise ValidationFailed({"username": _("%(user)s is already a member of %(account)s.", user=user.username, account=account.name)})
    member = Membership(account=account, user=user, role=role, gpu_cap=gpu_cap, files_write=bool(files_write))
    db.session.add(member)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise ValidationFailed({"username": _("%(user)s is already a member of %(account)s.", user=user.username, account=account.name)}) from None
    audit.record(actor, "member.add", "account", account.id,
                 {"account": account.name, "username": user.username, "role": role, "gpu_cap": gpu_cap,
                  "files_write": bool(files_write)})
    db.session.commit()
    return member


def get_member(actor: Actor, account_id: int, user_id: int) -> Membership:
    account = get_account(actor, account_id)
    member = db.session.execute(
        select(Membership).where(Membership.account_id == account.id, Membership.user_id == user_id)
    ).scalar_one_or_none()
    if member is None:
        raise NotFound(_("No such member."))
    return member


def update_member(actor: Actor, account_id: int, user_id: int, role: str, gpu_cap: int | None,
                  files_write: bool | None = None) -> Membership:
    """Change a member's role, GPU cap and (unless None) whether they write to the account's share."""
    member = get_member(actor, account_id, user_id)
    _check_member_input(member.account, role, gpu_cap)
    if _is_self_demotion(actor, member, role):
        raise Conflict(_("You cannot take away your own manager role; ask an administrator."))
    before = {"role": member.role, "gpu_cap": member.gpu_cap, "files_write": member.files_write}
    member.role, member.gpu_cap = role, gpu_cap
    if files_write is not None:
        member.files_write = bool(files_write)
    after = {"role": role, "gpu_cap": gpu_cap, "files_write": member.files_write}
    if before != after:
        audit.record(actor, "member.update", "account", member.account_id,
                     {"account": member.account.name, "username": member.user.username,
                      "from": before, "to": after})
    db.session.commit()
    return member


def remove_member(actor: Actor, account_id: int, user_id: int) -> None:
    member = get_member(actor, account_id, user_id)
    if member.account.is_default:
        raise Conflict(_("Every user belongs to the default account; deactivate the user instead."))
    if _is_self_demotion(actor, member, None):
        raise Conflict(_("You cannot remove yourself from an account you manage; ask an administrator."))
    audit.record(actor, "member.remove", "account", member.account_id,
                 {"account": member.account.name, "username": member.user.username})
    db.session.delete(member)
    db.session.commit()


def _is_self_demotion(actor: Actor, member: Membership, new_role: str | None) -> bool:
    """A manager (not an admin) who would lose the right to manage this account."""
    return (actor.user is not None and not actor.is_admin and member.user_id == actor.user.id
            and new_role != MemberRole.MANAGER.value)


def _check_member_input(account: Account, role: str, gpu_cap: int | None) -> None:
    errors = {}
    if role not in (MemberRole.MEMBER.value, MemberRole.MANAGER.value):
        errors["role"] = _("Choose member or manager.")
    if gpu_cap is not None and account.gpu_quota is not None and gpu_cap > account.gpu_quota:
        errors["gpu_cap"] = _("The cap is above the account's GPU quota (%(n)s).", n=account.gpu_quota)
    if errors:
        raise ValidationFailed(errors)
