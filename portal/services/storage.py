"""The shared storage as the portal sees it (CRATER_STORAGE_ROOT, where the web pods mount the claim
jobs mount by sub-path): `/files` and WebDAV go through here, and nothing else touches the folder.

Areas: `users/<name>` (one's home, read-write), `accounts/<name>` (an account's share: read-write
for its managers and for members a manager granted write, read-only for the other members),
`public` (read-only for users, read-write for admins). Admins see the whole root; their writes
outside their own home are audited.

Every path is a tuple of checked names, walked from the root one directory at a time with
`O_NOFOLLOW` (openat), so a symbolic link is never followed, whoever planted it or when: `..`,
absolute paths, encoded separators, NUL bytes and links cannot lead outside. Names the portal
creates are checked (no separators, control characters, `.`/`..`, at most 255 bytes).
Uploads arrive in a spool folder on the same file system (`UPLOAD_DIR`) and are linked into place,
so a file is never half-written under its name and never held in memory."""
from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import BinaryIO
from collections.abc import Iterator
from urllib.parse import unquote

from flask_babel import gettext as _
from sqlalchemy import select

from ..models import Account, Membership, MemberRole
from ..extensions import db
from . import audit, restrictions
from .context import Actor
from .errors import BadRequest, Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from .pagination import Page

UPLOAD_DIR = ".crater-uploads"  # under the root, hidden: uploads spool here, then are linked into place
HOME, ACCOUNT, PUBLIC, OTHER = "home", "account", "public", "other"  # other: any other top folder (admins)
TOPS = {"users": HOME, "accounts": ACCOUNT}
SORTS = ("name", "size", "modified")
MAX_NAME_BYTES = 255
MAX_DEPTH = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class BadPath(BadRequest):
    pass


class NoStorage(DomainError):
    status = 404


@dataclass(frozen=True)
class Area:
    kind: str  # home | account | public
    name: str  # the user's or account's name; "public"
    writable: bool

    @property
    def parts(self) -> tuple[str, ...]:
        if self.kind in (PUBLIC, OTHER):
            return (self.name,)
        return ("users" if self.kind == HOME else "accounts", self.name)

    @property
    def path(self) -> str:
        return "/".join(self.parts)


@dataclass(frozen=True)
class Place:
    """A checked path and what the actor may do there. `area` is None above the areas (the top,
    `users`, `accounts`), which non-admins see as a list of their own areas."""
    parts: tuple[str, ...]
    area: Area | None
    writable: bool

    @property
    def path(self) -> str:
        return "/".join(self.parts)

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else ""

    @property
    def parent(self) -> str:
        return "/".join(self.parts[:-1])

    @property
    def is_area_root(self) -> bool:
        return self.area is not None and self.parts == self.area.parts


@dataclass(frozen=True)
class Entry:
    name: str  # for display: a name that is not UTF-8 shows its undecodable bytes as U+FFFD
    path: str | None  # None: the name is not UTF-8, so no address can name it (shown, not linked)
    is_dir: bool
    is_link: bool
    size: int
    modified: datetime


# ---- configuration and names --------------------------------------------------------------------

def root_of(config) -> str:
    root = config.get("STORAGE_ROOT") or ""
    if not root:
        raise NoStorage(_("No shared storage is configured on this portal (CRATER_STORAGE_ROOT)."))
    os.makedirs(root, exist_ok=True)
    return root


def spool_dir(root: str) -> str:
    path = os.path.join(root, UPLOAD_DIR)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


_swept = {"at": 0.0}
SPOOL_LEFTOVER_SECONDS = 86400.0


