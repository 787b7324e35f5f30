"""Borrowing and reclaim as an operator runs them: kubesim, `crater sync` and the portal under
gunicorn as separate processes, jobs submitted through the real form. A job beyond nlp-lab's
guarantee runs on idle A100s; vision-lab's job within its guarantee takes them back; the borrowed
job's owner gets the mail; the preempted job runs again, resumed, once the GPUs are free."""
from __future__ import annotations

import re

import pytest
import requests

from kubesim_fixtures import wait_for
from portal.extensions import db
from portal.models import Job, Node
from portal.services import policies
from portal.services.context import SYSTEM
from process_stack import Stack, submit_form

PASSWORD = "correct horse battery staple"
A100 = "NVIDIA-A100-SXM4-80GB"


@pytest.fixture
def stack(app, make, tmp_path, schema):
    alice = make.user("alice", password=PASSWORD)
    bob = make.user("bob", password=PASSWORD)
    nlp = make.account("nlp-lab", gpu_quota=8, members={alice: "member"})
    vision = make.account("vision-lab", gpu_quota=8, members={bob: "member"})
    with app.app_context():
        policies.update(SYSTEM, "preemption", {"grace_seconds": "3", "min_run_minutes": "0", "backoff_minutes": "0"})
        db.session.remove()
    # Real time: the minimum run time compares the cluster's start times with the portal's clock.
    # A lease long enough for the admitter to act in the database while the API hangs: the syncer
    # leads until its lease lapses (two thirds of it), and a 3 s lease lapsed before a busy
    # machine's submission reached the admitter.
    s = Stack(tmp_path, schema, time_scale=1, run_seconds=5, settings={"CRATER_LEASE_SECONDS": "15"})
    try:
        s.start()
        s.nlp, s.vision = nlp, vision
        s.alice, s.bob = s.session("alice", PASSWORD), s.session("bob", PASSWORD)
        yield s
    finally:
        s.stop()


def row(app, job_id):
    with app.app_context():
        job = db.session.get(Job, job_id)
        result = (job.state, job.reason, job.borrowed, job.preemptions)
        db.session.remove()
        return result


def submitted(response) -> int:
    match = re.search(r"/jobs/(\d+)$", response.url)
    assert match, (response.status_code, response.text[:1500])
    return int(match.group(1))


def inventory(app):
    with app.app_context():
        n = db.session.query(Node).filter(Node.gpus > 0).count()
        db.session.remove()
        return n


def borrowing(app, stack):
    """nlp-lab's own 8 A100 and 8 more borrowed, both running: the cluster's 16 A100 in use."""
    wait_for(lambda: inventory(app), timeout=30, what="the node inventory")
    gpu = {"gpus": "8", "gpu_model": A100}
    own = submitted(submit_form(stack.alice, stack.url, stack.nlp, command="sleep infinity", **gpu))
    lent = submitted(submit_form(stack.alice, stack.url, stack.nlp, command="sleep infinity", when_full="borrow", **gpu))
    wait_for(lambda: row(app, own)[0] == row(app, lent)[0] == "Running", timeout=30, what="both running")
    return own, lent, gpu


def test_borrow_preempt_mail_and_resume_across_processes(app, stack):
    own, lent, gpu = borrowing(app, stack)
    assert (row(app, own)[2], row(app, lent)[2]) == (False, True)
    page = stack.alice.get(f"{stack.url}/jobs/{lent}", timeout=10).text
    assert 'id="job-class"' in page

    owner = submitted(submit_form(stack.bob, stack.url, stack.vision, **gpu))  # runs 5 s
    wait_for(lambda: row(app, lent)[:2] == ("Queued", "Preempted"), timeout=20, what="the borrowed job preempted")
    wait_for(lambda: row(app, owner)[0] in ("Running", "Succeeded"), timeout=20, what="vision-lab's job started")
    wait_for(lambda: any("was preempted" in s for s in stack.mailbox.subjects()), timeout=20, what="the owner's mail")
    page = stack.alice.get(f"{stack.url}/jobs/{lent}", timeout=10).text
    assert f"so that vision-lab&#39;s job {owner} could use its guaranteed GPUs" in page

    wait_for(lambda: row(app, owner)[0] == "Succeeded", timeout=30, what="vision-lab's job done")
    wait_for(lambda: row(app, lent)[0] == "Running", timeout=30, what="the preempted job running again")
    assert row(app, lent)[3] == 1


def test_a_preemption_while_the_cluster_api_hangs_is_carried_out_once_it_answers(app, stack):
    """vision-lab reclaims while the cluster's API hangs: the borrowed job is preempted in the
    database at once (Queued, Preempted, never admitted twice), the suspend and the reclaiming
    job's create time out without stopping the syncer, and once the API answers again the
    reconciler suspends the borrowed Job and vision-lab's job runs."""
    _own, lent, gpu = borrowing(app, stack)
    stack.api_hang()
    try:
        owner = submitted(submit_form(stack.bob, stack.url, stack.vision, command="sleep infinity", **gpu))
        wait_for(lambda: row(app, lent)[:2] == ("Queued", "Preempted"), timeout=20, what="the borrowed job preempted")
        wait_for(lambda: row(app, owner)[0] != "Queued", timeout=20, what="vision-lab's job admitted")
        assert all(p.alive() for p in stack.syncers), stack.syncers[0].output()[-3000:]
    finally:
        stack.api_resume()
    wait_for(lambda: row(app, owner)[0] == "Running", timeout=60, what="vision-lab's job running once the API answers")
    assert row(app, lent)[:2] == ("Queued", "Preempted") and row(app, lent)[3] == 1
    url = f"https://127.0.0.1:{stack.kube_port}/apis/batch/v1/namespaces/crater-jobs/jobs/crater-{lent}"
    answer = requests.get(url, headers={"Authorization": "Bearer kubesim-token"}, timeout=5, verify=stack.ca)
    assert answer.status_code == 200 and answer.json()["spec"]["suspend"] is True  # kept, to be resumed
    assert all(p.alive() for p in stack.syncers)
