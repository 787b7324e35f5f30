"""Fixtures that start real components: the portal on SQLite and on a real MariaDB (when
CRATER_TEST_DATABASE_URL is set; CRATER_REQUIRE_MYSQL=1 turns the skip into a failure), a real OIDC
provider on loopback, and helpers that sign in and post forms with real CSRF tokens."""
from __future__ import annotations

import os
import tempfile
import re
import warnings

import pytest
from sqlalchemy import text

warnings.filterwarnings("ignore", category=DeprecationWarning, module="authlib")

from portal import create_app  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.models import Account, AccountGpuQuota, Membership, User  # noqa: E402

pytest_plugins = ["kubesim_fixtures"]

BACKENDS = ["sqlite", "mysql"]


def require(flag: str) -> bool:
    return os.environ.get(flag, "") not in ("", "0")


def skip_or_fail(flag: str, reason: str):
    if require(flag):
        pytest.fail(f"{reason} ({flag}=1 forbids skipping)")
    pytest.skip(reason)


# ---- databases -------------------------------------------------------------------------------

@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request, tmp_path_factory):
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path_factory.mktemp("db") / "test.sqlite3")
    url = os.environ.get("CRATER_TEST_DATABASE_URL", "")
    if not url:
        skip_or_fail("CRATER_REQUIRE_MYSQL", "CRATER_TEST_DATABASE_URL is not set: MySQL suite skipped")
    return worker_database(url, os.environ.get("PYTEST_XDIST_WORKER", ""))


