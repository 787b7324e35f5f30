"""The submission form says what one can get: the free GPUs of each model, the chosen account's
headroom, and whether the job would start now, wait in the queue (at its place), wait for the
cluster, borrow or never start, by the rules a submission is admitted by; updated as the account,
model or count change (the htmx fragment), rendered with the form without JavaScript, in both
languages. The lab's account is chosen first, not the Default account."""
import re

import pytest

from conftest import lab_people

A100 = "NVIDIA-A100-SXM4-80GB"
RTX = "NVIDIA-GeForce-RTX-4090"


@pytest.fixture
def people(make):
    ids = lab_people(make, gpu_quota=8)
    make.node("a100-0", gpus=8, model=A100, gpus_requested=2)
    make.node("a100-1", gpus=8, model=A100, gpus_requested=8)
    make.node("rtx-0", gpus=4, model=RTX)
    return ids


def outlook(client, **args):
    query = {"gpu_model": A100, "gpus": "1", "cpu": "2", "memory_gib": "8", "time_limit_hours": "2", "when_full": "queue"}
    query.update(args)
    response = client.get("/jobs/new/batch/outlook", query_string=query, headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def verdict(html):
    m = re.search(r'data-verdict="(\w+)"', html)
    return m.group(1) if m else None


def test_the_form_chooses_the_labs_account_and_says_it_would_start_now(client, people):
    client.login(people["alice"])
    page = client.get("/jobs/new/batch").get_data(as_text=True)
    selected = re.search(r'<option selected value="(\d+)">|<option value="(\d+)" selected>', page)
    assert selected and people["lab"] in {int(g) for g in selected.groups() if g}
    # a fresh form loads the outlook by itself (htmx), with the form's own values
    assert 'id="job-outlook"' in page and 'hx-get="/jobs/new/batch/outlook"' in page and 'hx-trigger="load, ' in page
    page = outlook(client, account_id=str(people["lab"]))
    free = re.search(r'id="outlook-free">.*?</p>', page, re.S).group(0)
    assert re.search(rf'{A100}: 6 GPUs \(at most 6 on one node\)', free) and f"{RTX}: 4 GPUs" in free
    assert "0 of 8 guaranteed GPUs in use" in page and verdict(page) == "start"
    # the CSRF token never travels in the fragment's URL: only the fields it needs are included
    hx_include = re.search(r'hx-include="([^"]+)"', page).group(1)
    assert "csrf" not in hx_include and "account_id" in hx_include


def test_a_form_sent_back_has_its_outlook_at_once_without_javascript(client, people):
    client.login(people["alice"])
    response = client.post("/jobs/new/batch", {"account_id": str(people["lab"]), "display_name": "", "image": "",
                                               "command_mode": "shell", "gpu_model": A100, "gpus": "1", "cpu": "2",
                                               "memory_gib": "8", "time_limit_hours": "2", "when_full": "queue"})
    assert response.status_code == 422
    assert verdict(response.get_data(as_text=True)) == "start"


def test_the_fragment_follows_account_model_and_count(client, make, people):
    for _n in range(3):  # bob holds 6 of the lab's 8 GPUs (on a100-1, as the syncer records them)
        make.placement("a100-1", make.job(people["bob"], people["lab"], state="Running", gpus=2, gpu_model=A100), gpus=2)
    client.login(people["alice"])
    lab = str(people["lab"])
    assert verdict(outlook(client, account_id=lab, gpus="2")) == "start"
    html = outlook(client, account_id=lab, gpus="4")
    assert verdict(html) == "queue" and "place 1" in html and "6 of 8 guaranteed GPUs in use" in html
    assert verdict(outlook(client, account_id=lab, gpus="4", when_full="refuse")) == "refuse"
    never = outlook(client, account_id=lab, gpus="9")
    assert verdict(never) == "never" and "can never start" in never
    # beyond the quota on idle GPUs, when the owner lets it borrow
    assert verdict(outlook(client, account_id=lab, gpus="4", when_full="borrow")) == "borrow"
    # the model decides where it fits: 4 RTX GPUs are free on one node, 6 A100 on one node
    assert verdict(outlook(client, account_id=lab, gpus="2", gpu_model=RTX)) == "start"


def test_an_in_quota_job_that_the_cluster_cannot_hold_now_waits_for_the_cluster(client, people):
    client.login(people["alice"])
    html = outlook(client, account_id=str(people["lab"]), gpus="8")  # in quota, but only 6 A100 free on a node
    assert verdict(html) == "cluster" and "free GPUs in the cluster" in html


def test_nothing_is_said_of_an_account_one_is_not_in_or_of_nonsense(client, people):
    client.login(people["alice"])
    for args in ({"account_id": str(people["other"])}, {"account_id": "999999"}, {"account_id": "x"},
                 {"account_id": str(people["lab"]), "gpus": "-3"}, {"account_id": str(people["lab"]), "gpus": "1e9"},
                 {"account_id": "9" * 40}, {"account_id": str(people["lab"]), "workers": "0"}):
        html = outlook(client, **args)
        assert verdict(html) is None and "nlp-lab" not in html and "Choose an account" in html
    assert client.get("/jobs/new/nosuch/outlook").status_code == 404


def test_the_outlook_in_chinese(client, people):
    client.login(people["alice"])
    client.post("/settings/language", {"lang": "zh", "next": "/"})
    html = outlook(client, account_id=str(people["lab"]))
    assert "现在可以获得" in html and "会立即开始" in html
