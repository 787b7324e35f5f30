"""A reflector: one per watched kind (in the spirit of KubeSpawner's ResourceReflector). It lists
the kind, then watches from the list's resourceVersion, keeping a local cache of the objects (plain
dicts, read-only for everyone else) and telling its listeners what changed. A watch that the
server ends is resumed from the last version seen (BOOKMARKs keep it fresh); 410 Gone lists again;
any other failure backs off (1 s doubling to 30 s) and lists again, so nothing is missed while the
API was away. Talks to the cluster only through `Cluster.list` / `Cluster.watch`."""
from __future__ import annotations

import logging
import threading
from typing import Protocol
from collections.abc import Callable

from ..cluster.client import ClusterError, Gone
from .clock import Clock

log = logging.getLogger("crater.sync")
MAX_BACKOFF = 30.0


class Listener(Protocol):
    def relisted(self, kind: str, objects: list[dict]) -> None: ...

    def changed(self, kind: str, event_type: str, obj: dict) -> None: ...


def key_of(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


class Reflector:
    def __init__(self, kind: str, cluster, clock: Clock, stop: threading.Event, watch_timeout: int = 300,
                 active: Callable[[], bool] = lambda: True):
        self.kind, self.cluster, self.clock, self.stop = kind, cluster, clock, stop
        self.watch_timeout, self.active = int(watch_timeout), active
        self.listeners: list[Listener] = []
        self.lock = threading.Lock()
        self._cache: dict[tuple[str, str], dict] = {}
        self.resource_version = ""
        self.synced = threading.Event()  # set after a list; cleared while the API is away
        self.retry_now = threading.Event()  # cuts a backoff short (the API is back, or the syncer stops)
        self.relists = self.watch_restarts = self.failures = 0
        self.last_error = ""

    # ---- reading the cache ------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> dict | None:
        with self.lock:
            return self._cache.get((namespace, name))

    def objects(self) -> list[dict]:
        with self.lock:
            return list(self._cache.values())

    def __len__(self) -> int:
        return len(self._cache)

    # ---- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """List and watch until the syncer stops (supervised: never returns early)."""
        backoff = 1.0
        while not self.stop.is_set():
            if not self.active():
                self.synced.clear()
                self.clock.wait(self.stop, 0.5)
                continue
            try:
                self._list()
                backoff = 1.0
                while not self.stop.is_set() and self.active():
                    self._watch()
                    self.watch_restarts += 1
            except Gone:
                log.info("%s: resourceVersion expired; listing again", self.kind)
            except ClusterError as exc:
                self.failures += 1
                self.last_error = exc.message
                self.synced.clear()
                log.warning("%s: %s; listing again in %.0f s", self.kind, exc.message, backoff)
                self.clock.wait(self.retry_now, backoff)
                self.retry_now.clear()
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _list(self) -> None:
        objects, rv = self.cluster.list(self.kind)
        with self.lock:
            self._cache = {key_of(o): o for o in objects}
            self.resource_version = rv
        self.relists += 1
        self.synced.set()
        for listener in self.listeners:
            listener.relisted(self.kind, objects)

    def _watch(self) -> None:
        for event in self.cluster.watch(self.kind, self.resource_version, self.watch_timeout):
            obj, kind = event["object"], event["type"]
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if kind == "BOOKMARK":
                if rv:
                    self.resource_version = rv
                continue
            key = key_of(obj)
            with self.lock:
                if kind == "DELETED":
                    self._cache.pop(key, None)
                else:
                    self._cache[key] = obj
                if rv:
                    self.resource_version = rv
            for listener in self.listeners:
                listener.changed(self.kind, kind, obj)
            if self.stop.is_set() or not self.active():
                return
