"""The Kubernetes API semantics: discovery documents, paths to resources, verbs, selectors,
paging, watches, patches and deletion options. Works on the `Store`; knows nothing of HTTP."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable

from . import errors, patch as patches
from .resources import GROUPS, RESOURCES, VERBS, ResourceType, lookup
from .selectors import index_terms, matcher
from .store import Store, WatchOptions
from .tables import table

KUBE_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-kubesim", "gitCommit": "kubesim",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23",
                "compiler": "gc", "platform": "linux/amd64"}
RETURNS_DELETED_OBJECT = {"pods", "services", "persistentvolumeclaims"}
MAX_WATCH_SECONDS = 1800


@dataclass
class Result:
    code: int = 200
    body: Any = None
    raw: bytes | None = None  # an already encoded JSON body
    text: str | None = None
    stream: Iterable | None = None
    content_type: str = "application/json"


class Api:
    def __init__(self, store: Store, sim=None, bookmark_interval: float = 5.0):
        self.store, self.sim, self.bookmark_interval = store, sim, bookmark_interval

    # ---- entry --------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict, body, headers) -> Result:
        parts = [p for p in path.split("/") if p]
        if path == "/version":
            return Result(body=KUBE_VERSION)
        if parts == ["api"]:
            return Result(body={"kind": "APIVersions", "versions": ["v1"],
                                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        if parts == ["apis"]:
            return Result(body=self._group_list())
        if parts[:2] == ["openapi", "v3"]:
            from . import openapi
            doc = openapi.index() if len(parts) == 2 else openapi.lookup(parts)
            if doc is None:
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            return Result(body=doc)
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 2 and parts[0] == "apis" and parts[1] in GROUPS:
            if len(parts) == 2:
                return Result(body=self._group(parts[1]))
            if parts[2] not in GROUPS[parts[1]]:
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return Result(body=self._resource_list(group, version))
        return self._resource_request(method, group, version, rest, query, body, headers)

    # ---- discovery ----------------------------------------------------------------------------

    def _group(self, group: str) -> dict:
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in GROUPS[group]]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
                "preferredVersion": versions[0]}

    def _group_list(self) -> dict:
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group(g) for g in GROUPS]}

    def _resource_list(self, group: str, version: str) -> dict:
        resources = []
        for r in RESOURCES:
            if r.group != group or r.version != version:
                continue
            resources.append({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                              "kind": r.kind, "verbs": VERBS, "shortNames": list(r.short_names),
                              **({"categories": list(r.categories)} if r.categories else {})})
            for sub in r.subresources:
                resources.append({"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                                  "kind": r.kind, "verbs": ["get"] if sub == "log" else ["get", "patch", "update"]})
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    # ---- resources ----------------------------------------------------------------------------

    def _resource_request(self, method, group, version, rest, query, body, headers) -> Result:
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and lookup(group, version, rest[2]) is not None \
                and not (group == "" and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        rtype = lookup(group, version, rest[0])
        if rtype is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if len(rest) > 3 or (sub and sub not in rtype.subresources and not (rtype.plural == "namespaces" and sub == "finalize")):
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if rtype.namespaced and name is not None and namespace is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rtype.namespaced and namespace is not None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        ns = namespace or ""

        if name is None:
            if method == "GET":
                if query.get("watch") in ("1", "true"):
                    return self._watch(rtype, namespace, query, "as=Table" in headers.get("Accept", ""))
                return self._list(rtype, namespace, query, headers)
            if method == "POST":
                return Result(201, self._create(rtype, ns, body, query))
            if method == "DELETE":
                return Result(body=self._delete_collection(rtype, namespace, query, body))
            raise errors.method_not_allowed()
        if sub == "log":
            if method != "GET":
                raise errors.method_not_allowed()
            return self.sim.pod_log(ns, name, query)
        if method == "GET":
            obj = self.store.get(rtype, ns, name)
            if "as=Table" in headers.get("Accept", ""):  # kubectl get KIND NAME prints the server's columns
                return Result(body=table(rtype, [obj], {"resourceVersion": obj["metadata"].get("resourceVersion", "")}))
            return Result(body=obj)
        if method == "PUT":
            return Result(body=self._update(rtype, ns, name, body, sub, query))
        if method == "PATCH":
            return self._patch(rtype, ns, name, body, sub, headers, query)
        if method == "DELETE":
            return self._delete(rtype, ns, name, query, body)
        raise errors.method_not_allowed()

    def _list(self, rtype: ResourceType, namespace, query, headers) -> Result:
        match = matcher(query.get("labelSelector"), query.get("fieldSelector"))
        limit = _int(query, "limit", 0)
        as_table = "as=Table" in headers.get("Accept", "")
        items, rv, token, remaining = self.store.list(rtype, namespace, match, limit, query.get("continue", ""),
                                                      label_terms=index_terms(query.get("labelSelector")),
                                                      raw=not as_table)
        meta = {"resourceVersion": str(rv)}
        if token:
            meta["continue"] = token
            meta["remainingItemCount"] = remaining
        if as_table:
            return Result(body=table(rtype, items, meta))
        head = json.dumps({"kind": rtype.list_kind, "apiVersion": rtype.api_version, "metadata": meta},
                          separators=(",", ":")).encode()
        return Result(raw=head[:-1] + b',"items":[' + b",".join(items) + b"]}")

    def _watch(self, rtype, namespace, query, as_table: bool = False) -> Result:
        rv_text = query.get("resourceVersion", "")
        since = None
        if rv_text not in ("", "0"):
            try:
                since = int(rv_text)
            except ValueError:
                raise errors.bad_request(f"invalid resource version: {rv_text!r}") from None
        opts = WatchOptions(
            namespace=namespace, match=matcher(query.get("labelSelector"), query.get("fieldSelector")),
            since_rv=since, timeout=min(_int(query, "timeoutSeconds", MAX_WATCH_SECONDS), MAX_WATCH_SECONDS),
            bookmarks=query.get("allowWatchBookmarks") in ("1", "true"), bookmark_interval=self.bookmark_interval)
        events = self.store.watch(rtype, opts)
        if as_table:
            first = [True]

            def tables(stream=events):
                for event in stream:
                    if event is None:
                        yield None
                        continue
                    if isinstance(event, bytes):
                        event = json.loads(event)
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        obj = table(rtype, [event["object"]], {"resourceVersion": event["object"]["metadata"]["resourceVersion"]})
                        if not first[0]:
                            obj["columnDefinitions"] = []
                        first[0] = False
                        event = {"type": event["type"], "object": obj}
                    yield event
            return Result(stream=tables())
        return Result(stream=events)

    def _create(self, rtype, namespace, body, query) -> dict:
        _require_object(body, rtype)
        if query.get("dryRun"):
            return body
        return self.store.create(rtype, namespace, body)

    def _update(self, rtype, namespace, name, body, sub, query) -> dict:
        _require_object(body, rtype)
        return self.store.update(rtype, namespace, name, body, subresource=sub)

    def _patch(self, rtype, namespace, name, body, sub, headers, query) -> Result:
        ctype = headers.get("Content-Type", "").split(";")[0].strip()
        with self.store.lock:
            current = self.store.find(rtype, namespace, name)
            if current is None:
                if ctype == "application/apply-patch+yaml":  # server-side apply creates
                    _require_object(body, rtype)
                    return Result(201, self.store.create(rtype, namespace, body))
                raise errors.not_found(rtype, name)
            if ctype == "application/json-patch+json":
                new = patches.json_patch(current, body)
            elif ctype == "application/merge-patch+json":
                new = patches.merge_patch(current, body)
            elif ctype == "application/strategic-merge-patch+json":
                new = patches.strategic_merge_patch(current, body)
            elif ctype == "application/apply-patch+yaml":
                new = patches.merge_patch(current, body)
            else:
                raise errors.ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                      "accepted media types include: application/json-patch+json, "
                                      "application/merge-patch+json, application/apply-patch+yaml, "
                                      "application/strategic-merge-patch+json")
            if not isinstance(new, dict):
                raise errors.bad_request("the patch did not produce an object")
            sent_rv = (body or {}).get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
            new.setdefault("metadata", {})["resourceVersion"] = sent_rv or current["metadata"]["resourceVersion"]
            return Result(body=self.store.update(rtype, namespace, name, new, subresource=sub))

    def _delete(self, rtype, namespace, name, query, body) -> Result:
        options = body if isinstance(body, dict) else {}
        policy = query.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
        if policy not in ("Foreground", "Background", "Orphan"):
            raise errors.bad_request(f"propagationPolicy: Unsupported value: {policy!r}")
        grace = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        pre = options.get("preconditions") or {}
        if self.sim is not None:
            obj, gone = self.sim.delete(rtype, namespace, name, policy=policy,
                                        grace=None if grace in (None, "") else int(grace),
                                        precondition_uid=pre.get("uid", ""), precondition_rv=pre.get("resourceVersion", ""))
        else:
            obj, gone = self.store.delete(rtype, namespace, name, pre.get("uid", ""), pre.get("resourceVersion", ""))
        if gone and rtype.plural not in RETURNS_DELETED_OBJECT:
            details = {"name": name, "kind": rtype.plural, "uid": obj["metadata"]["uid"]}
            if rtype.group:
                details["group"] = rtype.group
            return Result(body={"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                "details": details})
        return Result(body=obj)

    def _delete_collection(self, rtype, namespace, query, body) -> dict:
        match = matcher(query.get("labelSelector"), query.get("fieldSelector"))
        items, _rv, _t, _r = self.store.list(rtype, namespace, match)
        for obj in items:
            try:
                self._delete(rtype, obj["metadata"].get("namespace", ""), obj["metadata"]["name"], query, body)
            except errors.ApiError as exc:
                if exc.code != 404:
                    raise
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    # ---- outside the Kubernetes API -------------------------------------------------------------

    def metrics(self) -> str:
        return self.sim.metrics_text() if self.sim is not None else ""

    def control(self, method, path, query, body) -> dict:
        if self.sim is None:
            raise errors.ApiError(404, "NotFound", "no control endpoint")
        return self.sim.control(method, path, query, body)


def _require_object(body, rtype: ResourceType) -> None:
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request must be a JSON object")
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if (kind and kind != rtype.kind) or (api_version and api_version != rtype.api_version):
        raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                                 f"version ({rtype.api_version})" if api_version != rtype.api_version else
                                 f"the kind in the data ({kind}) does not match the expected kind ({rtype.kind})")


def _int(query: dict, name: str, default: int) -> int:
    raw = query.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise errors.bad_request(f"invalid {name}: {raw!r}") from None

