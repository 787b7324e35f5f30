"""The first migration builds exactly the schema the models describe, on SQLite and MariaDB."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from portal.extensions import db


def test_upgrade_head_on_an_empty_database_matches_the_models(app):
    # `app` stands on a schema built by `upgrade()` from an empty database (conftest.migrate_fresh).
    with app.app_context(), db.engine.connect() as conn:
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


def test_jobs_migration_keeps_existing_rows(schema, tmp_path):
    """0002 adds NOT NULL columns to a table that may already hold jobs: they get defaults."""
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import text

    from conftest import base_config
    from portal import create_app

    app = create_app(base_config(schema))
    with app.app_context():
        try:
            downgrade(revision="0001_initial")
            db.session.execute(text("DELETE FROM jobs"))
            db.session.execute(text("DELETE FROM memberships"))
            db.session.execute(text("DELETE FROM users"))
            db.session.execute(text("DELETE FROM accounts"))
            db.session.execute(text("INSERT INTO users (id, username, display_name, email, role, active, auth_source, created_at) "
                                    "VALUES (1, 'old', '', '', 'user', true, 'local', '2026-01-01 00:00:00')"))
            db.session.execute(text("INSERT INTO accounts (id, name, display_name, description, created_at) "
                                    "VALUES (1, 'lab', '', '', '2026-01-01 00:00:00')"))
            db.session.execute(text("INSERT INTO jobs (id, user_id, account_id, job_type, display_name, state, created_at) "
                                    "VALUES (1, 1, 1, 'batch', 'old job', 'Succeeded', '2026-01-01 00:00:00')"))
            db.session.commit()
            upgrade()
            row = db.session.execute(text("SELECT reason, gpus, workers, hidden, display_name FROM jobs WHERE id = 1")).one()
            assert tuple(row) == ("", 0, 1, False, "old job") or tuple(row) == ("", 0, 1, 0, "old job")
        finally:
            db.session.rollback()
            for table in ("jobs", "memberships", "users", "accounts"):
                db.session.execute(text(f"DELETE FROM {table}"))
            db.session.commit()
            db.engine.dispose()
