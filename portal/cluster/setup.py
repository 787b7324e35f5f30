"""The portal's Cluster from its configuration (CRATER_KUBECONFIG, CRATER_JOB_NAMESPACE, ...),
made once per app on first use: creating the app does no I/O."""
from __future__ import annotations

from flask import Flask

from .client import Cluster, ClusterError
from .manifests import ClusterSettings

EXTENSION = "crater_cluster"


def settings_from(config) -> ClusterSettings:
    return ClusterSettings(namespace=config["JOB_NAMESPACE"], shared_claim=config.get("SHARED_PVC", ""),
                           ingress_host=config.get("INGRESS_HOST", ""), ingress_class=config.get("INGRESS_CLASS", ""))


def cluster_for(app: Flask) -> Cluster:
    cluster = app.extensions.get(EXTENSION)
    if cluster is None:
        try:
            cluster = Cluster.connect(app.config["KUBECONFIG"], settings_from(app.config))
        except Exception as exc:  # noqa: BLE001  no kubeconfig, not in a cluster, unreadable file
            raise ClusterError(f"The cluster is not configured: {exc}", retryable=True) from None
        app.extensions[EXTENSION] = cluster
    return cluster


class LazyCluster:
    """The app's Cluster, connected on first use: views hand it to services, which call it only
    after their authorization and state checks (so a refused request never touches the cluster)."""

    def __init__(self, app: Flask):
        self._app = app

    def __getattr__(self, name):
        return getattr(cluster_for(self._app), name)
