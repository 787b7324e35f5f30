"""Faults to inject for the portal's reliability tests: API errors (500/503/429) for a share or a
number of requests, delayed answers, reset connections (before or after the request was carried
out: an answer lost on the way), malformed answers. Each is a rule that may be limited to a path
prefix and to methods; several rules can hold at once (the first that matches a request applies).
Watches are dropped and resourceVersions expired through the store; nodes go NotReady through the
cluster."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass, field

from . import errors


class ConnectionReset(Exception):
    """The server drops the connection without an answer (as a crashing proxy would)."""


class Garbage(Exception):
    """The server answers 200 with a body that is not what the API promises."""


@dataclass
class Rule:
    error_code: int = 0  # 0 = no injected error
    error_rate: float = 1.0  # share of matching requests that fail
    error_count: int = -1  # fail this many requests, then stop (-1 = until cleared)
    delay: float = 0.0  # seconds added to every matching request
    path_prefix: str = ""  # only requests under this path (e.g. /apis/batch)
    methods: tuple[str, ...] = ()  # only these methods (empty = all)
    reset: bool = False  # close the connection (TCP reset) instead of answering
    reset_after: bool = False  # carry the request out, then reset instead of answering
    garbage: bool = False  # answer 200 with a body that is not JSON

    def matches(self, method: str, path: str) -> bool:
        return path.startswith(self.path_prefix) and (not self.methods or method in self.methods)

    def describe(self) -> dict:
        camel = {"error_code": "errorCode", "error_rate": "errorRate", "error_count": "errorCount",
                 "path_prefix": "pathPrefix", "reset_after": "resetAfter"}
        return {camel.get(k, k): list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, body: dict) -> Rule:
        return cls(int(body.get("errorCode", 0)), float(body.get("errorRate", 1.0)), int(body.get("errorCount", -1)),
                   float(body.get("delay", 0.0)), str(body.get("pathPrefix", "")),
                   tuple(str(m).upper() for m in body.get("methods") or ()), bool(body.get("reset", False)),
                   bool(body.get("resetAfter", False)), bool(body.get("garbage", False)))


@dataclass
class Faults:
    rules: list[Rule] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def before_request(self, path: str, method: str = "GET") -> Rule | None:
        """Apply the first matching rule: wait, fail, reset or garble. Returns the rule when the
        request is to be carried out and its answer then dropped (reset_after)."""
        with self.lock:
            rule = next((r for r in self.rules if r.matches(method, path)), None)
        if rule is None:
            return None
        if rule.delay:
            time.sleep(rule.delay)
        with self.lock:
            if rule.error_count == 0 or random.random() >= rule.error_rate:
                return None
            if rule.error_count > 0:
                rule.error_count -= 1
        if rule.reset:
            raise ConnectionReset()
        if rule.garbage:
            raise Garbage()
        if rule.reset_after:
            return rule
        if rule.error_code:
            reason = {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests"}.get(rule.error_code, "InternalError")
            raise errors.ApiError(rule.error_code, reason, f"kubesim: injected fault ({rule.error_code})")
        return None

    def set(self, error_code: int = 0, error_rate: float = 1.0, error_count: int = -1, delay: float = 0.0,
            path_prefix: str = "", methods=(), reset: bool = False, reset_after: bool = False, garbage: bool = False) -> None:
        """One rule in place of all others."""
        self.replace([Rule(error_code, error_rate, error_count, delay, path_prefix, tuple(methods), reset, reset_after,
                           garbage)])

    def replace(self, rules: list[Rule]) -> None:
        with self.lock:
            self.rules = list(rules)

    def clear(self) -> None:
        self.replace([])

    def describe(self) -> dict:
        with self.lock:
            return {"rules": [r.describe() for r in self.rules]}
