"""/files over a real folder: areas and permissions for every kind of person, uploads that stream
and link into place, downloads as attachments with ranges, hostile paths in every spelling,
links planted inside the areas, odd names, huge and empty uploads, concurrent writes to one file."""
import io
import os
import threading

import pytest

from conftest import lab_people
from portal.extensions import db
from portal.models import AuditEntry, Membership


@pytest.fixture
def app_config(tmp_path):
    return {"STORAGE_ROOT": str(tmp_path / "storage"), "UPLOAD_MAX_BYTES": 4 * 1024 * 1024}


@pytest.fixture
def world(app, make, tmp_path):
    ids = lab_people(make, 4)
    ids["erin"] = make.user("erin")
    with app.app_context():
        db.session.add(Membership(account_id=ids["lab"], user_id=ids["erin"], role="member", files_write=True))
        db.session.commit()
    ids["root_dir"] = tmp_path / "storage"
    return ids


def upload(client, folder, files, replace=False, csrf=True):
    data = {"op": "upload", "files": [(io.BytesIO(body), name) for name, body in files]}
    if replace:
        data["replace"] = "1"
    return client.post(f"/files/{folder}", data, csrf=csrf, content_type="multipart/form-data")


def disk(world, path):
    return world["root_dir"] / path


def test_areas_upload_list_download_with_ranges(app, world, new_client):
    alice = new_client().login(world["alice"])
    top = alice.get("/files").get_data(as_text=True)
    for area in ("users/alice", "accounts/vision-lab", "accounts/default", "public"):
        assert f'href="/files/{area}"' in top, area
    assert "users/bob" not in top and "nlp-lab" not in top
    body = os.urandom(300_000)
    response = upload(alice, "users/alice", [("weights.bin", body), ("train.py", b"print('hi')\n")])
    assert response.status_code == 303, response.get_data(as_text=True)[:300]
    assert disk(world, "users/alice/weights.bin").read_bytes() == body
    listing = alice.get("/files/users/alice").get_data(as_text=True)
    assert "weights.bin" in listing and "293 KiB" in listing and "train.py" in listing
    got = alice.get("/files/users/alice/weights.bin")
    assert got.status_code == 200 and got.data == body
    assert got.headers["Content-Disposition"].startswith("attachment") and "weights.bin" in got.headers["Content-Disposition"]
    assert got.headers["X-Content-Type-Options"] == "nosniff" and got.mimetype == "application/octet-stream"
    part = alice.get("/files/users/alice/weights.bin", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.data == body[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(body)}"
    again = alice.get("/files/users/alice/weights.bin", headers={"If-None-Match": got.headers["ETag"]})
    assert again.status_code == 304
    # an HTML file is still an attachment, never rendered on the portal's origin
    upload(alice, "users/alice", [("page.html", b"<script>alert(1)</script>")])
    html = alice.get("/files/users/alice/page.html")
    assert html.mimetype == "application/octet-stream" and html.headers["Content-Disposition"].startswith("attachment")
    # a Chinese name downloads under its own name (RFC 5987)
    upload(alice, "users/alice", [("结果.csv", b"a,b\n")])
    zh = alice.get("/files/users/alice/结果.csv")
    assert zh.status_code == 200 and "filename*=UTF-8''%E7%BB%93%E6%9E%9C.csv" in zh.headers["Content-Disposition"]
    # nothing is left in the spool
    assert os.listdir(disk(world, ".crater-uploads")) == []


def test_folders_move_rename_and_delete_with_a_confirmation(app, world, new_client):
    carol = new_client().login(world["carol"])  # the account's manager
    assert carol.post("/files/accounts/vision-lab", {"op": "mkdir", "name": "data"}).status_code == 303
    assert carol.post("/files/accounts/vision-lab", {"op": "mkdir", "name": "data"}).status_code == 409
    upload(carol, "accounts/vision-lab/data", [("a.txt", b"a")])
    upload(carol, "users/carol", [("b.txt", b"b")])
    # rename in place, then move from the home into the share
    assert carol.post("/files/users/carol/b.txt", {"op": "move", "name": "c.txt", "folder": "users/carol"}).status_code == 303
    assert disk(world, "users/carol/c.txt").read_bytes() == b"b"
    assert carol.post("/files/users/carol/c.txt", {"op": "move", "name": "c.txt", "folder": "accounts/vision-lab/data"}).status_code == 303
    assert disk(world, "accounts/vision-lab/data/c.txt").exists() and not disk(world, "users/carol/c.txt").exists()
    # never over something, never into itself, never an area itself
    upload(carol, "accounts/vision-lab/data", [("d.txt", b"d")])
    assert carol.post("/files/accounts/vision-lab/data/d.txt", {"op": "move", "name": "a.txt"}).status_code == 409
    assert carol.post("/files/accounts/vision-lab/data", {"op": "move", "name": "x", "folder": "accounts/vision-lab/data"}).status_code == 422
    assert carol.post("/files/users/carol", {"op": "move", "name": "x"}).status_code == 409
    assert carol.post("/files/accounts/vision-lab/data/a.txt", {"op": "move", "name": "../a.txt"}).status_code == 422
    # delete asks first, without JavaScript, then removes the folder with what is in it
    ask = carol.get("/files/accounts/vision-lab/data?do=delete")
    assert ask.status_code == 200 and 'name="op" value="delete"' in ask.get_data(as_text=True)
    assert carol.post("/files/accounts/vision-lab/data", {"op": "delete"}).status_code == 303
    assert not disk(world, "accounts/vision-lab/data").exists()
    assert carol.post("/files/accounts/vision-lab", {"op": "delete"}).status_code == 409  # an area stays
    assert carol.post("/files/users/carol", {"op": "frobnicate"}).status_code == 400
    assert carol.post("/files/users/carol", {"op": "mkdir", "name": "x"}, csrf=False).status_code == 400  # CSRF


# (who, what, where) -> status. alice: a member of vision-lab (read-only there); erin: a member
# granted write; carol: its manager; dave: another account's manager; root: an admin
OPS = ("list", "download", "upload", "mkdir", "move", "delete")
EXPECT = {
    "users/alice": {"alice": "rw", "erin": "-", "carol": "-", "dave": "-", "root": "rw", "anon": "login"},
    "accounts/vision-lab": {"alice": "r", "erin": "rw", "carol": "rw", "dave": "-", "root": "rw", "anon": "login"},
    "public": {"alice": "r", "erin": "r", "carol": "r", "dave": "r", "root": "rw", "anon": "login"},
}


def _do(client, op, area, n):
    if op == "list":
        return client.get(f"/files/{area}")
    if op == "download":
        return client.get(f"/files/{area}/seed.txt")
    if op == "upload":
        return upload(client, area, [(f"up-{n}.txt", b"x")])
    if op == "mkdir":
        return client.post(f"/files/{area}", {"op": "mkdir", "name": f"dir-{n}"})
    if op == "move":
        return client.post(f"/files/{area}/seed.txt", {"op": "move", "name": f"seed-{n}.txt"})
    return client.post(f"/files/{area}/victim-{n}.txt", {"op": "delete"})


@pytest.mark.parametrize("area", sorted(EXPECT))
def test_every_permission_pair_on_every_operation(app, world, new_client, area):
    people = ("alice", "erin", "carol", "dave", "root", "anon")
    for n, who in enumerate(people):
        for op in OPS:
            base = disk(world, area)
            base.mkdir(parents=True, exist_ok=True)
            (base / "seed.txt").write_bytes(b"seed")
            (base / f"victim-{n}.txt").write_bytes(b"v")
            client = new_client()
            if who != "anon":
                client.login(world[who])
            status = _do(client, op, area, n).status_code
            right = EXPECT[area][who]
            if right == "login":
                wanted = {302}
            elif right == "-":
                wanted = {404}
            elif op in ("list", "download"):
                wanted = {200}
            else:
                wanted = {303} if right == "rw" else {403}
            assert status in wanted, (area, who, op, status)
            if op == "move" and status == 303:
                os.replace(base / f"seed-{n}.txt", base / "seed.txt")


def test_admin_writes_outside_their_home_are_audited(app, world, new_client):
    root = new_client().login(world["root"])
    assert root.post("/files/users/root", {"op": "mkdir", "name": "mine"}).status_code == 303
    assert root.post("/files/users/alice", {"op": "mkdir", "name": "fix"}).status_code == 303
    assert upload(root, "public", [("README.txt", b"rules")]).status_code == 303
    top = root.get("/files").get_data(as_text=True)
    assert 'href="/files/users"' in top and 'href="/files/public"' in top and ".crater-uploads" not in top
    with app.app_context():
        rows = db.session.query(AuditEntry).filter(AuditEntry.action.like("file.%")).all()
        paths = sorted(r.detail["path"] for r in rows)
    assert paths == ["public/README.txt", "users/alice/fix"]


HOSTILE = [
    "users/alice/../bob", "users/alice/./x", "users/alice//x", "users/alice/%2e%2e/bob", "users/alice/%252e%252e",
    "users/alice/..%2fbob", "users/alice/a%5cb", "users/alice/x%00y", "users/alice/a\\b", "users/bob",
    "users/alice/%252f", "../etc/passwd", "users/../../etc", ".crater-uploads", "users/alice/%c0%ae%c0%ae",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_paths_are_refused_in_every_spelling(app, world, new_client, path):
    disk(world, "users/bob").mkdir(parents=True, exist_ok=True)
    (disk(world, "users/bob") / "secret.txt").write_bytes(b"bob's")
    alice = new_client().login(world["alice"])
    for response in (alice.get(f"/files/{path}"), alice.get(f"/files/{path}/secret.txt"),
                     alice.post(f"/files/{path}", {"op": "mkdir", "name": "pwn"}),
                     upload(alice, path, [("pwn.txt", b"x")])):
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert b"bob's" not in response.data
    assert sorted(os.listdir(disk(world, "users/bob"))) == ["secret.txt"]


def test_links_planted_in_an_area_are_never_followed(app, world, new_client, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_bytes(b"root:x:0:0")
    home = disk(world, "users/alice")
    home.mkdir(parents=True)
    os.symlink(outside, home / "escape")
    os.symlink(outside / "passwd", home / "passwd")
    alice = new_client().login(world["alice"])
    listing = alice.get("/files/users/alice").get_data(as_text=True)
    assert "escape" in listing and "link" in listing
    for url in ("/files/users/alice/escape", "/files/users/alice/escape/passwd", "/files/users/alice/passwd"):
        response = alice.get(url)
        assert response.status_code == 400 and b"root:x" not in response.data, url
    assert upload(alice, "users/alice/escape", [("x.txt", b"x")]).status_code == 400
    assert alice.post("/files/users/alice/escape", {"op": "mkdir", "name": "x"}).status_code == 400
    assert not (outside / "x.txt").exists() and not (outside / "x").exists()
    # deleting a link removes the link, never what it points to
    assert alice.post("/files/users/alice/escape", {"op": "delete"}).status_code == 303
    assert (outside / "passwd").exists() and not os.path.lexists(home / "escape")


@pytest.mark.parametrize("name, ok", [("a/b", False), ("..", False), (".", False), ("tab\there", False), (" lead", False),
                                      ("x" * 256, False), ("ü" * 128, False), ("模型 v2 (final).pt", True), ("é" * 127, True),
                                      ("-rf", True), ("$(reboot)", True), ("<script>", True)])
def test_names_are_checked(app, world, new_client, name, ok):
    alice = new_client().login(world["alice"])
    response = alice.post("/files/users/alice", {"op": "mkdir", "name": name})
    assert response.status_code == (303 if ok else 422), response.status_code
    if ok:
        assert disk(world, f"users/alice/{name}").is_dir()
        assert "&lt;script&gt;" in alice.get("/files/users/alice").get_data(as_text=True) or name != "<script>"


def test_odd_names_on_disk_are_listed_not_broken(app, world, new_client):
    home = disk(world, "users/alice")
    home.mkdir(parents=True)
    with open(os.path.join(os.fsencode(home), b"latin1-\xe9t\xe9.txt"), "wb") as f:
        f.write(b"x")
    (home / "normal.txt").write_bytes(b"y")
    alice = new_client().login(world["alice"])
    listing = alice.get("/files/users/alice")
    text = listing.get_data(as_text=True)
    assert listing.status_code == 200 and "latin1-\ufffdt\ufffd.txt" in text and "normal.txt" in text


def test_upload_paths_in_file_names_huge_and_empty_uploads(app, world, new_client):
    alice = new_client().login(world["alice"])
    assert upload(alice, "users/alice", [("../../../etc/evil.txt", b"x")]).status_code == 303
    assert disk(world, "users/alice/evil.txt").read_bytes() == b"x" and not (world["root_dir"] / "etc").exists()
    assert upload(alice, "users/alice", [("empty.txt", b"")]).status_code == 303  # an empty file is a file
    assert disk(world, "users/alice/empty.txt").read_bytes() == b""
    nothing = alice.post("/files/users/alice", {"op": "upload", "files": (io.BytesIO(b""), "")},
                         content_type="multipart/form-data")
    assert nothing.status_code == 422 and "Choose at least one file" in nothing.get_data(as_text=True)
    huge = upload(alice, "users/alice", [("huge.bin", b"\0" * (5 * 1024 * 1024))])
    assert huge.status_code == 413 and not disk(world, "users/alice/huge.bin").exists()
    # the same name again: refused unless replace is asked for
    assert upload(alice, "users/alice", [("empty.txt", b"new")]).status_code == 409
    assert upload(alice, "users/alice", [("empty.txt", b"new")], replace=True).status_code == 303
    assert disk(world, "users/alice/empty.txt").read_bytes() == b"new"
    # outside /files, and without a session, the portal's small limit holds
    anon = new_client()
    assert anon.post("/files/users/alice", {"op": "upload", "files": (io.BytesIO(b"\0" * (2 * 1024 * 1024)), "x")},
                     csrf=False, content_type="multipart/form-data").status_code == 413
    assert os.listdir(disk(world, ".crater-uploads")) == []


def test_concurrent_writes_to_one_file_leave_one_whole_file(app, world, new_client):
    disk(world, "users/alice").mkdir(parents=True)
    bodies = [bytes([65 + i]) * 1_000_000 for i in range(6)]
    statuses = []

    def send(body, replace):
        statuses.append(upload(new_client().login(world["alice"]), "users/alice", [("same.bin", body)], replace).status_code)

    threads = [threading.Thread(target=send, args=(b, True)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [303] * len(bodies)
    assert disk(world, "users/alice/same.bin").read_bytes() in bodies  # one whole upload, never a mix
    statuses.clear()
    threads = [threading.Thread(target=send, args=(b, False)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [409] * len(bodies)  # it exists: nobody overwrites it by accident
    assert sorted(os.listdir(disk(world, "users/alice"))) == ["same.bin"]  # no hidden parts left


def test_no_storage_configured_says_so(app, new_client, make):
    app.config["STORAGE_ROOT"] = ""
    client = new_client().login(make.user("zoe"))
    response = client.get("/files")
    assert response.status_code == 404 and "No shared storage is configured" in response.get_data(as_text=True)


def test_a_manager_grants_a_member_write_to_the_share(app, world, new_client):
    alice, carol = new_client().login(world["alice"]), new_client().login(world["carol"])
    assert upload(alice, "accounts/vision-lab", [("a.txt", b"a")]).status_code == 403
    assert "May write to the account" in carol.get(f"/admin/accounts/{world['lab']}").get_data(as_text=True)
    granted = carol.post(f"/admin/accounts/{world['lab']}/members/{world['alice']}", {"role": "member", "files_write": "y"})
    assert granted.status_code == 303
    assert upload(alice, "accounts/vision-lab", [("a.txt", b"a")]).status_code == 303
    mine = new_client().login(world["alice"]).get("/api/v1/me").get_json()["memberships"]
    assert {m["account"]: m["files_write"] for m in mine} == {"default": False, "vision-lab": True}
    carol.post(f"/admin/accounts/{world['lab']}/members/{world['alice']}", {"role": "member"})  # taken back
    assert upload(alice, "accounts/vision-lab", [("b.txt", b"b")]).status_code == 403


def test_parts_a_killed_worker_left_are_swept_a_day_later(app, world, new_client):
    from portal.services import storage
    spool = disk(world, ".crater-uploads")
    spool.mkdir(parents=True, exist_ok=True)
    old, fresh = spool / "part-old", spool / "part-fresh"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (0, 0))
    storage._swept["at"] = 0.0
    assert upload(new_client().login(world["alice"]), "users/alice", [("a.txt", b"a")]).status_code == 303
    assert not old.exists() and fresh.exists()
