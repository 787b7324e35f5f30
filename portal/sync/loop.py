"""The plumbing every syncer loop shares, written once: wait for a wake-up or `every` seconds;
while the loop is active (this replica leads, the caches are current), run its step in an app
context; a deadlock victim runs again at once; the failures a loop expects (the database or the
cluster away) are logged and backed off (1 s doubling to MAX_BACKOFF) and the step tried again;
the session is rolled back on failure and removed after every step. A step that returns True has
more to do (a backlog) and runs again at once. Anything else propagates to the supervisor."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from collections.abc import Callable

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ..cluster.client import ClusterError
from ..extensions import db
from ..services.transactions import is_retryable
from .clock import Clock

log = logging.getLogger("crater.sync")
MAX_BACKOFF = 30.0


def _always() -> bool:
    return True


@dataclass
class Loop:
    name: str
    app: object
    clock: Clock
    stop: threading.Event
    step: Callable[[], object]
    every: float = 1.0
    wake: threading.Event | None = None
    active: Callable[[], bool] = _always
    on_activate: Callable[[], None] | None = None  # when it becomes active (e.g. the lead was gained)
    on_failure: Callable[[BaseException], None] | None = None
    backoff: float = field(default=0.0, init=False)

    def run(self) -> None:
        was_active, again = False, False
        while not self.stop.is_set():
            if not again:
                if self.wake is not None:
                    self.clock.wait(self.wake, self.every)
                    self.wake.clear()
                else:
                    self.clock.wait(self.stop, self.every)
            again = False
            if self.stop.is_set():
                return
            active = self.active()
            if active and not was_active and self.on_activate is not None:
                self.on_activate()
            was_active = active
            if active:
                again = self.run_once()

    def run_once(self) -> bool:
        """One step, in the app context; True: run again at once (a backlog, a deadlock victim,
        or a retry after backing off)."""
        try:
            with self.app.app_context():
                try:
                    more = self.step()
                except BaseException:
                    db.session.rollback()
                    raise
                finally:
                    db.session.remove()
        except (SQLAlchemyError, ClusterError) as exc:
            if self.on_failure is not None:
                self.on_failure(exc)
            if isinstance(exc, OperationalError) and is_retryable(exc):
                return True
            self.backoff = min(self.backoff * 2, MAX_BACKOFF) if self.backoff else 1.0
            log.warning("%s failed (%s); retrying in %.0f s", self.name,
                        getattr(exc, "message", "") or type(exc).__name__, self.backoff)
            self.clock.wait(self.stop, self.backoff)
            return True
        self.backoff = 0.0
        return bool(more)
