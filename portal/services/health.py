"""Readiness: whether the database answers. Touches the DB only."""
from __future__ import annotations

from sqlalchemy import text

from ..extensions import db


def database_ready() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001  any DB failure means "not ready"
        db.session.rollback()
        return False
