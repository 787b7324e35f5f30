"""/dav/ with a real WebDAV client (webdav4, over HTTP to the portal on a real server): list,
upload, download, folders, rename, copy and delete in one's areas with a personal access token;
refused in another user's area, with a read-only token's writes, a revoked token, a wrong user
name, hostile paths and links planted in the area."""
import io
import os
from contextlib import contextmanager

import httpx
import pytest
from webdav4.client import Client, ForbiddenOperation, HTTPError, ResourceNotFound

from conftest import Factory
from portal.extensions import db
from portal.models import Membership
from test_browser import serving


@pytest.fixture
def portal(tmp_path):
    with serving(tmp_path, STORAGE_ROOT=str(tmp_path / "storage"), UPLOAD_MAX_BYTES=2 * 1024 * 1024) as (app, base):
        make = Factory(app)
        ids = {"alice": make.user("alice"), "bob": make.user("bob"), "carol": make.user("carol")}
        ids["lab"] = make.account("vision-lab", members={ids["alice"]: "member", ids["carol"]: "manager"})
        tokens = {name: make.api_token(ids[name], scope="write")[1] for name in ("alice", "bob", "carol")}
        tokens["alice-read"] = make.api_token(ids["alice"], name="read", scope="read")[1]
        yield app, base, ids, tokens, tmp_path / "storage"


@contextmanager
def dav(base, user, token):
    client = Client(base + "/dav/", auth=(user, token), timeout=30)
    try:
        yield client
    finally:
        client.http.close()


def test_a_real_client_lists_uploads_downloads_moves_and_deletes(portal):
    app, base, ids, tokens, root = portal
    with dav(base, "alice", tokens["alice"]) as c:
        top = {os.path.basename(e["name"].rstrip("/")) for e in c.ls("/", detail=True)}
        assert top == {"users", "accounts", "public"}
        assert [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in c.ls("users")] == ["alice"]
        assert sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in c.ls("accounts")) == ["default", "vision-lab"]
        body = os.urandom(200_000)
        c.upload_fileobj(io.BytesIO(body), "users/alice/model.pt")
        assert (root / "users/alice/model.pt").read_bytes() == body
        c.upload_fileobj(io.BytesIO(b"v2" * 10), "users/alice/model.pt", overwrite=True)  # PUT replaces
        assert (root / "users/alice/model.pt").read_bytes() == b"v2" * 10
        c.mkdir("users/alice/runs")
        c.move("users/alice/model.pt", "users/alice/runs/best.pt")
        c.copy("users/alice/runs/best.pt", "users/alice/runs/copy.pt")
        listing = {e["name"].rsplit("/", 1)[-1]: e for e in c.ls("users/alice/runs", detail=True)}
        assert set(listing) == {"best.pt", "copy.pt"} and listing["best.pt"]["content_length"] == 20
        out = io.BytesIO()
        c.download_fileobj("users/alice/runs/copy.pt", out)
        assert out.getvalue() == b"v2" * 10
        c.remove("users/alice/runs")
        assert not (root / "users/alice/runs").exists()
        assert os.listdir(root / ".crater-uploads") == []


def test_areas_tokens_and_names_are_refused_alike(portal):
    app, base, ids, tokens, root = portal
    (root / "users/bob").mkdir(parents=True)
    (root / "users/bob/secret.txt").write_bytes(b"bob's")
    with dav(base, "alice", tokens["alice"]) as c:
        with pytest.raises(ResourceNotFound):
            c.ls("users/bob")
        with pytest.raises((ResourceNotFound, HTTPError)):
            c.download_fileobj("users/bob/secret.txt", io.BytesIO())
        with pytest.raises(HTTPError):
            c.upload_fileobj(io.BytesIO(b"x"), "users/bob/pwn.txt")
        with pytest.raises(HTTPError):  # a member without the write grant reads the share only
            c.upload_fileobj(io.BytesIO(b"x"), "accounts/vision-lab/x.txt")
        c.ls("accounts/vision-lab")
    with dav(base, "carol", tokens["carol"]) as c:  # its manager writes
        c.upload_fileobj(io.BytesIO(b"x"), "accounts/vision-lab/x.txt")
    with dav(base, "alice", tokens["alice-read"]) as c:  # a read token reads
        c.ls("users/alice")
        with pytest.raises((HTTPError, ForbiddenOperation)):
            c.mkdir("users/alice/new")
    assert sorted(os.listdir(root / "users/bob")) == ["secret.txt"]
    assert not (root / "users/alice/new").exists()
    auth = [("alice", "crater_nope"), ("bob", tokens["alice"]), ("alice", "")]
    for user, token in auth:  # a wrong token, somebody else's token, none
        assert httpx.request("PROPFIND", base + "/dav/users/alice", auth=(user, token), headers={"Depth": "1"}).status_code == 401
    with app.app_context():
        from portal.services import tokens as token_service
        from portal.services.context import Actor
        from portal.models import User, ApiToken
        alice = db.session.get(User, ids["alice"])
        row = db.session.query(ApiToken).filter_by(user_id=alice.id, name="laptop").one()
        token_service.revoke(Actor(alice), row.id)
    assert httpx.request("PROPFIND", base + "/dav/users/alice", auth=("alice", tokens["alice"]),
                         headers={"Depth": "1"}).status_code == 401
    hostile = ["/dav/users/alice/%2e%2e/bob/secret.txt", "/dav/users/alice/..%2fbob/secret.txt",
               "/dav/users/alice/%252e%252e/bob", "/dav/users/alice/a%5cb", "/dav/.crater-uploads/"]
    for path in hostile:
        got = httpx.request("GET", base + path, auth=("carol", tokens["carol"]))
        assert 400 <= got.status_code < 500 and b"bob's" not in got.content, (path, got.status_code)


