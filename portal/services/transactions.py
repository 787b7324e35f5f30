"""Short transactions that MySQL may choose as a deadlock victim (InnoDB error 1213, or a lock wait
timeout, 1205) under concurrent submissions and syncer writes: `retrying(work)` rolls back and runs
`work` again, a few times, before giving up. `work` must do the whole transaction, commit included,
and be safe to repeat (guarded updates are). Touches the DB only."""
from __future__ import annotations

import time
from typing import TypeVar
from collections.abc import Callable

from sqlalchemy.exc import OperationalError

from ..extensions import db

T = TypeVar("T")
RETRYABLE = {1205, 1213}  # lock wait timeout, deadlock


def error_code(exc) -> int | None:
    """The database driver's error number behind a SQLAlchemy error (MySQL's, e.g. 1213), if any."""
    args = getattr(getattr(exc, "orig", None), "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def is_retryable(exc: OperationalError) -> bool:
    return error_code(exc) in RETRYABLE


def retrying(work: Callable[[], T], attempts: int = 4) -> T:
    for attempt in range(attempts):
        try:
            return work()
        except OperationalError as exc:
            db.session.rollback()
            if not is_retryable(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def abandon(quietly: bool = False) -> None:
    """Roll back whatever the request's transaction did (an error ends it). `quietly`: the
    connection may be dead (the database away), and a failed rollback is then no news."""
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001  a dead connection cannot even roll back; the pool drops it
        if not quietly:
            raise
