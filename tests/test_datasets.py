"""Datasets and models: registering a folder one can read, who may use one (owner, shared users and
accounts, public), its page (size, shares, jobs), the job form and the API naming them, and a job
with two of them: kubectl shows read-only sub-path mounts of the shared claim in every pod."""
import json
import os

import pytest

from conftest import lab_people
from kubesim_fixtures import kubectl, require_tool, wait_for
from portal.extensions import db
from portal.models import AuditEntry, Dataset, JobDataset, User
from portal.services import datasets, jobs
from portal.services.context import Actor

A100 = "NVIDIA-A100-SXM4-80GB"


@pytest.fixture
def app_config(tmp_path, fresh_sim):
    sim = fresh_sim(time_scale=5, tick=0.05, tls=True)[0]  # kubectl sends a token over TLS only
    return {"STORAGE_ROOT": str(tmp_path / "storage"), "KUBECONFIG": str(sim.write_kubeconfig(tmp_path / "kc")),
            "SHARED_PVC": "crater-shared"}


@pytest.fixture
def world(app, make, tmp_path):
    ids = lab_people(make, 8)
    root = tmp_path / "storage"
    for folder in ("users/alice/imagenet/train", "users/alice/llama", "users/bob/private", "accounts/vision-lab/coco"):
        (root / folder).mkdir(parents=True)
    (root / "users/alice/imagenet/train/a.jpg").write_bytes(b"x" * 1000)
    (root / "users/alice/imagenet/train/b.jpg").write_bytes(b"y" * 3000)
    ids["root_dir"] = root
    return ids


def register(client, **fields):
    data = {"name": "imagenet", "kind": "dataset", "path": "users/alice/imagenet", "description": "ILSVRC-2012",
            "tags": "vision, classification", "visibility": "private", **fields}
    return client.post("/datasets", data)


def test_register_share_and_see_who_may_use_it(app, world, new_client):
    alice, bob, dave = (new_client().login(world[n]) for n in ("alice", "bob", "dave"))
    # what registration refuses, all at once where it can
    refused = register(alice, name="Bad Name!", path="users/bob/private")
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422 and "lower-case letters" in text and "No such file or folder" in text
    assert register(alice, visibility="public").status_code == 422  # public is for admins
    assert register(alice, path="users/alice/imagenet/train/a.jpg").status_code == 422  # a folder, not a file
    created = register(alice)
    assert created.status_code == 303
    dataset_id = int(created.headers["Location"].rsplit("/", 1)[1])
    assert register(alice).status_code == 422  # the name is taken
    # private: nobody else sees it
    assert bob.get(f"/datasets/{dataset_id}").status_code == 404 and 'id="dataset-1"' not in bob.get("/datasets").get_data(as_text=True)
    # shared with the account: its members see it and may use it, the others do not
    assert alice.post(f"/datasets/{dataset_id}/shares", {"account": "vision-lab"}).status_code == 303
    assert alice.post(f"/datasets/{dataset_id}/shares", {"account": "vision-lab"}).status_code == 409
    assert alice.post(f"/datasets/{dataset_id}/shares", {"user": "nobody"}).status_code == 422
    page = bob.get(f"/datasets/{dataset_id}").get_data(as_text=True)
    assert "/datasets/imagenet" in page and "vision-lab" in page and 'id="share-form"' not in page  # not bob's to share
    assert bob.post(f"/datasets/{dataset_id}/shares", {"user": "dave"}).status_code == 403
    assert dave.get(f"/datasets/{dataset_id}").status_code == 404
    with app.app_context():
        assert [d.name for d in datasets.usable(Actor(db.session.get(User, world["bob"])))] == ["imagenet"]
        assert datasets.usable(Actor(db.session.get(User, world["dave"]))) == []
    # its size, counted without following links
    os.symlink("/etc", world["root_dir"] / "users/alice/imagenet/etc")
    assert alice.post(f"/datasets/{dataset_id}/measure", {}).status_code == 303
    assert "3.9 KiB in 2 files" in alice.get(f"/datasets/{dataset_id}").get_data(as_text=True)
    # the job form offers it to a member; the API refuses a name one may not use, as an unknown account
    assert "/datasets/imagenet" in bob.get("/jobs/new/batch").get_data(as_text=True)
    token = __import__("conftest").Factory(app).api_token(world["dave"])[1]
    api = new_client().http.post("/api/v1/jobs", json={"display_name": "x", "image": "pytorch:2", "command": "true",
                                                       "datasets": ["imagenet"], "account": "nlp-lab"},
                                 headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 404 and "imagenet" in json.dumps(api.get_json())
    # unshared, then unregistered (the folder stays)
    with app.app_context():
        share_id = db.session.query(Dataset).one().shares[0].id
    assert alice.post(f"/datasets/{dataset_id}/shares/{share_id}/remove", {}).status_code == 303
    assert bob.get(f"/datasets/{dataset_id}").status_code == 404
    assert alice.get(f"/datasets/{dataset_id}/delete").status_code == 200
    assert alice.post(f"/datasets/{dataset_id}/delete", {}).status_code == 303
    assert (world["root_dir"] / "users/alice/imagenet/train/a.jpg").exists()
    with app.app_context():
        actions = [a.action for a in db.session.query(AuditEntry).filter(AuditEntry.action.like("dataset.%"))]
    assert actions == ["dataset.create", "dataset.share", "dataset.unshare", "dataset.delete"]


def test_a_job_with_two_datasets_mounts_them_read_only_in_every_pod(app, world, new_client):
    env = {**os.environ, "KUBECONFIG": app.config["KUBECONFIG"]}
    require_tool("kubectl", "CRATER_REQUIRE_KUBECTL")
    from portal.cluster.setup import cluster_for
    alice = new_client().login(world["alice"])
    assert register(alice).status_code == 303
    assert register(alice, name="llama-7b", kind="model", path="users/alice/llama", visibility="private").status_code == 303
    with app.app_context():
        actor = Actor(db.session.get(User, world["alice"]))
        form = jobs.Submission(job_type="distributed", account_id=world["lab"], display_name="two datasets",
                               image="pytorch:2", command="torchrun train.py", gpus=1, gpu_model=A100, workers=2,
                               datasets=("imagenet", "llama-7b"))
        job = jobs.submit_job(actor, form, cluster_for(app), jobs.SubmitSettings.from_config(app.config))
        job_id = job.id
        assert job.spec["datasets"] == ["imagenet", "llama-7b"]
        assert db.session.query(JobDataset).filter_by(job_id=job_id).count() == 2

    def pods():
        out = kubectl(env, "get", "pods", "-n", "crater-jobs", "-l", f"crater.io/job-id={job_id}", "-o", "json").stdout
        return json.loads(out)["items"]
    wait_for(lambda: len(pods()) == 2, timeout=30, what="the two workers' pods")
    for pod in pods():
        claim = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v}
        mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
        for path, sub in (("/datasets/imagenet", "users/alice/imagenet"), ("/models/llama-7b", "users/alice/llama")):
            assert mounts[path]["readOnly"] is True and mounts[path]["subPath"] == sub
            assert claim[mounts[path]["name"]] == "crater-shared"
    page = alice.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "imagenet" in page  # the job's spec shows what it mounted
    with app.app_context():
        dataset_id = db.session.query(Dataset).filter_by(name="imagenet").one().id
    assert "two datasets" in alice.get(f"/datasets/{dataset_id}").get_data(as_text=True)
