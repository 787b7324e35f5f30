"""The first migration builds exactly the schema the models describe, on SQLite and MariaDB."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from portal.extensions import db


def test_upgrade_head_on_an_empty_database_matches_the_models(app):
    # `app` stands on a schema built by `upgrade()` from an empty database (conftest.migrate_fresh).
    with app.app_context():
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
            diff = compare_metadata(context, db.metadata)
    assert diff == []


def test_tables_exist_with_their_unique_constraints(app):
    with app.app_context():
        inspector = inspect(db.engine)
        tables = set(inspector.get_table_names())
        assert {"users", "accounts", "account_gpu_quotas", "memberships", "audit_log", "jobs",
                "alembic_version"} <= tables
        uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("users")}
        uniques |= {tuple(i["column_names"]) for i in inspector.get_indexes("users") if i["unique"]}
        assert ("username",) in uniques
        assert ("oidc_issuer", "oidc_subject") in uniques


def test_utf8mb4_round_trip(app, make):
    """Display names in Chinese (and emoji, which need utf8mb4 on MySQL) survive the database."""
    name = "视觉实验室 🚀"
    account_id = make.account("vision-lab", display_name=name)
    from portal.models import Account
    assert make.query(lambda s: s.get(Account, account_id).display_name) == name
