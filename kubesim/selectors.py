"""Label selectors (=, ==, !=, in, notin, exists, !exists) and field selectors
(metadata.name, metadata.namespace, spec.nodeName, status.phase, and other simple paths)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Callable

from .errors import bad_request

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


def parse_labels(text: str | None) -> tuple[Requirement, ...]:
    if not text:
        return ()
    requirements = []
    for part in _split_top_level(text):
        eq = _EQ_RE.match(part)
        if eq:
            key, op, value = eq.groups()
            requirements.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
            continue
        match = _SET_RE.match(part)
        if not match:
            raise bad_request(f'unable to parse requirement: invalid label selector "{text}"')
        negate, key, op, values = match.groups()
        if op:
            if negate:
                raise bad_request(f'unable to parse requirement: "{part}"')
            vals = tuple(v.strip() for v in values.split(",") if v.strip())
            requirements.append(Requirement(key, op, vals))
        else:
            requirements.append(Requirement(key, "!exists" if negate else "exists"))
    return tuple(requirements)


def match_labels(requirements, obj: dict) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


def _field_value(obj: dict, path: str):
    node = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
        if node is None:
            return ""
    return node if isinstance(node, str) else str(node).lower() if isinstance(node, bool) else str(node)


def parse_fields(text: str | None) -> tuple[tuple[str, str, str], ...]:
    if not text:
        return ()
    found = []
    for part in _split_top_level(text):
        match = re.match(r"^\s*([A-Za-z0-9._]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not match:
            raise bad_request(f'invalid field selector: "{text}"')
        path, op, value = match.groups()
        found.append((path, "!=" if op == "!=" else "=", value))
    return tuple(found)


def match_fields(requirements, obj: dict) -> bool:
    for path, op, value in requirements:
        actual = _field_value(obj, path)
        if (actual == value) != (op == "="):
            return False
    return True


def matcher(label_selector: str | None, field_selector: str | None) -> Callable[[dict], bool]:
    labels = parse_labels(label_selector)
    fields = parse_fields(field_selector)
    if not labels and not fields:
        return lambda obj: True
    return lambda obj: match_labels(labels, obj) and match_fields(fields, obj)


def index_terms(label_selector: str | None) -> tuple[tuple[str, frozenset], ...]:
    """The (label, allowed values) pairs a label selector requires (= and in): a label index can
    answer these, and the full matcher then checks the rest."""
    return tuple((r.key, frozenset(r.values)) for r in parse_labels(label_selector) if r.op in ("=", "in"))