def test_links_and_limits(portal, tmp_path):
    app, base, ids, tokens, root = portal
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_bytes(b"root:x:0:0")
    (root / "users/carol").mkdir(parents=True)
    os.symlink(outside, root / "users/carol/escape")
    with dav(base, "carol", tokens["carol"]) as c:
        names = [e["name"].rsplit("/", 1)[-1] for e in c.ls("users/carol")]
        assert "escape" not in names  # links are not offered
        for path in ("users/carol/escape/passwd", "users/carol/escape"):
            got = httpx.request("GET", f"{base}/dav/{path}", auth=("carol", tokens["carol"]))
            assert got.status_code in (403, 404) and b"root:x" not in got.content
        with pytest.raises(HTTPError):
            c.upload_fileobj(io.BytesIO(b"x"), "users/carol/escape/x.txt")
        assert not (outside / "x.txt").exists()
        big = httpx.put(f"{base}/dav/users/carol/big.bin", content=b"\0" * (3 * 1024 * 1024), auth=("carol", tokens["carol"]))
        assert big.status_code == 413 and not (root / "users/carol/big.bin").exists()
    with app.app_context():  # a share's members see it as the pages do
        assert db.session.query(Membership).filter_by(account_id=ids["lab"]).count() == 2


def test_restricted_users_are_told_why(portal):
    app, base, ids, tokens, root = portal
    from portal.models import User
    from portal.services import restrictions
    from portal.services.context import Actor
    admin = Factory(app).user("root", role="admin")
    with app.app_context():
        restrictions.restrict(Actor(db.session.get(User, admin)), ids["carol"], "storage", None, "quota review")
        restrictions.restrict(Actor(db.session.get(User, admin)), ids["alice"], "portal", None, "account shared")
    for user, reason in (("carol", "quota review"), ("alice", "account shared")):
        got = httpx.request("PROPFIND", f"{base}/dav/users/{user}", auth=(user, tokens[user]), headers={"Depth": "1"})
        assert got.status_code == 403 and reason in got.text, (user, got.status_code)
    with dav(base, "bob", tokens["bob"]) as c:  # nobody else is touched
        c.ls("users/bob")


LOCKINFO = ('<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
            '<D:locktype><D:write/></D:locktype><D:owner><D:href>finder</D:href></D:owner></D:lockinfo>')


def test_locks_hold_across_workers(portal):
    """What Finder and Windows do before writing: LOCK, PUT with the token, UNLOCK. The lock is in
    the database, so a second portal process on the same database (another worker) honours it."""
    from base64 import b64encode

    from conftest import base_config
    from portal import create_app
    app, base, ids, tokens, root = portal
    auth = ("alice", tokens["alice"])
    (root / "users/alice").mkdir(parents=True, exist_ok=True)
    url = f"{base}/dav/users/alice/notes.txt"
    assert httpx.put(url, content=b"v1", auth=auth).status_code in (201, 204)
    locked = httpx.request("LOCK", url, content=LOCKINFO, auth=auth, headers={"Timeout": "Second-600", "Depth": "0"})
    assert locked.status_code == 200, locked.text
    token = locked.headers["Lock-Token"].strip("<>")
    assert httpx.put(url, content=b"other", auth=auth).status_code == 423  # no token: locked
    other = create_app(base_config(app.config["SQLALCHEMY_DATABASE_URI"], STORAGE_ROOT=str(root)))
    basic = {"Authorization": "Basic " + b64encode(f"alice:{tokens['alice']}".encode()).decode()}
    assert other.test_client().put("/dav/users/alice/notes.txt", data=b"elsewhere", headers=basic).status_code == 423
    assert httpx.put(url, content=b"v2", auth=auth, headers={"If": f"(<{token}>)"}).status_code in (200, 204)
    assert (root / "users/alice/notes.txt").read_bytes() == b"v2"
    assert httpx.request("UNLOCK", url, auth=auth, headers={"Lock-Token": f"<{token}>"}).status_code == 204
    assert other.test_client().put("/dav/users/alice/notes.txt", data=b"v3", headers=basic).status_code in (200, 204)
    assert (root / "users/alice/notes.txt").read_bytes() == b"v3"
