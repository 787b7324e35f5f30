"""The resource types kubesim serves: group, version, kind, plural, scope, subresources.

Everything else under /api and /apis is answered with a NotFound Status, like a real API server
without that resource.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" = core
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


RESOURCES = [
    ResourceType("", "v1", "Namespace", "namespaces", False, ("ns",), ("status",)),
    ResourceType("", "v1", "Node", "nodes", False, ("no",), ("status",)),
    ResourceType("", "v1", "Pod", "pods", True, ("po",), ("status", "log"), ("all",)),
    ResourceType("", "v1", "Service", "services", True, ("svc",), ("status",), ("all",)),
    ResourceType("", "v1", "Secret", "secrets", True),
    ResourceType("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    ResourceType("", "v1", "Event", "events", True, ("ev",)),
    ResourceType("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",), ("status",)),
    ResourceType("batch", "v1", "Job", "jobs", True, (), ("status",), ("all",)),
    ResourceType("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), ("status",)),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", True),
]

BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
GROUPS: dict[str, list[str]] = {}
for _r in RESOURCES:
    if _r.group:
        GROUPS.setdefault(_r.group, [])
        if _r.version not in GROUPS[_r.group]:
            GROUPS[_r.group].append(_r.version)

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return BY_PATH.get((group, version, plural))


def core(plural: str) -> ResourceType:
    return BY_PATH[("", "v1", plural)]


def get(key: str) -> ResourceType:
    """By `group/plural`, e.g. "/pods", "batch/jobs"."""
    for r in RESOURCES:
        if r.key == key:
            return r
    raise KeyError(key)
