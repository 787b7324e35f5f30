"""/healthz answers while the process lives; /readyz only while the database answers with a schema
that is not behind the code."""
from conftest import base_config
from portal import create_app


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_when_the_database_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok", "database": "ok", "schema": "ok"}


def test_readyz_waits_for_the_migration_but_not_for_a_newer_release(app, client):
    """An upgrade: a new release's pod is not ready while the schema is behind it; an old pod
    stays ready when the new release's migration has run (a revision it does not know)."""
    from sqlalchemy import text

    from portal.extensions import db
    with app.app_context():
        head = db.session.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        try:
            db.session.execute(text("UPDATE alembic_version SET version_num = '0009_fair_use'"))
            db.session.commit()
            response = client.get("/readyz")
            assert response.status_code == 503 and response.get_json()["schema"] == "behind"
            db.session.execute(text("UPDATE alembic_version SET version_num = '9999_from_a_newer_release'"))
            db.session.commit()
            assert client.get("/readyz").status_code == 200
            db.session.execute(text("DELETE FROM alembic_version"))
            db.session.commit()
            assert client.get("/readyz").get_json()["schema"] == "behind"  # never migrated
        finally:
            db.session.execute(text("DELETE FROM alembic_version"))
            db.session.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": head})
            db.session.commit()


def test_readyz_is_503_when_the_database_is_gone(tmp_path):
    app = create_app(base_config("mysql+pymysql://nobody:x@127.0.0.1:1/none?connect_timeout=1"))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "unreachable", "schema": "unknown"}
    assert app.test_client().get("/healthz").status_code == 200


def test_a_signed_in_page_says_try_again_when_the_database_is_away():
    """The database refusing connections (restarting): a 503 "try again" page with Retry-After,
    for a page and for an htmx poll, never a 500."""
    app = create_app(base_config("mysql+pymysql://nobody:x@127.0.0.1:1/none?connect_timeout=1"))
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = "1"
        session["_fresh"] = True
    page = client.get("/jobs")
    assert page.status_code == 503 and page.headers["Retry-After"] == "5"
    assert "The database does not answer right now" in page.get_data(as_text=True)
    poll = client.get("/jobs?page=1", headers={"HX-Request": "true"})
    assert poll.status_code == 503 and poll.headers["HX-Retarget"] == "#flash"


def test_a_connection_the_database_drops_mid_request_is_not_a_500(app):
    """MariaDB restarting under a request: its connection is gone by the time the session ends.
    The answer already made stands; the dead connection is dropped (and the next request works)."""
    from sqlalchemy import create_engine, text

    from portal.extensions import db
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if not uri.startswith("mysql"):
        import pytest
        pytest.skip("needs a server that can drop a connection")
    killer = create_engine(uri)

    def dropped():
        own = db.session.execute(text("SELECT CONNECTION_ID()")).scalar()
        with killer.connect() as conn:
            conn.execute(text(f"KILL CONNECTION {int(own)}"))
        return "answered"
    app.add_url_rule("/test-dropped", "test_dropped", dropped)
    client = app.test_client()
    response = client.get("/test-dropped")
    assert response.status_code == 200 and response.get_data(as_text=True) == "answered"
    assert client.get("/readyz").status_code == 200
    killer.dispose()
