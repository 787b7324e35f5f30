"""Datasets and models: a user registers a folder they can read on the shared storage (name,
description, tags), keeps it private, shares it with users or accounts, or (admins) makes it
public. Jobs mount the ones their owner may use read-only at /datasets/<name> or /models/<name>,
in every pod, as a sub-path of the shared claim (job_spec.cluster_request). Who may use one:
its owner, everyone when public, the users and the members of the accounts it is shared with."""
from __future__ import annotations

import os
import re
import stat
import time
from flask_babel import gettext as _
from sqlalchemy import exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models import (DATASET_KINDS, VISIBILITIES, Account, Dataset, DatasetShare, Job, JobDataset, Membership, User,
                      utcnow)
from . import audit, storage
from .context import Actor
from .errors import Conflict, Forbidden, NotFound, ValidationFailed
from .pagination import Page, paginate

NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
MAX_PER_JOB = 8
SIZE_BUDGET_SECONDS = 10.0  # sizing a huge folder stops here and says "at least"


def _usable_clause(user: User):
    """Who may use a dataset, as one SQL condition."""
    accounts = select(Membership.account_id).where(Membership.user_id == user.id)
    shared = exists().where(DatasetShare.dataset_id == Dataset.id,
                            or_(DatasetShare.user_id == user.id, DatasetShare.account_id.in_(accounts)))
    return or_(Dataset.owner_id == user.id, Dataset.visibility == "public", shared)


def usable(actor: Actor) -> list[Dataset]:
    """The datasets and models the actor may mount (what the job forms offer), by name."""
    stmt = select(Dataset).order_by(Dataset.kind, Dataset.name)
    if not actor.is_admin:
        stmt = stmt.where(_usable_clause(actor.user))
    return list(db.session.execute(stmt.limit(500)).scalars())


def listing(actor: Actor, q: str, page: int, per_page: int) -> Page:
    stmt = select(Dataset).options(selectinload(Dataset.owner)).order_by(Dataset.name)
    if not actor.is_admin:
        stmt = stmt.where(_usable_clause(actor.user))
    if q:
        like = f"%{q}%"
        stmt = stmt.where(or_(Dataset.name.like(like), Dataset.tags.like(like), Dataset.description.like(like)))
    return paginate(stmt, page, per_page)


def get(actor: Actor, dataset_id: int) -> Dataset:
    row = db.session.get(Dataset, dataset_id)
    if row is None or not (actor.is_admin or _may_use(actor.user, row)):
        raise NotFound(_("No such dataset."))
    return row


def _may_use(user: User, row: Dataset) -> bool:
    return bool(db.session.execute(select(Dataset.id).where(Dataset.id == row.id, _usable_clause(user))).first())


def _editable(actor: Actor, dataset_id: int) -> Dataset:
    row = get(actor, dataset_id)
    if not (actor.is_admin or row.owner_id == actor.user.id):
        raise Forbidden(_("Only its owner or an administrator may change this dataset."))
    return row


def _check(actor: Actor, root: str | None, name: str, kind: str, path: str, description: str, tags: str,
           visibility: str) -> dict:
    """The values as stored, or every field's error at once; `root`: check that `path` is a
    folder the actor can read (None: the path is not changing)."""
    errors = {}
    if not NAME.match(name or ""):
        errors["name"] = _("1 to 63 lower-case letters, digits, dots, dashes or underscores; it names the mount's folder.")
    if kind not in DATASET_KINDS:
        errors["kind"] = _("Choose dataset or model.")
    if visibility not in VISIBILITIES:
        errors["visibility"] = _("Choose private, shared or public.")
    elif visibility == "public" and not actor.is_admin:
        errors["visibility"] = _("Only administrators make a dataset public; share it with accounts instead.")
    if len(description or "") > 4000:
        errors["description"] = _("At most 4000 characters.")
    if len(tags or "") > 255:
        errors["tags"] = _("At most 255 characters.")
    path = (path or "").strip().strip("/")
    if root is not None:
        try:
            where = storage.place(actor, path)
            if where.area is None or storage.kind_of(root, actor, where) != "dir":
                errors["path"] = _("Choose a folder inside one of your areas.")
            path = where.path
        except (NotFound, storage.BadPath, Forbidden) as exc:
            errors["path"] = str(exc)
    if errors:
        raise ValidationFailed(errors)
    return {"name": name, "kind": kind, "path": path, "description": (description or "").strip(),
            "tags": ", ".join(t.strip() for t in (tags or "").split(",") if t.strip()), "visibility": visibility}


def register(actor: Actor, root: str, name: str, kind: str, path: str, description: str = "", tags: str = "",
             visibility: str = "private") -> Dataset:
    values = _check(actor, root, (name or "").strip().lower(), kind, path, description, tags, visibility)
    row = Dataset(owner_id=actor.user.id if actor.user else None, created_at=utcnow(), **values)
    db.session.add(row)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise ValidationFailed({"name": _("A dataset or model named %(name)s exists already.", name=values["name"])}) from None
    audit.record(actor, "dataset.create", "dataset", row.id, {"name": row.name, "path": row.path,
                                                              "visibility": row.visibility})
    db.session.commit()
    return row


