"""Probes for the load balancer and Kubernetes: /healthz (process) and /readyz (database)."""
from __future__ import annotations

from flask import Blueprint, current_app
from sqlalchemy import text

from ..extensions import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process answers. Never touches the database."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """The database answers; 503 otherwise (the pod leaves the Service until it does)."""
    try:
        db.session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001  any DB failure means "not ready"
        current_app.logger.warning("readiness check failed: %s", exc.__class__.__name__)
        db.session.rollback()
        return {"status": "unavailable", "database": "unreachable"}, 503
    return {"status": "ok", "database": "ok"}