def spool_file(root: str) -> BinaryIO:
    """A temporary file for one uploaded part, on the storage's own file system (linked into place
    later, never copied); it disappears when closed, whatever became of the upload. Parts a killed
    worker left behind are removed a day later (looked for at most hourly, per process)."""
    folder = spool_dir(root)
    now = time.time()
    if now - _swept["at"] > 3600:
        _swept["at"] = now
        with os.scandir(folder) as it:
            for item in it:
                with suppress(OSError):
                    if item.is_file(follow_symlinks=False) and now - item.stat(follow_symlinks=False).st_mtime > SPOOL_LEFTOVER_SECONDS:
                        os.unlink(item.path)
    return tempfile.NamedTemporaryFile(dir=folder, prefix="part-")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a file or folder name the portal creates (None: it can)."""
    if not name or not name.strip():
        return _("Give a name.")
    if name in (".", ".."):
        return _("A name cannot be . or ..")
    if any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return _("A name cannot contain slashes, backslashes or control characters.")
    if name != name.strip():
        return _("A name cannot begin or end with a space.")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return _("A name must be valid text (UTF-8).")
    if size > MAX_NAME_BYTES:
        return _("A name can be at most %(n)s bytes long.", n=MAX_NAME_BYTES)
    return None


def check_name(name: str, field: str = "name") -> str:
    problem = name_problem(name)
    if problem:
        raise ValidationFailed({field: problem})
    return name


def split(raw: str) -> tuple[str, ...]:
    """The names of a path as a user gave it ("users/alice/run 1/"), or BadPath. Separators
    and dots are refused in every spelling: `..`, a leading `/`, `\\`, NUL and other control
    characters, and names that are separators or dots once percent-decoded again (`%2e%2e`,
    `%2f`, `%5c`: an address decoded twice must not mean more than it says)."""
    raw = raw or ""
    if "\x00" in raw or "\\" in raw or any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise BadPath(_("A path cannot contain backslashes, NUL or control characters."))
    if raw.startswith("/"):
        raise BadPath(_("A path is relative to the shared storage: it cannot begin with /."))
    raw = raw[:-1] if raw.endswith("/") else raw
    if not raw:
        return ()
    parts = tuple(raw.split("/"))
    if len(parts) > MAX_DEPTH:
        raise BadPath(_("The path is too deep."))
    for part in parts:
        decoded = unquote(unquote(part))
        if part in ("", ".", "..") or decoded in (".", "..") or any(c in decoded for c in "/\\\x00"):
            raise BadPath(_("A path cannot contain empty names, . or .., or encoded separators."))
        try:
            part.encode("utf-8")
        except UnicodeEncodeError:
            raise BadPath(_("A path must be valid text (UTF-8).")) from None
    return parts


# ---- who may do what where ----------------------------------------------------------------------

def _memberships(actor: Actor) -> dict[str, tuple[str, bool]]:
    """{account name: (role, files_write)} of the actor's accounts: one query."""
    if actor.user is None:
        return {}
    rows = db.session.execute(select(Account.name, Membership.role, Membership.files_write)
                              .join(Membership, Membership.account_id == Account.id)
                              .where(Membership.user_id == actor.user.id).order_by(Account.name)).all()
    return {name: (role, bool(files_write)) for name, role, files_write in rows}


def areas_of(actor: Actor) -> list[Area]:
    """The areas the actor works in: the home first, then the accounts' shares, then public."""
    out = []
    if actor.user is not None:
        out.append(Area(HOME, actor.user.username, True))
    for name, (role, files_write) in _memberships(actor).items():
        out.append(Area(ACCOUNT, name, actor.is_admin or role == MemberRole.MANAGER.value or files_write))
    out.append(Area(PUBLIC, "public", actor.is_admin))
    return out


def _area(actor: Actor, parts: tuple[str, ...]) -> Area | None:
    """The area `parts` lies in, if the actor may read it; None above the areas; NotFound for
    anybody else's area (as if it did not exist)."""
    if not parts:
        return None
    top = parts[0]
    if top == "public":
        return Area(PUBLIC, "public", actor.is_admin)
    if top in TOPS and len(parts) == 1:
        return None
    if top == "users":
        if actor.user is not None and parts[1] == actor.user.username:
            return Area(HOME, parts[1], True)
        if actor.is_admin:
            return Area(HOME, parts[1], True)
    elif top == "accounts":
        role = _memberships(actor).get(parts[1])
        if role is not None or actor.is_admin:
            writable = actor.is_admin or (role is not None and (role[0] == MemberRole.MANAGER.value or role[1]))
            return Area(ACCOUNT, parts[1], writable)
    elif actor.is_admin and top != UPLOAD_DIR:
        return Area(OTHER, top, True)  # anything else at the top: admins only
    raise NotFound(_("No such file or folder."))


def place(actor: Actor, raw: str) -> Place:
    restrictions.check(actor.user, restrictions.STORAGE)
    parts = split(raw)
    area = _area(actor, parts)
    return Place(parts, area, area.writable if area else actor.is_admin and len(parts) <= 1)


