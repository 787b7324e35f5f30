"""WebDAV locks kept in the database: the lock storage WsgiDAV's LockManager calls (the interface of
its LockStorageDict), so a LOCK taken through one web worker holds in every other and in every
replica, which Finder and Windows Explorer need before they write. Expired locks are dropped
as they are met. Runs inside the WebDAV request's app context; every call commits."""
from __future__ import annotations

import base64
import json
import secrets
import time

from sqlalchemy import delete, or_, select, update

from ..extensions import db
from ..models import DavLock

DEFAULT_SECONDS = 604800  # a week, as WsgiDAV's own storage
MAX_SECONDS = 4 * 604800


def _root(path: str) -> str:
    return "/" + path.strip("/")


def _pack(lock: dict) -> str:
    return json.dumps({**lock, "owner": base64.b64encode(lock.get("owner") or b"").decode()})


def _unpack(data: str) -> dict:
    lock = json.loads(data)
    lock["owner"] = base64.b64decode(lock.get("owner") or "")
    return lock


class DbLockStorage:
    """The methods LockManager calls; the arguments and answers are WsgiDAV's lock dictionaries."""

    def __repr__(self) -> str:
        return "DbLockStorage()"

    def open(self) -> None:  # called when WsgiDAV starts: no database then
        pass

    def close(self) -> None:
        pass

    def cleanup(self) -> None:
        db.session.execute(delete(DavLock).where(DavLock.expire < time.time()))
        db.session.commit()

    def clear(self) -> None:
        db.session.execute(delete(DavLock))
        db.session.commit()

    def get(self, token: str) -> dict | None:
        row = db.session.get(DavLock, token)
        if row is None:
            db.session.commit()
            return None
        if row.expire < time.time():
            self.delete(token)
            return None
        lock = _unpack(row.data)
        db.session.commit()
        return lock

    def create(self, path: str, lock: dict) -> dict:
        timeout = float(lock.get("timeout") or DEFAULT_SECONDS)
        if timeout < 0 or timeout > MAX_SECONDS:
            timeout = MAX_SECONDS
        lock.update(root=_root(path), timeout=timeout, expire=time.time() + timeout,
                    token="opaquelocktoken:" + secrets.token_hex(32))
        db.session.add(DavLock(token=lock["token"], root=lock["root"], data=_pack(lock), expire=lock["expire"]))
        db.session.commit()
        return lock

    def refresh(self, token: str, *, timeout: float) -> dict:
        row = db.session.get(DavLock, token)
        if row is None:
            db.session.commit()
            raise ValueError("no such lock")
        if timeout < 0 or timeout > MAX_SECONDS:
            timeout = MAX_SECONDS
        lock = _unpack(row.data)
        lock.update(timeout=timeout, expire=time.time() + timeout)
        db.session.execute(update(DavLock).where(DavLock.token == token).values(data=_pack(lock), expire=lock["expire"]))
        db.session.commit()
        return lock

    def delete(self, token: str) -> bool:
        gone = db.session.execute(delete(DavLock).where(DavLock.token == token)).rowcount
        db.session.commit()
        return bool(gone)

    def get_lock_list(self, path: str, *, include_root: bool, include_children: bool, token_only: bool) -> list:
        root = _root(path)
        where = []
        if include_root:
            where.append(DavLock.root == root)
        if include_children:
            prefix = root.rstrip("/") + "/"
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(DavLock.root.like(escaped + "%", escape="\\"))
        rows = db.session.execute(select(DavLock.token, DavLock.data).where(
            or_(*where), DavLock.expire >= time.time())).all()
        db.session.commit()
        return [token if token_only else _unpack(data) for token, data in rows]
