"""The portal's Cluster from its configuration (CRATER_KUBECONFIG, CRATER_JOB_NAMESPACE, ...),
made once per app on first use: creating the app does no I/O."""
from __future__ import annotations

from flask import Flask

from .client import Cluster, ClusterError
from .manifests import ClusterSettings

EXTENSION = "crater_cluster"


def settings_from(config) -> ClusterSettings:
    public = (config.get("PUBLIC_URL") or "").rstrip("/")
    return ClusterSettings(namespace=config["JOB_NAMESPACE"], shared_claim=config.get("SHARED_PVC", ""),
                           ingress_host=config.get("INGRESS_HOST", ""), ingress_class=config.get("INGRESS_CLASS", ""),
                           ingress_url=config.get("INGRESS_URL", ""), auth_url=config.get("INGRESS_AUTH_URL", ""),
                           auth_signin=f"{public}/login" if public else "/login")


def timeout_from(config) -> tuple[float, float]:
    """(connect, read) seconds from CRATER_CLUSTER_TIMEOUT: the read timeout is the setting, the
    connect timeout at most 3 s of it (a refused or unroutable address shows quickly)."""
    read = float(config.get("CLUSTER_TIMEOUT", 5.0))
    return min(3.0, read), read


def connect(config) -> Cluster:
    """A Cluster of its own for this configuration (the syncer makes one per process)."""
    try:
        return Cluster.connect(config["KUBECONFIG"], settings_from(config), timeout_from(config))
    except Exception as exc:  # noqa: BLE001  no kubeconfig, not in a cluster, unreadable file
        raise ClusterError(f"The cluster is not configured: {exc}", retryable=True) from None


def cluster_for(app: Flask) -> Cluster:
    cluster = app.extensions.get(EXTENSION)
    if cluster is None:
        cluster = app.extensions[EXTENSION] = connect(app.config)
    return cluster


class LazyCluster:
    """The app's Cluster, connected on first use: views hand it to services, which call it only
    after their authorization and state checks (so a refused request never touches the cluster)."""

    def __init__(self, app: Flask):
        self._app = app

    def __getattr__(self, name):
        return getattr(cluster_for(self._app), name)