def _writable(actor: Actor, where: Place) -> None:
    if not where.writable:
        raise Forbidden(_("You may read this folder but not change it."))


def _audit_write(actor: Actor, action: str, where: Place, detail: dict | None = None) -> None:
    """Admins are audited when they write outside their own home."""
    if not actor.is_admin or actor.user is None:
        return
    if where.area is not None and where.area.kind == HOME and where.area.name == actor.user.username:
        return
    audit.record(actor, action, "file", (where.area.path if where.area else where.path)[:64],
                 {"path": where.path, **(detail or {})})
    db.session.commit()


# ---- walking the folder without following links -------------------------------------------------

def _os_error(exc: OSError) -> DomainError:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(_("No such file or folder."))
    if exc.errno == errno.ELOOP:
        return BadPath(_("The path goes through a symbolic link; the portal does not follow links."))
    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
        return Conflict(_("Something with that name exists already."))
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Forbidden(_("The storage does not allow this (its permissions or a read-only mount)."))
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return Conflict(_("The storage is full."))
    if exc.errno == errno.ENAMETOOLONG:
        return ValidationFailed({"name": _("The name is too long.")})
    return Conflict(_("The storage refused: %(why)s", why=os.strerror(exc.errno or 0)))


@contextmanager
def _directory(root: str, parts: tuple[str, ...], make: int = 0) -> Iterator[int]:
    """An open descriptor of the folder `parts` under the root, walked name by name with
    O_NOFOLLOW; the first `make` names are created when missing (an area's own folder)."""
    fds = []
    try:
        fds.append(os.open(root, _DIR_FLAGS))
        for i, part in enumerate(parts):
            if i < make:
                with suppress(FileExistsError):
                    os.mkdir(part, 0o775, dir_fd=fds[-1])
            try:
                fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is(fds[-1], part, stat.S_ISLNK):
                    raise OSError(errno.ELOOP, "a link") from None
                raise
        yield fds[-1]
    except OSError as exc:
        raise _os_error(exc) from None
    finally:
        for fd in fds:
            os.close(fd)


def _lstat(fd: int, name: str) -> os.stat_result | None:
    """The entry itself (a link is not followed); None when it cannot be read: missing, or the
    call failed, and the operation that follows then says why."""
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None


def _is(fd: int, name: str, kind) -> bool:
    """Whether the entry is of `kind` (stat.S_ISDIR, stat.S_ISLNK, ...)."""
    st = _lstat(fd, name)
    return st is not None and kind(st.st_mode)


def open_folder(root: str, where: Place):
    """An open descriptor of the folder `where` (a context manager), walked as every path is."""
    return _directory(root, where.parts, make=_make(where))


def _make(where: Place) -> int:
    """How many leading names of `where` may be created on the way: an area's own folder (not an
    admin's other top folders, which are only ever found)."""
    if where.area is None:
        return len(where.parts)
    return 0 if where.area.kind == OTHER else len(where.area.parts)


def _entry(parent: str, name: str, st: os.stat_result) -> Entry:
    try:
        name.encode("utf-8")
        shown, path = name, f"{parent}/{name}" if parent else name
    except UnicodeEncodeError:  # bytes that are not UTF-8 (os decodes them as surrogates)
        shown, path = os.fsencode(name).decode("utf-8", "replace"), None
    return Entry(shown, path, stat.S_ISDIR(st.st_mode), stat.S_ISLNK(st.st_mode),
                 st.st_size if stat.S_ISREG(st.st_mode) else 0,
                 datetime.fromtimestamp(st.st_mtime, UTC).replace(tzinfo=None))


def _order(rows: list[tuple[str, bool]], stats: dict, sort: str, descending: bool) -> list[tuple[str, bool]]:
    """(name, is_dir) rows, folders first, by name (no stat needed), size or time (from `stats`)."""
    if sort == "size":
        key = lambda r: (stats[r[0]].st_size, r[0].casefold())  # noqa: E731
    elif sort == "modified":
        key = lambda r: (stats[r[0]].st_mtime, r[0].casefold())  # noqa: E731
    else:
        key = lambda r: (r[0].casefold(), r[0])  # noqa: E731
    rows.sort(key=key, reverse=descending)
    rows.sort(key=lambda r: not r[1])  # folders first, stable
    return rows


