"""A minimal OpenAPI v3 description of what kubesim serves. kubectl reads it to learn that the
server validates fields itself (the `fieldValidation` query parameter), and then sends its objects
with fieldValidation=Strict instead of validating them on the client."""
from __future__ import annotations

import hashlib
import json

from .resources import RESOURCES

FIELD_VALIDATION = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True},
                    "description": "Ignore, Warn or Strict: what to do with unknown or duplicate fields"}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def document(group: str, version: str) -> dict:
    paths = {}
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        base = "/" + _gv_path(group, version) + ("/namespaces/{namespace}" if r.namespaced else "")
        collection, item = f"{base}/{r.plural}", f"{base}/{r.plural}/{{name}}"
        ref = {"$ref": f"#/components/schemas/{r.kind}"}
        body = {"content": {"application/json": {"schema": ref}}}
        paths[collection] = {
            "get": {"x-kubernetes-action": "list", "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}},
            "post": {"x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk, "parameters": [FIELD_VALIDATION],
                     "requestBody": body, "responses": {"201": {"description": "Created"}}},
        }
        paths[item] = {
            "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}},
            "put": {"x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk, "parameters": [FIELD_VALIDATION],
                    "requestBody": body, "responses": {"200": {"description": "OK"}}},
            "patch": {"x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk, "parameters": [FIELD_VALIDATION],
                      "responses": {"200": {"description": "OK"}}},
            "delete": {"x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}},
        }
    schemas = {r.kind: {"type": "object", "x-kubernetes-group-version-kind": [{"group": r.group, "version": r.version, "kind": r.kind}]}
               for r in RESOURCES if (r.group, r.version) == (group, version)}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (kubesim)", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": schemas}}


def index() -> dict:
    paths = {}
    for gv in sorted({(r.group, r.version) for r in RESOURCES}):
        doc = json.dumps(document(*gv), sort_keys=True).encode()
        digest = hashlib.sha512(doc).hexdigest()[:64].upper()
        paths[_gv_path(*gv)] = {"serverRelativeURL": f"/openapi/v3/{_gv_path(*gv)}?hash={digest}"}
    return {"paths": paths}


def lookup(path_parts: list[str]) -> dict | None:
    """`openapi/v3/api/v1` or `openapi/v3/apis/batch/v1` -> the document, else None."""
    rest = path_parts[2:]
    for group, version in {(r.group, r.version) for r in RESOURCES}:
        if rest == _gv_path(group, version).split("/"):
            return document(group, version)
    return None
