"""Faults to inject for the portal's reliability tests: API errors (500/503) for a share or a
number of requests, delayed answers. Watches are dropped and resourceVersions expired through the
store; nodes go NotReady through the cluster."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from . import errors


@dataclass
class Faults:
    error_code: int = 0  # 0 = no injected errors
    error_rate: float = 1.0  # share of requests that fail while error_code is set
    error_count: int = -1  # fail this many requests, then stop (-1 = until cleared)
    delay: float = 0.0  # seconds added to every API request
    path_prefix: str = ""  # only requests under this path (e.g. /apis/batch)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def before_request(self, path: str) -> None:
        if self.path_prefix and not path.startswith(self.path_prefix):
            return
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            if not self.error_code or random.random() >= self.error_rate:
                return
            if self.error_count == 0:
                return
            if self.error_count > 0:
                self.error_count -= 1
            code = self.error_code
        reason = {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests"}.get(code, "InternalError")
        raise errors.ApiError(code, reason, f"kubesim: injected fault ({code})")

    def set(self, error_code: int = 0, error_rate: float = 1.0, error_count: int = -1, delay: float = 0.0,
            path_prefix: str = "") -> None:
        with self.lock:
            self.error_code, self.error_rate, self.error_count = error_code, error_rate, error_count
            self.delay, self.path_prefix = delay, path_prefix

    def clear(self) -> None:
        self.set()

    def describe(self) -> dict:
        return {"errorCode": self.error_code, "errorRate": self.error_rate, "errorCount": self.error_count,
                "delay": self.delay, "pathPrefix": self.path_prefix}
