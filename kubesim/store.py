"""The object store behind kubesim's API: every object of every resource type, one monotonic
resourceVersion counter, and a bounded history of changes that watches replay from.

Stored objects are never mutated in place: a write stores a new dict, so readers (list, watch
serialisation) may hold references without copying. Callers that want to change an object take
`copy.deepcopy` of it first. One lock guards everything; watchers wait on its condition.
"""
from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, UTC
from collections.abc import Callable, Iterator

from . import errors
from .resources import RESOURCES, ResourceType

DEFAULT_HISTORY = 100_000


def now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Event:
    seq: int
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    rtype: ResourceType
    namespace: str
    obj: dict  # enough of the object for selectors (see _light); the full object lives in `raw`
    raw: bytes  # the object as JSON, encoded once for every watcher


def clone(value):
    """A deep copy of JSON-like data (dicts, lists, scalars): several times faster than
    copy.deepcopy, which the write path would otherwise spend most of its time in."""
    if isinstance(value, dict):
        return {k: clone(v) if isinstance(v, (dict, list)) else v for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


def encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _light(obj: dict) -> dict:
    """What label and field selectors look at: keeping only this in the history lets old object
    versions be freed while watches can still filter and replay them."""
    meta = obj.get("metadata", {})
    light = {"metadata": {k: meta[k] for k in ("name", "namespace", "labels", "uid") if k in meta}}
    if "nodeName" in obj.get("spec", {}):
        light["spec"] = {"nodeName": obj["spec"]["nodeName"]}
    if "phase" in obj.get("status", {}):
        light["status"] = {"phase": obj["status"]["phase"]}
    for key in ("involvedObject", "reason", "type", "source"):
        if key in obj:
            light[key] = obj[key]
    return light


@dataclass
class WatchOptions:
    namespace: str | None
    match: Callable[[dict], bool]
    since_rv: int | None  # None: send the current state as ADDED first
    timeout: float | None
    bookmarks: bool = False
    bookmark_interval: float = 5.0


@dataclass
class Store:
    history: int = DEFAULT_HISTORY
    lock: threading.RLock = field(default_factory=threading.RLock)
    rv: int = 0
    objects: dict = field(default_factory=dict)  # rtype.key -> {(namespace, name): obj}
    raw: dict = field(default_factory=dict)  # rtype.key -> {(namespace, name): JSON bytes of obj}
    label_index: dict = field(default_factory=dict)  # rtype.key -> {(label, value): {(namespace, name)}}
    log: deque = field(default_factory=deque)
    seq: int = 0
    compacted_rv: int = 0  # watches from an RV below this get 410 Gone
    watch_epoch: int = 0
    listeners: list = field(default_factory=list)  # fn(event) called after each change
    validator: Callable | None = None  # fn(rtype, obj, old) raises ApiError
    defaulter: Callable | None = None  # fn(rtype, obj, old) fills in defaults before validation
    clock: Callable[[], float] = time.time  # simulated time, for timestamps

    def __post_init__(self):
        self.cond = threading.Condition(self.lock)
        for rtype in RESOURCES:
            self.objects.setdefault(rtype.key, {})
            self.raw.setdefault(rtype.key, {})
            self.label_index.setdefault(rtype.key, {})

    # ---- reading ----------------------------------------------------------------------------

    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict:
        with self.lock:
            obj = self.objects[rtype.key].get((namespace if rtype.namespaced else "", name))
        if obj is None:
            raise errors.not_found(rtype, name)
        return obj

    def find(self, rtype: ResourceType, namespace: str, name: str) -> dict | None:
        with self.lock:
            return self.objects[rtype.key].get((namespace if rtype.namespaced else "", name))

    def list(self, rtype: ResourceType, namespace: str | None = None, match=None,
             limit: int = 0, continue_token: str = "", label_terms=(), raw: bool = False) -> tuple[list, int, str, int]:
        """(items, resourceVersion, continue token, remaining count), sorted by namespace/name.
        `label_terms` ((label, {values}) pairs every match must have) narrow the scan through the
        label index; `raw` returns each item as its JSON bytes instead of the object."""
        with self.lock:
            bucket = self.objects[rtype.key]
            rv = self.rv
            start = None
            if continue_token:
                token_rv, start = _decode_continue(continue_token)
                if token_rv < self.compacted_rv:
                    raise errors.gone("The provided continue parameter is too old to display a consistent list "
                                      "result. You can start a new list without the continue parameter.")
                start = tuple(start)
            keys = self._candidates(rtype, label_terms) if label_terms else bucket.keys()
            if namespace:
                keys = [k for k in keys if k[0] == namespace]
            keys = sorted(keys)
            items = []
            remaining = 0
            last_key = None
            raws = self.raw[rtype.key]
            for key in keys:
                if start is not None and key <= start:
                    continue
                obj = bucket[key]
                if match is not None and not match(obj):
                    continue
                if limit and len(items) >= limit:
                    remaining += 1
                    continue
                items.append(raws[key] if raw else obj)
                last_key = key
            token = _encode_continue(rv, last_key) if limit and remaining else ""
            return items, rv, token, remaining

    def _candidates(self, rtype: ResourceType, label_terms) -> set:
        index = self.label_index[rtype.key]
        result = None
        for label, values in label_terms:
            keys = set()
            for value in values:
                keys |= index.get((label, value), set())
            result = keys if result is None else result & keys
            if not result:
                return set()
        return result if result is not None else set(self.objects[rtype.key])

    def all(self, rtype: ResourceType) -> list[dict]:
        with self.lock:
            return list(self.objects[rtype.key].values())

    # ---- writing ----------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _record(self, kind: str, rtype: ResourceType, obj: dict, old: dict | None = None) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace", "") if rtype.namespaced else "", meta["name"])
        raw = encode(obj)
        index = self.label_index[rtype.key]
        for pair in ((old or {}).get("metadata", {}).get("labels") or {}).items():
            keys = index.get(pair)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[pair]
        if kind == "DELETED":
            self.raw[rtype.key].pop(key, None)
        else:
            self.raw[rtype.key][key] = raw
            for pair in (meta.get("labels") or {}).items():
                index.setdefault(pair, set()).add(key)
        self.seq += 1
        self.log.append(Event(self.seq, self.rv, kind, rtype, meta.get("namespace", ""), _light(obj), raw))
        while len(self.log) > self.history:
            dropped = self.log.popleft()
            self.compacted_rv = dropped.rv
        self.cond.notify_all()
        event = self.log[-1]
        for listener in list(self.listeners):
            listener(event, obj)

    def create(self, rtype: ResourceType, namespace: str, obj: dict, validate: bool = True) -> dict:
        """Store a new object. Internal writers (controllers: their objects are built from
        validated ones) pass validate=False; every API request is validated."""
        obj = clone(obj)
        meta = obj.setdefault("metadata", {})
        with self.lock:
            if rtype.namespaced:
                if not namespace:
                    raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
                if meta.get("namespace") and meta["namespace"] != namespace:
                    raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
                meta["namespace"] = namespace
                ns = self.objects["/namespaces"].get(("", namespace))
                if ns is None:
                    from .resources import core
                    raise errors.not_found(core("namespaces"), namespace)
                if ns.get("status", {}).get("phase") == "Terminating":
                    raise errors.ApiError(403, "Forbidden", f'{rtype.plural} "{meta.get("name", "")}" is forbidden: '
                                          f"unable to create new content in namespace {namespace} because it is being terminated")
            else:
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            name = meta.get("name", "")
            obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
            meta["uid"] = str(uuid.uuid4())  # the server's, whatever the client sent
            if self.defaulter:
                self.defaulter(rtype, obj, None)
            if self.validator and validate:
                self.validator(rtype, obj, None)
            key = (namespace if rtype.namespaced else "", name)
            if key in self.objects[rtype.key]:
                raise errors.already_exists(rtype, name)
            meta["creationTimestamp"] = now_iso(self.clock())
            meta.pop("deletionTimestamp", None)
            meta["generation"] = 1
            meta["resourceVersion"] = str(self._next_rv())
            self.objects[rtype.key][key] = obj
            self._record("ADDED", rtype, obj)
            return obj

    def update(self, rtype: ResourceType, namespace: str, name: str, obj: dict,
               subresource: str = "", check_rv: bool = True, validate: bool = True) -> dict:
        """Replace an object (or only its status / only its non-status part, as a real server
        does for resources with a status subresource)."""
        with self.lock:
            old = self.get(rtype, namespace, name)
            new = clone(obj)
            meta = new.setdefault("metadata", {})
            sent_rv = meta.get("resourceVersion")
            if check_rv and sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rtype, name, "the object has been modified; please apply your changes "
                                                   "to the latest version and try again")
            if meta.get("name", name) != name:
                raise errors.bad_request(f'the name of the object ({meta.get("name")}) does not match the name on the URL ({name})')
            if subresource == "status":
                new = {**clone(old), "status": new.get("status", {})}
                meta = new["metadata"]
            elif subresource == "*":
                pass
            elif rtype.has_status:
                new["status"] = clone(old.get("status", {})) if "status" in old else new.get("status")
                if new["status"] is None:
                    new.pop("status")
            for keep in ("uid", "creationTimestamp", "namespace", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if keep in old["metadata"]:
                    meta[keep] = old["metadata"][keep]
                else:
                    meta.pop(keep, None)
            meta["name"] = name
            new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
            if self.defaulter and subresource != "status":
                self.defaulter(rtype, new, old)
            if self.validator and validate:
                self.validator(rtype, new, old)
            if _without_meta_noise(new) == _without_meta_noise(old):
                return old  # a no-op write changes nothing, not even the resourceVersion
            generation = old["metadata"].get("generation", 1)
            if subresource != "status" and _spec_of(new) != _spec_of(old):
                generation += 1
            meta["generation"] = generation
            meta["resourceVersion"] = str(self._next_rv())
            key = (namespace if rtype.namespaced else "", name)
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                del self.objects[rtype.key][key]
                self._record("DELETED", rtype, new, old)
                return new
            self.objects[rtype.key][key] = new
            self._record("MODIFIED", rtype, new, old)
            return new

    def mutate(self, rtype: ResourceType, namespace: str, name: str, change: Callable[[dict], None],
               subresource: str = "") -> dict:
        """Read-modify-write under the lock (for controllers): `change` edits a deep copy;
        subresource "*" writes spec and status at once (a binding plus its condition)."""
        with self.lock:
            obj = clone(self.get(rtype, namespace, name))
            change(obj)
            return self.update(rtype, namespace, name, obj, subresource=subresource, check_rv=False, validate=False)

    def delete(self, rtype: ResourceType, namespace: str, name: str, precondition_uid: str = "",
               precondition_rv: str = "", grace: int | None = None) -> tuple[dict, bool]:
        """Delete now, or mark for deletion (deletionTimestamp) when finalizers or a graceful
        termination must run first. Returns (object, gone)."""
        with self.lock:
            old = self.get(rtype, namespace, name)
            if precondition_uid and old["metadata"]["uid"] != precondition_uid:
                raise errors.conflict(rtype, name, f"Precondition failed: UID in precondition: {precondition_uid}, "
                                                   f"UID in object meta: {old['metadata']['uid']}")
            if precondition_rv and old["metadata"]["resourceVersion"] != precondition_rv:
                raise errors.conflict(rtype, name, "Precondition failed: resourceVersion mismatch")
            key = (namespace if rtype.namespaced else "", name)
            if old["metadata"].get("finalizers") or grace:
                if old["metadata"].get("deletionTimestamp"):
                    return old, False
                new = clone(old)
                new["metadata"]["deletionTimestamp"] = now_iso(self.clock() + (grace or 0))
                if grace:
                    new["metadata"]["deletionGracePeriodSeconds"] = grace
                new["metadata"]["resourceVersion"] = str(self._next_rv())
                self.objects[rtype.key][key] = new
                self._record("MODIFIED", rtype, new, old)
                return new, False
            gone = clone(old)
            gone["metadata"]["resourceVersion"] = str(self._next_rv())
            del self.objects[rtype.key][key]
            self._record("DELETED", rtype, gone, old)
            return gone, True

    # ---- watching ---------------------------------------------------------------------------

    def watch(self, rtype: ResourceType, opts: WatchOptions, stop: threading.Event | None = None) -> Iterator:
        """Yield watch events until the timeout, `stop`, or a dropped watch: object events as
        ready-encoded JSON lines (bytes), BOOKMARK and ERROR events as dicts.
        A start below the compacted history yields one ERROR event (410 Expired) and ends; so
        does a watcher that falls so far behind that its next events were compacted away."""
        deadline = time.monotonic() + opts.timeout if opts.timeout else None
        with self.lock:
            epoch = self.watch_epoch
            if opts.since_rv is None:
                raws = self.raw[rtype.key]
                initial = [raws[key] for key, o in sorted(self.objects[rtype.key].items())
                           if (not opts.namespace or key[0] == opts.namespace) and opts.match(o)]
                cursor_rv = self.rv
            else:
                initial = []
                cursor_rv = opts.since_rv
            expired = cursor_rv < self.compacted_rv
            next_seq = self._seq_after(cursor_rv)
        if expired:
            yield _expired_event(cursor_rv)
            return
        for raw in initial:
            yield b'{"type":"ADDED","object":' + raw + b"}\n"
        last_bookmark = time.monotonic()
        while True:
            state, batch, next_seq, current_rv = self._wait(epoch, next_seq, cursor_rv, deadline, opts,
                                                            last_bookmark, stop)
            if state == "end":
                return
            if state == "expired":
                yield _expired_event(cursor_rv)
                return
            if state == "idle":
                yield None  # nothing happened for a while: the server checks the client is still there
                continue
            sent = False
            for event in batch:
                cursor_rv = event.rv
                if event.rtype is not rtype or (opts.namespace and event.namespace != opts.namespace):
                    continue
                if not opts.match(event.obj):
                    continue
                sent = True
                yield b'{"type":"' + event.type.encode() + b'","object":' + event.raw + b"}\n"
            if sent:
                last_bookmark = time.monotonic()
            elif state == "bookmark":
                last_bookmark = time.monotonic()
                yield {"type": "BOOKMARK", "object": {"kind": rtype.kind, "apiVersion": rtype.api_version,
                                                      "metadata": {"resourceVersion": str(current_rv)}}}

    def _wait(self, epoch, next_seq, cursor_rv, deadline, opts, last_bookmark, stop):
        """Block until there are new events, a bookmark is due, or the watch must end."""
        with self.lock:
            while True:
                if self.watch_epoch != epoch or (stop is not None and stop.is_set()):
                    return "end", [], next_seq, self.rv
                first_seq = self.log[0].seq if self.log else self.seq + 1
                if next_seq < first_seq and self.compacted_rv > cursor_rv:
                    return "expired", [], next_seq, self.rv
                if next_seq <= self.seq:
                    # The newest events sit at the deque's right end: take them from there
                    # (islice from the left would walk the whole history on every wake-up).
                    count = self.seq - max(next_seq, first_seq) + 1
                    batch = list(itertools.islice(reversed(self.log), count))
                    batch.reverse()
                    return "events", batch, self.seq + 1, self.rv
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return "end", [], next_seq, self.rv
                wait = 1.0 if deadline is None else min(1.0, deadline - now)
                if opts.bookmarks:
                    due = opts.bookmark_interval - (now - last_bookmark)
                    if due <= 0:
                        return "bookmark", [], next_seq, self.rv
                    wait = min(wait, due)
                if not self.cond.wait(wait):
                    return "idle", [], next_seq, self.rv

    def _seq_after(self, rv: int) -> int:
        """The seq of the first logged event with a resourceVersion above `rv`."""
        if rv >= self.rv:
            return self.seq + 1
        for event in reversed(self.log):
            if event.rv <= rv:
                return event.seq + 1
        return self.log[0].seq if self.log else self.seq + 1

    # ---- faults -----------------------------------------------------------------------------

    # ---- persistence (kubesim serve --state) ---------------------------------------------------

    def snapshot(self) -> dict:
        """Every object and the resourceVersion counter, as JSON-ready data."""
        with self.lock:
            return {"resourceVersion": self.rv,
                    "objects": {key: list(objs.values()) for key, objs in self.objects.items() if objs}}

    def restore(self, snapshot: dict) -> None:
        """Load a snapshot into an empty store, as etcd would give it back after a restart: the
        same objects and versions, no change history (a watch from before gets 410 Gone)."""
        by_key = {r.key: r for r in RESOURCES}
        with self.lock:
            for key, objects in (snapshot.get("objects") or {}).items():
                rtype = by_key.get(key)
                if rtype is None:
                    continue
                for obj in objects:
                    meta = obj["metadata"]
                    name_key = (meta.get("namespace", "") if rtype.namespaced else "", meta["name"])
                    self.objects[key][name_key] = obj
                    self.raw[key][name_key] = encode(obj)
                    for pair in (meta.get("labels") or {}).items():
                        self.label_index[key].setdefault(pair, set()).add(name_key)
            self.rv = max(self.rv, int(snapshot.get("resourceVersion") or 0))
            self.compacted_rv = self.rv

    def drop_watches(self) -> None:
        with self.lock:
            self.watch_epoch += 1
            self.cond.notify_all()

    def expire_history(self) -> None:
        """Forget the change history: every watch or continue token from before now gets 410."""
        with self.lock:
            self.log.clear()
            self.compacted_rv = self._next_rv()  # versions handed out before now are all too old
            self.watch_epoch += 1
            self.cond.notify_all()


def _expired_event(rv: int) -> dict:
    return {"type": "ERROR", "object": errors.gone(f"too old resource version: {rv} ").status()}


def _spec_of(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _without_meta_noise(obj: dict) -> dict:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "generation", "managedFields")}
    return {**obj, "metadata": meta}


def _encode_continue(rv: int, key) -> str:
    raw = json.dumps({"rv": rv, "start": list(key)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[int, list]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), list(data["start"])
    except (ValueError, KeyError, TypeError):
        raise errors.bad_request("continue key is not valid") from None
