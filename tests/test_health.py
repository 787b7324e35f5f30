"""/healthz answers while the process lives; /readyz only while the database answers."""
from conftest import base_config
from portal import create_app


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_when_the_database_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200 and response.get_json()["database"] == "ok"


def test_readyz_is_503_when_the_database_is_gone(tmp_path):
    app = create_app(base_config("mysql+pymysql://nobody:x@127.0.0.1:1/none?connect_timeout=1"))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "unreachable"}
    assert app.test_client().get("/healthz").status_code == 200
