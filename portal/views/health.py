"""Probes for the load balancer and Kubernetes: /healthz (process) and /readyz (database)."""
from __future__ import annotations

from flask import Blueprint

from ..services import health

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process answers. Never touches the database."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """The database answers; 503 otherwise (the pod leaves the Service until it does)."""
    if not health.database_ready():
        return {"status": "unavailable", "database": "unreachable"}, 503
    return {"status": "ok", "database": "ok"}
