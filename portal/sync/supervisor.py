"""Supervision of the syncer's loops: no loop dies silently. A loop that raises is logged with
its traceback, waits (1 s doubling to 30 s) and runs again; a loop that keeps crashing (more than
`max_crashes` times without a quiet minute in between) marks the supervisor failed, which stops
the syncer and makes `crater sync` exit non-zero so Kubernetes restarts the process. Loops handle
the failures they expect (the cluster or the database away) themselves, by backing off; what
reaches the supervisor is a bug or something nobody foresaw."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .clock import Clock

log = logging.getLogger("crater.sync")
MAX_BACKOFF = 30.0
QUIET_SECONDS = 60.0  # a loop that ran this long without crashing starts counting afresh


class Supervisor:
    def __init__(self, clock: Clock, stop: threading.Event, max_crashes: int = 5):
        self.clock, self.stop, self.max_crashes = clock, stop, max_crashes
        self.threads: list[threading.Thread] = []
        self.crashes: dict[str, int] = {}
        self.failed = ""  # the loop that could not be kept running

    def spawn(self, name: str, loop: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=self._guard, args=(name, loop), name=name, daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread

    def _guard(self, name: str, loop: Callable[[], None]) -> None:
        backoff, crashes, last_crash = 1.0, 0, self.clock.monotonic()
        while not self.stop.is_set():
            try:
                loop()
                if self.stop.is_set():
                    return
                raise RuntimeError(f"{name} returned while the syncer runs")
            except Exception:  # noqa: BLE001  the point: log every failure, then resume or give up
                now = self.clock.monotonic()
                if now - last_crash > QUIET_SECONDS:
                    crashes, backoff = 0, 1.0
                crashes, last_crash = crashes + 1, now
                self.crashes[name] = self.crashes.get(name, 0) + 1
                log.exception("syncer loop %s failed (%d in a row)", name, crashes)
                if crashes > self.max_crashes:
                    log.error("syncer loop %s keeps failing; stopping the syncer", name)
                    self.failed = name
                    self.stop.set()
                    return
                self.clock.wait(self.stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except BaseException:
                self.failed = name
                self.stop.set()
                raise

    def healthy(self) -> bool:
        """Nothing failed and every loop thread is alive (until the syncer is stopped)."""
        return not self.failed and (self.stop.is_set() or all(t.is_alive() for t in self.threads))

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)
