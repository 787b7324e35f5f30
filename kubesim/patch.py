"""The patch formats of the Kubernetes API: JSON merge patch (RFC 7386), strategic merge patch
(maps merge; lists with a known merge key merge by that key, other lists are replaced; the
`$patch: delete|replace` directives), JSON patch (RFC 6902). Server-side apply is treated as a
merge patch."""
from __future__ import annotations

from .store import clone

from .errors import ApiError, bad_request

# Lists that strategic merge patch merges by a key (from the Kubernetes API's patchMergeKey tags).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "env": "name", "volumeMounts": "mountPath", "ports": "containerPort", "conditions": "type",
    "taints": "key", "ownerReferences": "uid", "imagePullSecrets": "name", "hostAliases": "ip",
    "containerStatuses": "name", "initContainerStatuses": "name", "addresses": "type",
}
SET_LISTS = {"finalizers"}  # merged as sets


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target, patch, field: str = ""):
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: clone(v) for k, v in patch.items() if k != "$patch"}
        if patch.get("$patch") == "delete":
            return None
        result = clone(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                result.pop(key, None)
            elif isinstance(value, list):
                result[key] = _merge_list(result.get(key), value, key)
            else:
                merged = strategic_merge_patch(result.get(key), value, key)
                if merged is None:
                    result.pop(key, None)
                else:
                    result[key] = merged
        return result
    return clone(patch)


def _merge_list(current, patch: list, field: str):
    if field in SET_LISTS and isinstance(current, list):
        return list(dict.fromkeys([*current, *patch]))
    key = MERGE_KEYS.get(field)
    if key is None or not isinstance(current, list) or not all(isinstance(i, dict) for i in patch):
        return [strategic_merge_patch(None, item, field) for item in patch
                if not (isinstance(item, dict) and item.get("$patch") == "delete")]
    result = [clone(item) for item in current]
    for item in patch:
        if item.get("$patch") == "replace":
            return [clone({k: v for k, v in i.items() if k != "$patch"}) for i in patch]
        index = next((i for i, existing in enumerate(result)
                      if isinstance(existing, dict) and existing.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append(strategic_merge_patch(None, item, field))
        else:
            result[index] = strategic_merge_patch(result[index], item, field)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts: list[str]):
    node = doc
    for part in parts:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node[part]
        else:
            raise KeyError(part)
    return node


def json_patch(target, operations):
    if not isinstance(operations, list):
        raise bad_request("json patch must be a list of operations")
    doc = clone(target)
    try:
        for op in operations:
            kind, parts = op.get("op"), _pointer(op.get("path", ""))
            if kind == "test":
                if _walk(doc, parts) != op.get("value"):
                    raise ApiError(422, "Invalid", f"the test operation failed at {op.get('path')}")
                continue
            if kind in ("move", "copy"):
                value = clone(_walk(doc, _pointer(op["from"])))
                if kind == "move":
                    doc = _remove(doc, _pointer(op["from"]))
                doc = _add(doc, parts, value)
            elif kind == "add":
                doc = _add(doc, parts, clone(op.get("value")))
            elif kind == "remove":
                doc = _remove(doc, parts)
            elif kind == "replace":
                _walk(doc, parts)  # must exist
                doc = _remove(doc, parts)
                doc = _add(doc, parts, clone(op.get("value")))
            else:
                raise bad_request(f"unknown json patch operation {kind!r}")
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ApiError(422, "Invalid", f"the json patch could not be applied: {exc!r}") from None
    return doc


def _add(doc, parts, value):
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            index = int(last)
            if index > len(parent):
                raise IndexError(last)
            parent.insert(index, value)
    else:
        parent[last] = value
    return doc


def _remove(doc, parts):
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        parent.pop(int(last))
    else:
        del parent[last]
    return doc
