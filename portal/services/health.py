"""Readiness: whether the database answers and its schema is not behind this code (a pod of a new
release stays out of the Service until the migration Job has run; pods of the previous release
stay in, since migrations only add). Touches the DB only."""
from __future__ import annotations

import functools

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db


@functools.cache
def _revisions(directory: str) -> tuple[frozenset[str], frozenset[str]]:
    """(the heads, every revision) of the migrations in `directory`."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    config = Config()
    config.set_main_option("script_location", directory)
    script = ScriptDirectory.from_config(config)
    return frozenset(script.get_heads()), frozenset(r.revision for r in script.walk_revisions())


def readiness(migrations: str | None) -> dict[str, str]:
    """{"database": "ok"|"unreachable", "schema": "ok"|"behind"|"unknown"}."""
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001  any DB failure means "not ready"
        db.session.rollback()
        return {"database": "unreachable", "schema": "unknown"}
    try:
        found = set(db.session.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except SQLAlchemyError:
        db.session.rollback()
        found = set()  # never migrated
    heads, known = _revisions(migrations) if migrations else (frozenset(found), frozenset(found))
    # Behind: nothing migrated yet, or an older revision this code knows. A revision this code
    # does not know is a newer release's (its migration ran first during an upgrade): still ready.
    behind = not found or (found != heads and found <= known)
    return {"database": "ok", "schema": "behind" if behind else "ok"}
