"""The syncer's clock: the only thing tests fake. Every wait, timeout, grace period and timestamp
of the syncer goes through one of these, so a test moves time instead of sleeping or patching
module constants."""
from __future__ import annotations

import threading
import time
from datetime import datetime, UTC


class Clock:
    """Real time."""

    def time(self) -> float:
        """Seconds since the epoch (wall time: Lease timestamps other replicas compare)."""
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait until `event` is set or `seconds` have passed; True when it was set."""
        return event.wait(max(0.0, seconds))

    def utcnow(self) -> datetime:
        """Naive UTC, as the database keeps it."""
        return datetime.fromtimestamp(self.time(), UTC).replace(tzinfo=None, microsecond=0)


class FakeClock(Clock):
    """Time that moves only when a test says so (`advance`). Waits end when their event is set or
    when the clock has been moved past their deadline."""

    def __init__(self, start: float | None = None):
        self._now = time.time() if start is None else start
        self._cond = threading.Condition()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def wait(self, event: threading.Event, seconds: float) -> bool:
        deadline = self._now + max(0.0, seconds)
        with self._cond:
            while not event.is_set() and self._now < deadline:
                self._cond.wait(0.02)  # real time, only to notice the event being set
        return event.is_set()

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            self._cond.notify_all()