# ---- reading ------------------------------------------------------------------------------------

def kind_of(root: str, actor: Actor, where: Place) -> str:
    """"dir" or "file" (anything else, e.g. a link, is refused)."""
    if where.area is None:
        return "dir"
    if where.is_area_root:  # one's own areas are made on first use; any other top folder must exist
        with _directory(root, where.parts, make=_make(where)):
            return "dir"
    with _directory(root, where.parts[:-1], make=_make(where)) as fd:
        try:
            st = os.stat(where.name, dir_fd=fd, follow_symlinks=False)
        except OSError as exc:
            raise _os_error(exc) from None
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISLNK(st.st_mode):
        raise BadPath(_("This is a symbolic link; the portal does not follow links."))
    raise BadPath(_("This is neither a file nor a folder."))


def listing(root: str, actor: Actor, where: Place, sort: str = "name", descending: bool = False,
            page: int = 1, per_page: int = 200) -> Page:
    """A folder's entries, folders first, one page of them. A folder may hold 100,000 files: one
    scandir (whether an entry is a folder comes with it), sorted by name without a stat each;
    only the page's entries are stat'ed (sorting by size or time stats them all)."""
    if where.area is None and not actor.is_admin:
        return _virtual(actor, where, page, per_page)
    sort = sort if sort in SORTS else "name"
    page = max(1, page)
    with _directory(root, where.parts, make=_make(where)) as fd:
        try:
            with os.scandir(fd) as it:
                rows = [(item.name, item.is_dir(follow_symlinks=False)) for item in it
                        if where.parts or item.name != UPLOAD_DIR]
            stats = {} if sort == "name" else _stats(fd, [name for name, _d in rows])
            rows = [r for r in rows if sort == "name" or r[0] in stats]
            shown = _order(rows, stats, sort, descending)[(page - 1) * per_page:page * per_page]
            if sort == "name":
                stats = _stats(fd, [name for name, _d in shown])
        except OSError as exc:
            raise _os_error(exc) from None
    entries = [_entry(where.path, name, stats[name]) for name, _d in shown if name in stats]
    return Page(entries, page, per_page, len(rows))


def _stats(fd: int, names: list[str]) -> dict[str, os.stat_result]:
    out = {}
    for name in names:
        try:
            out[name] = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:  # removed meanwhile
            continue
    return out


