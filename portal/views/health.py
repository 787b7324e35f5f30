"""Probes for the load balancer and Kubernetes: /healthz (process) and /readyz (database and schema)."""
from __future__ import annotations

from flask import Blueprint, current_app

from ..services import health

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process answers. Never touches the database."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """The database answers and its schema is this release's (or newer); 503 otherwise (the pod
    leaves the Service until it is)."""
    migrate = current_app.extensions.get("migrate")
    state = health.readiness(migrate.directory if migrate else None)
    ready = state["database"] == "ok" and state["schema"] == "ok"
    return {"status": "ok" if ready else "unavailable", **state}, 200 if ready else 503