def update(actor: Actor, dataset_id: int, description: str, tags: str, visibility: str) -> Dataset:
    row = _editable(actor, dataset_id)
    values = _check(actor, None, row.name, row.kind, row.path, description, tags, visibility)
    row.description, row.tags, row.visibility = values["description"], values["tags"], values["visibility"]
    audit.record(actor, "dataset.update", "dataset", row.id, {"visibility": row.visibility})
    db.session.commit()
    return row


def delete(actor: Actor, dataset_id: int) -> str:
    """Unregister (the folder stays; running jobs keep their mount until they end)."""
    row = _editable(actor, dataset_id)
    name = row.name
    audit.record(actor, "dataset.delete", "dataset", row.id, {"name": name})
    db.session.delete(row)
    db.session.commit()
    return name


def share(actor: Actor, dataset_id: int, with_user: str = "", with_account: str = "") -> DatasetShare:
    row = _editable(actor, dataset_id)
    user = account = None
    if with_user.strip():
        user = db.session.execute(select(User).where(User.username == with_user.strip().lower())).scalar_one_or_none()
        if user is None:
            raise ValidationFailed({"user": _("No user named %(name)s.", name=with_user.strip())})
    elif with_account.strip():
        account = db.session.execute(select(Account).where(Account.name == with_account.strip())).scalar_one_or_none()
        if account is None:
            raise ValidationFailed({"account": _("No account named %(name)s.", name=with_account.strip())})
    else:
        raise ValidationFailed({"user": _("Give a user name or an account name.")})
    duplicate = any((user is not None and s.user_id == user.id) or (account is not None and s.account_id == account.id)
                    for s in row.shares)
    if duplicate:
        raise Conflict(_("It is shared with them already."))
    item = DatasetShare(dataset_id=row.id, user_id=user.id if user else None, account_id=account.id if account else None)
    row.shares.append(item)
    if row.visibility == "private":
        row.visibility = "shared"
    audit.record(actor, "dataset.share", "dataset", row.id, {"user": user.username if user else None,
                                                             "account": account.name if account else None})
    db.session.commit()
    return item


def unshare(actor: Actor, dataset_id: int, share_id: int) -> None:
    row = _editable(actor, dataset_id)
    item = next((s for s in row.shares if s.id == share_id), None)
    if item is None:
        raise NotFound(_("No such share."))
    row.shares.remove(item)
    audit.record(actor, "dataset.unshare", "dataset", row.id, {"share": share_id})
    db.session.commit()


def jobs_of(actor: Actor, dataset_id: int, page: int, per_page: int) -> Page:
    """The jobs that mounted it: all of them for its owner and admins, else one's own."""
    row = get(actor, dataset_id)
    stmt = (select(Job).join(JobDataset, JobDataset.job_id == Job.id).where(JobDataset.dataset_id == row.id)
            .options(selectinload(Job.user)).order_by(Job.id.desc()))
    if not (actor.is_admin or row.owner_id == actor.user.id):
        stmt = stmt.where(Job.user_id == actor.user.id)
    return paginate(stmt, page, per_page)


def measure(actor: Actor, root: str, dataset_id: int) -> Dataset:
    """Count its files and bytes (links are not followed; a huge folder is counted for at most
    SIZE_BUDGET_SECONDS, and the page then says "at least")."""
    row = get(actor, dataset_id)
    where = storage.place(actor, row.path)
    size, files, deadline = 0, 0, time.monotonic() + SIZE_BUDGET_SECONDS
    complete = True
    with storage.open_folder(root, where) as fd:
        for _dir, _dirs, names, dir_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            for name in names:
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    size, files = size + st.st_size, files + 1
            if time.monotonic() > deadline:
                complete = False
                break
    row.size_bytes, row.files, row.sized_at = size, files if complete else -files, utcnow()
    db.session.commit()
    return row


# ---- jobs ---------------------------------------------------------------------------------------

def resolve(actor: Actor, names: tuple[str, ...]) -> list[Dataset]:
    """The datasets a submission names, each one the submitter may use (else NotFound)."""
    if not names:
        return []
    if len(names) > MAX_PER_JOB:
        raise ValidationFailed({"datasets": _("At most %(n)s datasets and models per job.", n=MAX_PER_JOB)})
    wanted = list(dict.fromkeys(n.strip().lower() for n in names))
    stmt = select(Dataset).where(Dataset.name.in_(wanted))
    if not actor.is_admin:
        stmt = stmt.where(_usable_clause(actor.user))
    found = {d.name: d for d in db.session.execute(stmt).scalars()}
    missing = [n for n in wanted if n not in found]
    if missing:  # a name the submitter may not use: as an account they are not in, NotFound
        raise NotFound(_("No dataset or model you may use is named %(names)s.", names=", ".join(missing)))
    return [found[n] for n in wanted]


def mounts_of(rows: list[Dataset]) -> tuple[tuple[str, str], ...]:
    """(sub-path of the shared claim, mount path) of each, as the job's spec keeps them."""
    return tuple((d.path, d.mount_path) for d in rows)


def record_mounts(job_id: int, rows: list[Dataset]) -> None:
    """Which datasets the job mounted (the caller commits)."""
    for d in rows:
        db.session.add(JobDataset(job_id=job_id, dataset_id=d.id))


def sized_text(row: Dataset) -> tuple[int | None, int | None, bool]:
    """(bytes, files, complete) as measured last."""
    if row.files is None:
        return None, None, True
    return row.size_bytes, abs(row.files), row.files >= 0