def _virtual(actor: Actor, where: Place, page: int, per_page: int) -> Page:
    """Above the areas, a non-admin sees their own areas as folders (never anybody else's)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    areas = [a for a in areas_of(actor) if a.parts[:len(where.parts)] == where.parts]
    entries = [Entry(a.parts[len(where.parts)], "/".join(a.parts[:len(where.parts) + 1]), True, False, 0, now)
               for a in areas]
    unique = list({e.path: e for e in entries}.values())
    start = (max(1, page) - 1) * per_page
    return Page(unique[start:start + per_page], max(1, page), per_page, len(unique))


@dataclass
class Download:
    file: BinaryIO
    name: str
    size: int
    modified: datetime


def open_file(root: str, actor: Actor, where: Place) -> Download:
    """The file opened for reading (O_NOFOLLOW), with its size and time, for a download."""
    if where.area is None or where.is_area_root:
        raise BadPath(_("This is a folder."))
    with _directory(root, where.parts[:-1], make=_make(where)) as fd:
        try:
            handle = os.open(where.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            raise _os_error(exc) from None
    st = os.fstat(handle)
    if not stat.S_ISREG(st.st_mode):
        os.close(handle)
        raise BadPath(_("This is a folder.") if stat.S_ISDIR(st.st_mode) else _("This is not a regular file."))
    os.set_blocking(handle, True)
    return Download(os.fdopen(handle, "rb"), where.name, st.st_size,
                    datetime.fromtimestamp(st.st_mtime, UTC))


# ---- writing ------------------------------------------------------------------------------------

def _folder_for_writing(root: str, actor: Actor, raw: str) -> Place:
    where = place(actor, raw)
    if where.area is None:
        raise Forbidden(_("Choose a folder inside one of your areas."))
    _writable(actor, where)
    return where


def save_upload(root: str, actor: Actor, folder: str, filename: str, stream: BinaryIO, replace: bool = False) -> Place:
    """Put one uploaded file into `folder` under its own (checked) name. A spooled upload is linked
    into place (no copy); anything else is copied to a hidden name first. Either way the name
    appears only once the whole file is there, and an existing file is replaced only when asked
    (atomically: a reader sees the old file or the new one)."""
    where = _folder_for_writing(root, actor, folder)
    name = check_name(filename.replace("\\", "/").rsplit("/", 1)[-1], "files")
    target = Place(where.parts + (name,), where.area, True)
    with _directory(root, where.parts, make=_make(where)) as fd:
        hidden = f".crater-part-{uuid.uuid4().hex}"
        try:
            spooled = getattr(stream, "name", None)
            if isinstance(spooled, str) and os.path.dirname(spooled) == spool_dir(root):
                stream.flush()
                os.link(spooled, hidden, dst_dir_fd=fd)
            else:
                _copy_into(stream, hidden, fd)
            try:
                if replace:
                    if _is(fd, name, stat.S_ISDIR):
                        raise Conflict(_("A folder named %(name)s exists already.", name=name))
                    os.rename(hidden, name, src_dir_fd=fd, dst_dir_fd=fd)
                else:
                    os.link(hidden, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                raise Conflict(_("%(name)s exists already; choose to replace it, or rename it first.", name=name)) from None
        except OSError as exc:
            raise _os_error(exc) from None
        finally:
            with suppress(OSError):
                os.unlink(hidden, dir_fd=fd)
    _audit_write(actor, "file.upload", target)
    return target


def _copy_into(stream: BinaryIO, name: str, fd: int) -> None:
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o664, dir_fd=fd)
    with os.fdopen(out, "wb") as target:
        shutil.copyfileobj(stream, target, 1024 * 1024)


def make_folder(root: str, actor: Actor, parent: str, name: str) -> Place:
    where = _folder_for_writing(root, actor, parent)
    name = check_name(name)
    with _directory(root, where.parts, make=_make(where)) as fd:
        try:
            os.mkdir(name, 0o775, dir_fd=fd)
        except OSError as exc:
            raise _os_error(exc) from None
    target = Place(where.parts + (name,), where.area, True)
    _audit_write(actor, "file.mkdir", target)
    return target


def _changeable(actor: Actor, raw: str) -> Place:
    where = place(actor, raw)
    if where.area is None or where.is_area_root:
        raise Conflict(_("An area itself cannot be renamed, moved or deleted."))
    _writable(actor, where)
    return where


def move(root: str, actor: Actor, raw: str, new_name: str, new_folder: str | None = None) -> Place:
    """Rename (same folder) or move (another folder the actor may write, in any of their areas)
    a file or folder. Nothing is overwritten."""
    where = _changeable(actor, raw)
    name = check_name(new_name or where.name)
    folder = _folder_for_writing(root, actor, where.parent if new_folder is None else new_folder)
    target = Place(folder.parts + (name,), folder.area, True)
    if target.parts == where.parts:
        return where
    if target.parts[:len(where.parts)] == where.parts:
        raise ValidationFailed({"folder": _("A folder cannot be moved into itself.")})
    with _directory(root, where.parts[:-1]) as src, _directory(root, folder.parts, make=_make(folder)) as dst:
        try:
            os.stat(where.name, dir_fd=src, follow_symlinks=False)
            if _lstat(dst, name) is not None:
                raise Conflict(_("Something named %(name)s exists already in that folder.", name=name))
            os.rename(where.name, name, src_dir_fd=src, dst_dir_fd=dst)
        except OSError as exc:
            raise _os_error(exc) from None
    _audit_write(actor, "file.move", where, {"to": target.path})
    return target


def delete(root: str, actor: Actor, raw: str) -> Place:
    """Delete a file, a link or a whole folder (its links are removed, never followed)."""
    where = _changeable(actor, raw)
    with _directory(root, where.parts[:-1]) as fd:
        try:
            if _is(fd, where.name, stat.S_ISDIR):
                shutil.rmtree(where.name, dir_fd=fd)
            else:
                os.unlink(where.name, dir_fd=fd)
        except OSError as exc:
            raise _os_error(exc) from None
    _audit_write(actor, "file.delete", where)
    return where
