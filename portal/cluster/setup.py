"""The portal's Cluster from its configuration (CRATER_KUBECONFIG, CRATER_JOB_NAMESPACE, ...),
made once per app on first use: creating the app does no I/O."""
from __future__ import annotations

from flask import Flask

from .client import Cluster
from .manifests import ClusterSettings

EXTENSION = "crater_cluster"


def settings_from(config) -> ClusterSettings:
    return ClusterSettings(namespace=config["JOB_NAMESPACE"], shared_claim=config.get("SHARED_PVC", ""),
                           ingress_host=config.get("INGRESS_HOST", ""), ingress_class=config.get("INGRESS_CLASS", ""))


def cluster_for(app: Flask) -> Cluster:
    cluster = app.extensions.get(EXTENSION)
    if cluster is None:
        cluster = app.extensions[EXTENSION] = Cluster.connect(app.config["KUBECONFIG"], settings_from(app.config))
    return cluster
