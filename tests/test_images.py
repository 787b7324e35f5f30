"""Users' own images: registering (private, an account's, public once an admin approves), what the
pickers offer to whom, the submission's image rule honouring them, and the reachability check
against a real registry (Debian's docker-registry) on loopback: found, missing, and "cannot tell"
when nothing answers or the registry hangs."""
import hashlib
import json
import shutil
import socket
import subprocess
import time

import pytest
import requests

from conftest import lab_people, skip_or_fail
from process_stack import free_port
from portal.extensions import db
from portal.models import Image, User
from portal.services import images, job_rules, jobs
from portal.services.context import Actor
from portal.services.errors import ValidationFailed

REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real registry on loopback holding lab/pytorch:2.4 (pushed through its HTTP API)."""
    if not shutil.which("docker-registry"):
        skip_or_fail("CRATER_REQUIRE_REGISTRY", "docker-registry not found (apt-get install docker-registry)")
    folder = tmp_path_factory.mktemp("registry")
    port = free_port()
    (folder / "config.yml").write_text(
        f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {folder / 'data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n")
    proc = subprocess.Popen([REGISTRY, "serve", str(folder / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(base + "/v2/", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)

        def blob(data: bytes) -> str:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            start = requests.post(f"{base}/v2/lab/pytorch/blobs/uploads/", timeout=5)
            location = start.headers["Location"]
            location = location if location.startswith("http") else base + location
            sep = "&" if "?" in location else "?"
            assert requests.put(f"{location}{sep}digest={digest}", data=data, timeout=5,
                                headers={"Content-Type": "application/octet-stream"}).status_code == 201
            return digest
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        layer = b"\x1f\x8b\x08\x00" + b"\x00" * 20
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                               "digest": blob(config)},
                    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer),
                                "digest": blob(layer)}]}
        pushed = requests.put(f"{base}/v2/lab/pytorch/manifests/2.4", data=json.dumps(manifest), timeout=5,
                              headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
        assert pushed.status_code == 201, pushed.text
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_registry_says_found_missing_or_cannot_tell(registry):
    assert images.check_reachable(f"{registry}/lab/pytorch:2.4", 5)[0] == images.FOUND
    assert images.check_reachable(f"{registry}/lab/pytorch:9.9", 5)[0] == images.MISSING
    assert images.check_reachable(f"{registry}/lab/nothing:1", 5)[0] == images.MISSING
    assert images.check_reachable(f"127.0.0.1:{free_port()}/lab/pytorch:2.4", 5)[0] == images.UNKNOWN  # nothing listens
    with socket.socket() as hung:  # accepts connections, never answers: the timeout says "cannot tell"
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        started = time.monotonic()
        state, message = images.check_reachable(f"127.0.0.1:{hung.getsockname()[1]}/lab/pytorch:2.4", 1.0)
        assert state == images.UNKNOWN and "did not answer" in message and time.monotonic() - started < 5
    assert images.parse("pytorch/pytorch:2.4") == ("registry-1.docker.io", "pytorch/pytorch", "2.4")
    assert images.parse("ubuntu") == ("registry-1.docker.io", "library/ubuntu", "latest")
    assert images.parse("ghcr.io/a/b@sha256:ab") == ("ghcr.io", "a/b", "sha256:ab")


def test_own_images_private_shared_public_and_the_pickers(app, make, new_client, registry):
    ids = lab_people(make, 4)
    alice, bob, dave, root = (new_client().login(ids[n]) for n in ("alice", "bob", "dave", "root"))
    ref = f"{registry}/lab/pytorch:2.4"
    made = alice.post("/images", {"reference": ref, "description": "our CUDA 12 build", "job_types": ["batch", "jupyter"],
                                  "visibility": "account", "account": "vision-lab", "check": "1"})
    assert made.status_code == 303
    page = alice.get("/images").get_data(as_text=True)
    assert ref in page and "found" in page
    assert alice.post("/images", {"reference": ref, "job_types": ["batch"], "visibility": "private"}).status_code == 422  # twice
    assert alice.post("/images", {"reference": "UPPER/Case", "job_types": [], "visibility": "account",
                                  "account": "nlp-lab"}).get_data(as_text=True).count('class="error"') == 3  # every error at once
    # the account's members get it in their batch form; others do not; no one in a distributed form
    assert ref in bob.get("/jobs/new/batch").get_data(as_text=True)
    assert ref not in dave.get("/jobs/new/batch").get_data(as_text=True)
    assert ref not in bob.get("/jobs/new/distributed").get_data(as_text=True)
    # public needs an admin: until then it is the owner's only
    private_ref = f"{registry}/lab/private:1"
    assert dave.post("/images", {"reference": private_ref, "job_types": ["batch"], "visibility": "public", "check": "1"}).status_code == 303
    assert private_ref not in bob.get("/jobs/new/batch").get_data(as_text=True)
    assert "missing" in dave.get("/images").get_data(as_text=True)
    with app.app_context():
        image_id = db.session.query(Image).filter_by(reference=private_ref).one().id
    assert bob.post(f"/images/{image_id}/approve", {"decision": "approve"}).status_code == 403
    assert private_ref in root.get("/images").get_data(as_text=True)  # waiting for approval
    assert root.post(f"/images/{image_id}/approve", {"decision": "approve"}).status_code == 303
    assert private_ref in bob.get("/jobs/new/batch").get_data(as_text=True)
    assert bob.post(f"/images/{image_id}/delete", {}).status_code == 404  # not his
    # the submission rule: with free text off, one's own and shared images count as offered
    app.config["CUSTOM_IMAGES"] = False
    with app.app_context():
        policy = job_rules.SubmissionPolicy.from_config(app.config)
        for who, ok in (("bob", True), ("dave", False)):
            actor = Actor(db.session.get(User, ids[who]))
            form = jobs.Submission(job_type="batch", account_id=ids["lab"], display_name="x", image=ref, command="true",
                                   time_limit_seconds=3600)
            try:
                job_rules.check(form, policy, {i.reference for i in images.offered(actor, "batch")})
                assert ok, who
            except ValidationFailed as exc:
                assert not ok and "image" in exc.errors, (who, exc.errors)
        assert ref not in {i.reference for i in job_rules.images_for("batch")}  # the admins' list is theirs alone
    assert alice.post(f"/images/{image_id}/check", {}).status_code == 404
    with app.app_context():
        mine = db.session.query(Image).filter_by(reference=ref).one().id
    assert alice.post(f"/images/{mine}/delete", {}).status_code == 303
    assert ref not in bob.get("/jobs/new/batch").get_data(as_text=True)