def worker_database(url: str, worker: str) -> str:
    """Under pytest-xdist each worker has its own database, <db>_<worker> (created here; the
    account scripts/mariadb.sh makes may create them), so workers never wipe each other's rows."""
    if not worker:
        return url
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    own = make_url(url).set(database=f"{make_url(url).database}_{worker}")
    engine = create_engine(make_url(url).set(database=None))
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{own.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    finally:
        engine.dispose()
    return own.render_as_string(hide_password=False)


STORAGE = tempfile.mkdtemp(prefix="crater-storage-")  # the shared storage of tests that only read it


def base_config(url: str, **extra) -> dict:
    cfg = {"STORAGE_ROOT": STORAGE, "SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "SECRET_KEY": "test-secret-key-" + "x" * 32,
           "OIDC_ISSUER": "", "LOCAL_LOGIN": True, "DEBUG_HEADER_LOGIN": False, "PAGE_SIZE": 50,
           "SESSION_COOKIE_SECURE": False, "SHORT_CACHE_SECONDS": 0}
    cfg.update(extra)
    return cfg


def migrate_fresh(url: str) -> None:
    """Drop everything, then build the schema with the real Alembic migrations."""
    from flask_migrate import upgrade

    app = create_app(base_config(url))
    with app.app_context():
        db.drop_all()
        db.session.execute(text("DROP TABLE IF EXISTS alembic_version"))
        db.session.commit()
        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def schema(database_url):
    migrate_fresh(database_url)
    return database_url


def wipe(app) -> None:
    with app.app_context():
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(table.delete())
        db.session.commit()


@pytest.fixture
def app_config():
    """Per-test config overrides (a test may replace or update this dict before using `app`)."""
    return {}


@pytest.fixture
def app(schema, app_config):
    app = create_app(base_config(schema, **app_config))
    wipe(app)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


# ---- objects ---------------------------------------------------------------------------------

def lab_people(make, gpu_quota: int) -> dict:
    """alice and bob (members) and carol (manager) of vision-lab with `gpu_quota` GPUs, dave the
    manager of nlp-lab, root an admin: ids by name, and the accounts as "lab" and "other"."""
    ids = {"alice": make.user("alice"), "bob": make.user("bob"), "carol": make.user("carol"),
           "dave": make.user("dave"), "root": make.user("root", role="admin")}
    ids["lab"] = make.account("vision-lab", gpu_quota=gpu_quota, members={ids["alice"]: "member", ids["bob"]: "member",
                                                                          ids["carol"]: "manager"})
    ids["other"] = make.account("nlp-lab", members={ids["dave"]: "manager"})
    return ids


class Factory:
    """Creates rows in their own app context and returns ids, so tests never hold stale objects."""

    def __init__(self, app):
        self.app = app

    def user(self, username, role="user", active=True, password=None, **kw) -> int:
        from werkzeug.security import generate_password_hash

        from portal.services import accounts

        with self.app.app_context():
            user = User(username=username, role=role, active=active, display_name=kw.pop("display_name", username.title()),
                        email=kw.pop("email", f"{username}@example.edu"),
                        auth_source="local" if password else "oidc",
                        password_hash=generate_password_hash(password, "pbkdf2:sha256:1000") if password else None, **kw)
            db.session.add(user)
            db.session.flush()
            accounts.join_default_account(user)
            db.session.commit()
            return user.id

    def account(self, name, members: dict | None = None, model_quotas: dict | None = None, **kw) -> int:
        with self.app.app_context():
            account = Account(name=name, display_name=kw.pop("display_name", name.title()), **kw)
            for model, gpus in (model_quotas or {}).items():
                account.gpu_model_quotas.append(AccountGpuQuota(gpu_model=model, gpus=gpus))
            db.session.add(account)
            db.session.flush()
            for user_id, role in (members or {}).items():
                db.session.add(Membership(account_id=account.id, user_id=user_id, role=role))
            db.session.commit()
            return account.id

    def job(self, user_id, account_id, job_type="batch", state="Succeeded", **kw) -> int:
        from portal.models import Job

        kw.setdefault("display_name", f"{job_type} job")
        kw.setdefault("image", "pytorch/pytorch:2.4")
        kw.setdefault("spec", {"job_type": job_type, "display_name": kw["display_name"], "image": kw["image"],
                               "command": "python train.py", "gpus": kw.get("gpus", 0), "cpu_milli": 2000,
                               "memory_mib": 8192, "time_limit_seconds": 3600})
        with self.app.app_context():
            job = Job(user_id=user_id, account_id=account_id, job_type=job_type, state=state, **kw)
            db.session.add(job)
            db.session.commit()
            return job.id

    def api_token(self, user_id, name="laptop", scope="write", expires_days=30, now=None) -> tuple[int, str]:
        """A personal access token: (its row's id, the token itself)."""
        from portal.models import User
        from portal.services import tokens
        from portal.services.context import Actor

        with self.app.app_context():
            row, token = tokens.create(Actor(db.session.get(User, user_id)), name, scope, expires_days, now=now)
            return row.id, token

    def dataset(self, user_id, name, path, visibility="private", kind="dataset") -> int:
        from portal.models import Dataset
        with self.app.app_context():
            row = Dataset(name=name, path=path, owner_id=user_id, visibility=visibility, kind=kind, description="", tags="")
            db.session.add(row)
            db.session.commit()
            return row.id

    def template(self, user_id, account_id, name="tpl", shared=False, job_type="batch") -> int:
        from portal.models import JobTemplate

        with self.app.app_context():
            t = JobTemplate(user_id=user_id, account_id=account_id, name=name, job_type=job_type, shared=shared,
                            spec={"job_type": job_type, "display_name": name, "image": "busybox:1", "command": "true"})
            db.session.add(t)
            db.session.commit()
            return t.id

    def image(self, reference="pytorch/pytorch:2.4", job_types="jupyter,batch,distributed") -> int:
        from portal.models import Image

        with self.app.app_context():
            i = Image(reference=reference, job_types=job_types)
            db.session.add(i)
            db.session.commit()
            return i.id

    def node(self, name="a100-0", gpus=8, model="NVIDIA-A100-SXM4-80GB", **kw) -> str:
        from portal.models import Node

        kw.setdefault("labels", {"kubernetes.io/hostname": name, "nvidia.com/gpu.product": model, "lab.example.edu/rack": "r1"})
        with self.app.app_context():
            db.session.add(Node(name=name, gpus=gpus, gpu_model=model if gpus else "", ready=kw.pop("ready", True),
                                cpu_milli=kw.pop("cpu_milli", 128000), memory_mib=kw.pop("memory_mib", 1024 * 1024),
                                gpu_memory_mib=kw.pop("gpu_memory_mib", 81920), conditions=[], taints=[], **kw))
            db.session.commit()
            return name

    def placement(self, node, job_id=None, gpus=1, pod=None, namespace="crater-jobs", **kw) -> int:
        from portal.models import Placement

        with self.app.app_context():
            p = Placement(node=node, job_id=job_id, gpus=gpus, namespace=namespace,
                          pod=pod or f"crater-{job_id}-{node}", phase=kw.pop("phase", "Running"), **kw)
            db.session.add(p)
            db.session.commit()
            return p.id

    def extension_request(self, job_id, user_id, hours=4, state="pending") -> int:
        from portal.models import ExtensionRequest

        with self.app.app_context():
            r = ExtensionRequest(job_id=job_id, user_id=user_id, hours=hours, reason="more epochs", state=state)
            db.session.add(r)
            db.session.commit()
            return r.id

    def query(self, fn):
        with self.app.app_context():
            return fn(db.session)


@pytest.fixture
def mailbox():
    """A real SMTP server on loopback (tests/process_stack.Mailbox)."""
    from process_stack import Mailbox
    box = Mailbox()
    yield box
    box.stop()


@pytest.fixture
def make(app):
    return Factory(app)


def rows_of(app, model):
    """Every row of a model as it is now, oldest first, detached."""
    with app.app_context():
        rows = db.session.query(model).order_by(model.id).all()
        for r in rows:
            db.session.expunge(r)
        db.session.remove()
        return rows


def job_of(app, job_id):
    """A job row as it is now, detached (safe to read after the app context ends)."""
    from portal.models import Job

    with app.app_context():
        job = db.session.get(Job, job_id)
        db.session.expunge(job)
        db.session.remove()
        return job


# ---- clients ---------------------------------------------------------------------------------

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


class Client:
    """A test client that signs in and sends the CSRF token like the browser does."""

    def __init__(self, app):
        self.app = app
        self.http = app.test_client()

    def login(self, user_id: int) -> Client:
        with self.http.session_transaction() as s:
            s["_user_id"] = str(user_id)
            s["_fresh"] = True
        return self

    def csrf(self) -> str:
        """The token from a page's meta tag (the sign-out page renders for everyone)."""
        page = self.http.get("/logout")
        match = CSRF_META.search(page.get_data(as_text=True))
        assert match, "no CSRF token on the page"
        return match.group(1)

    def get(self, url, **kw):
        return self.http.get(url, **kw)

    def post(self, url, data=None, htmx=False, csrf=True, **kw):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf_token", self.csrf())
        headers = kw.pop("headers", {})
        if htmx:
            headers.update({"HX-Request": "true", "HX-Current-URL": "http://localhost/admin/users"})
        return self.http.post(url, data=data, headers=headers, **kw)


@pytest.fixture
def client(app):
    return Client(app)


@pytest.fixture
def new_client(app):
    return lambda: Client(app)


# ---- the OIDC provider -----------------------------------------------------------------------

@pytest.fixture(scope="session")
def oidc_issuer():
    try:
        with warnings.catch_warnings():  # it imports Authlib modules that Authlib deprecates
            warnings.simplefilter("ignore")
            from oidc_provider_mock import run_server_in_thread
    except ImportError:
        skip_or_fail("CRATER_REQUIRE_OIDC", "oidc-provider-mock is not installed")
    with run_server_in_thread(port=0) as server:
        yield f"http://localhost:{server.server_port}"
