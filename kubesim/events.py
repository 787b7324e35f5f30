"""core/v1 Events as the scheduler, kubelet and controllers record them; a repeat of the same
reason and message for the same object bumps `count` instead of adding a new Event."""
from __future__ import annotations

from .store import clone
import uuid

from . import errors
from .resources import core
from .store import now_iso


class Recorder:
    def __init__(self, store, clock):
        self.store, self.clock = store, clock
        self._recent: dict[tuple, str] = {}

    def record(self, obj: dict, reason: str, message: str, type_: str = "Normal", component: str = "kubesim",
               host: str = "") -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (namespace, meta.get("uid"), reason, message)
        stamp = now_iso(self.clock())
        name = self._recent.get(key)
        if name is not None:
            try:
                def bump(ev):
                    ev["count"] = ev.get("count", 1) + 1
                    ev["lastTimestamp"] = stamp
                self.store.mutate(core("events"), namespace, name, bump)
                return
            except errors.ApiError:
                self._recent.pop(key, None)
        name = f"{meta['name']}.{uuid.uuid4().hex[:16]}"
        event = {
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"kind": obj.get("kind"), "namespace": meta.get("namespace", ""), "name": meta["name"],
                               "uid": meta.get("uid"), "apiVersion": obj.get("apiVersion"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "source": {"component": component, **({"host": host} if host else {})},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "reportingComponent": component,
            "reportingInstance": host or component,
        }
        try:
            self.store.create(core("events"), namespace, clone(event), validate=False)
        except errors.ApiError:
            return  # the namespace is going away
        self._recent[key] = name
        if len(self._recent) > 50_000:
            self._recent.clear()
