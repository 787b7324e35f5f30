"""Fair use: the idle-GPU policy against kubesim, a real Prometheus and the syncer (warned, then
stopped; busy again in the grace: not stopped; locked: never; busy: never warned); the decisions
alone with per-type thresholds; time-limit extensions that really move the Job's deadline in
kubesim, approvals, cancellation when the job ends; warnings and the pending-interactive clean-up
with an injected clock; the job's history; the mails."""
import email
from datetime import datetime, timedelta
from email import policy as email_policy

import pytest

from conftest import job_of
from kubesim_fixtures import require_tool, wait_for
from flask import current_app
from portal.cluster.client import Cluster
from portal.cluster.manifests import ClusterSettings
from portal.extensions import db
from portal.local_prometheus import LocalPrometheus
from portal.metrics import MetricsSettings, Prometheus, epoch
from portal.models import AuditEntry, ExtensionRequest, JobWarning, PolicyRun, User
from portal.services import fair_use, jobs, policies
from portal.services.context import SYSTEM, Actor
from portal.sync.clock import FakeClock
from portal.sync.policies import PolicyPasses, RunningJob, idle_decisions
from portal.sync.syncer import SyncSettings, Syncer

A = "kubesim.crater.io/"
A100 = "NVIDIA-A100-SXM4-80GB"
T0 = datetime(2026, 12, 1, 10, 0)


# ---- the decisions alone ----------------------------------------------------------------------

def running(job_id, job_type="batch", started=T0 - timedelta(hours=5), locked=None):
    return RunningJob(job_id, job_type, "Running", 1, (f"pod-{job_id}",), started, started, 86400, locked)


def samples(value, minutes, step=60, until=T0):
    end = epoch(until)
    return [(end - i * step, value) for i in range(int(minutes * 60 / step), -1, -1)]


class Warned:
    def __init__(self, warned_at, act_at):
        self.warned_at, self.act_at = warned_at, act_at


def test_idle_decisions_warn_stop_clear_and_respect_locks_and_types(app):
    with app.app_context():
        policies.update(SYSTEM, "idle_gpu", {"batch.threshold_percent": "10", "batch.window_minutes": "60",
                                             "jupyter.window_minutes": "90", "jupyter.threshold_percent": "0"})
        p = policies.get("idle_gpu")
    util = {"pod-1": samples(0, 200), "pod-2": samples(85, 200), "pod-3": samples(0, 200), "pod-4": samples(5, 200),
            "pod-5": samples(5, 200), "pod-6": samples(0, 30)}
    jobs_ = [running(1), running(2), running(3, locked=T0 + timedelta(hours=1)), running(4),
             running(5, job_type="jupyter"), running(6, started=T0 - timedelta(minutes=30))]
    actions = idle_decisions(T0, jobs_, util, {}, p, 60)
    # 1 idle batch; 4 at 5 % is idle for batch (<= 10 %) but 5 at 5 % is busy for a notebook (> 0 %);
    # 2 busy, 3 locked, 6 has not run a whole window
    assert sorted(j for j, _at in actions.warn) == [1, 4]
    assert dict(actions.warn)[1] == T0 + timedelta(minutes=30) and actions.stop == [] and actions.clear == []
    # in the grace: 1 stays idle and its time is up -> stopped; 4 got busy -> cleared; a locked job's warning goes
    later = T0 + timedelta(minutes=31)
    util2 = {"pod-1": samples(0, 200, until=later), "pod-4": samples(5, 200, until=T0) + [(epoch(T0) + 600, 70)],
             "pod-3": samples(0, 200, until=later)}
    warned = {1: Warned(T0, T0 + timedelta(minutes=30)), 4: Warned(T0, T0 + timedelta(minutes=30)),
              3: Warned(T0, T0 + timedelta(minutes=30))}
    actions = idle_decisions(later, [running(1), running(3, locked=later + timedelta(hours=1)), running(4)], util2, warned, p, 60)
    assert actions.stop == [1] and sorted(actions.clear) == [3, 4] and actions.warn == []
    # no metrics at all is not idle
    assert idle_decisions(T0, [running(7)], {}, {}, p, 60).warn == []


# ---- the idle-GPU policy end to end --------------------------------------------------------------

@pytest.fixture
def stack(fresh_sim, tmp_path):
    binary = require_tool("prometheus", "CRATER_REQUIRE_PROMETHEUS")
    sim, core, _batch = fresh_sim(time_scale=1, tick=0.05)
    prom = LocalPrometheus([f"127.0.0.1:{sim.port}"], tmp_path / "prom", 1.0, binary=binary).start()
    yield sim, core, prom
    prom.stop()


@pytest.fixture
def app_config(stack, tmp_path, mailbox):
    sim, _core, prom = stack
    return {"KUBECONFIG": str(sim.write_kubeconfig(tmp_path / "kc")), "PROMETHEUS_URL": prom.url, "PROMETHEUS_STEP": 1.0,
            "POLICY_SECONDS": 1.0, "SMTP_URL": mailbox.url}


@pytest.fixture
def world(app, make, stack):
    ids = {"admin": make.user("root", role="admin"), "alice": make.user("alice", language="zh"),
           "carol": make.user("carol")}
    ids["lab"] = make.account("vision-lab", members={ids["alice"]: "member", ids["carol"]: "manager"})
    cluster = Cluster.connect(app.config["KUBECONFIG"], ClusterSettings(namespace="crater-jobs"))
    ids["cluster"], ids["core"] = cluster, stack[1]
    syncer = Syncer(app, cluster, settings=SyncSettings(lease_seconds=3, watch_timeout=5, reconcile_seconds=1,
                                                        outbox_seconds=0.3)).start()
    ids["syncer"] = syncer
    yield ids
    syncer.stop()
    cluster.close()


def submit(app, world, util="idle", job_type="batch", gpus=1, run="forever", **kw):
    with app.app_context():
        actor = Actor(db.session.get(User, world["alice"]), "")
        form = jobs.Submission(job_type=job_type, account_id=world["lab"], display_name=f"{job_type} job",
                               image="pytorch:2", command="python train.py", gpus=gpus, gpu_model=A100 if gpus else "",
                               annotations=((A + "run-seconds", run), (A + "gpu-util", util)), **kw)
        return jobs.submit_job(actor, form, world["cluster"], jobs.SubmitSettings.from_config(current_app.config)).id


def warning_of(app, job_id):
    with app.app_context():
        w = db.session.query(JobWarning).filter_by(job_id=job_id, kind="idle_gpu").one_or_none()
        db.session.remove()
        return w


def actions_on(app, job_id):
    with app.app_context():
        return [e.action for e in db.session.query(AuditEntry).filter_by(target_type="job", target_id=str(job_id))
                .order_by(AuditEntry.id)]


def mails(mailbox):
    return [email.message_from_string(raw, policy=email_policy.default) for raw in mailbox.messages]


def test_idle_jobs_are_warned_then_stopped_busy_and_locked_ones_are_not(app, world, mailbox, new_client):
    with app.app_context():
        policies.update(SYSTEM, "idle_gpu", {"batch.window_minutes": "0.1", "batch.grace_minutes": "0.15"})
    idle, busy, locked, wakes = (submit(app, world, "idle"), submit(app, world, "80"), submit(app, world, "idle"),
                                 submit(app, world, "idle"))
    wait_for(lambda: all(job_of(app, j).state == "Running" for j in (idle, busy, locked, wakes)), timeout=20)
    with app.app_context():
        fair_use.lock(Actor(db.session.get(User, world["admin"]), ""), locked, None, "a demo tomorrow")
    try:
        wait_for(lambda: warning_of(app, idle) and warning_of(app, wakes), timeout=30, interval=0.5, what="idle warnings")
        # the warned job's page says exactly when it stops and what would prevent it
        page = new_client().login(world["alice"]).get(f"/jobs/{idle}").get_data(as_text=True)
        assert 'id="idle-warning"' in page and warning_of(app, idle).act_at.strftime("%Y-%m-%d %H:%M") in page
        # one job becomes busy in its grace period
        pod = job_of(app, wakes).pods[0]["name"]
        world["core"].patch_namespaced_pod(pod, "crater-jobs", {"metadata": {"annotations": {A + "gpu-util": "90"}}})
        state = wait_for(lambda: (lambda j: j if j.state != "Running" else None)(job_of(app, idle)), timeout=30,
                         interval=0.5, what="the idle job stopped")
        assert (state.state, state.reason) == ("Stopped", "IdleGPU") and "did not become busy" in state.message
        wait_for(lambda: warning_of(app, wakes) is None, timeout=15, interval=0.5, what="the woken job's warning cleared")
        wait_for(lambda: len(mails(mailbox)) >= 3, timeout=15, what="mails")  # 2 warnings, 1 stop
    finally:
        pass
    assert job_of(app, wakes).state == "Running" and "job.warning_cleared.idle_gpu" in actions_on(app, wakes)
    assert job_of(app, locked).state == "Running" and "job.warned.idle_gpu" not in actions_on(app, locked)
    assert job_of(app, busy).state == "Running" and "job.warned.idle_gpu" not in actions_on(app, busy)
    got = mails(mailbox)
    subjects = sorted(m["Subject"] for m in got)
    assert len([s for s in subjects if "空闲" in s]) == 2 and len([s for s in subjects if "已被停止" in s]) == 1  # in Chinese
    assert all(m["To"] == "alice@example.edu" for m in got)
    assert len(got) == len({m["Message-ID"] for m in got}) and len(got) <= 4  # never the same notice twice
    history = actions_on(app, idle)
    assert history.index("job.warned.idle_gpu") < history.index("job.stop")
    with app.app_context():
        runs = db.session.query(PolicyRun).filter_by(policy="idle_gpu").all()
        assert any(idle in (r.warned or []) for r in runs) and any(idle in (r.stopped or []) for r in runs)


# ---- extensions ---------------------------------------------------------------------------------

def deadline_in_cluster(world, job_id):
    from kubernetes import client
    return client.BatchV1Api(world["core"].api_client).read_namespaced_job(f"crater-{job_id}", "crater-jobs").spec.active_deadline_seconds


def test_extensions_within_policy_at_once_beyond_it_by_approval(app, world, new_client, mailbox):
    job_id = submit(app, world, "80", time_limit_seconds=3600)
    wait_for(lambda: job_of(app, job_id).state == "Running", timeout=20)
    alice = new_client().login(world["alice"])
    assert alice.post(f"/jobs/{job_id}/extend", {"hours": "6", "reason": "two more epochs"}).status_code == 303
    assert job_of(app, job_id).time_limit_seconds == 7 * 3600
    assert deadline_in_cluster(world, job_id) == 7 * 3600  # the Job's deadline really moved
    # a second automatic grant within 48 h is not automatic: it waits for a manager
    assert alice.post(f"/jobs/{job_id}/extend", {"hours": "2", "reason": "and evaluation"}).status_code == 303
    assert job_of(app, job_id).time_limit_seconds == 7 * 3600
    assert alice.post(f"/jobs/{job_id}/extend", {"hours": "1", "reason": "x"}).status_code == 409  # one waits already
    assert alice.post(f"/jobs/{job_id}/extend", {"hours": "5000", "reason": "x"}).status_code == 422
    carol = new_client().login(world["carol"])
    approvals = carol.get("/approvals").get_data(as_text=True)
    with app.app_context():
        request_id = db.session.query(ExtensionRequest).filter_by(state="pending").one().id
    assert f'id="request-{request_id}"' in approvals
    assert new_client().login(world["alice"]).post(f"/approvals/{request_id}/approve", {"note": "mine"}).status_code == 404
    assert carol.post(f"/approvals/{request_id}/approve", {"note": "fine"}).status_code == 303
    assert job_of(app, job_id).time_limit_seconds == 9 * 3600 and deadline_in_cluster(world, job_id) == 9 * 3600
    # its owner hears of the decision: a notice, and a mail (in Chinese, alice's language)
    with app.app_context():
        from portal.models import Notification
        assert db.session.query(Notification).filter_by(user_id=world["alice"], kind="extension_decided").count() == 1
    decided = wait_for(lambda: [m for m in mails(mailbox) if f"#{job_id}" in m["Subject"] and "carol" in m.get_content()],
                       timeout=15, what="the decision mailed")
    assert "fine" in decided[0].get_content()
    # a request still waiting when the job ends is cancelled
    assert alice.post(f"/jobs/{job_id}/extend", {"hours": "20", "reason": "big sweep"}).status_code == 303
    with app.app_context():
        jobs.stop_job(Actor(db.session.get(User, world["alice"]), ""), job_id, world["cluster"])
        fair_use.cancel_requests_of_ended_jobs(datetime.utcnow())
        states = sorted(r.state for r in db.session.query(ExtensionRequest).filter_by(job_id=job_id))
    assert states == ["cancelled", "granted", "granted"]
    page = carol.get(f"/jobs/{job_id}").get_data(as_text=True)  # the account's manager sees the history too (in English)
    for line in ("6 more hours granted within policy", "2 more hours granted by carol", "cancelled: the job ended",
                 "stopped by alice"):
        assert line in page, line
    assert actions_on(app, job_id).count("job.extend") == 2


# ---- warnings and clean-ups with an injected clock ---------------------------------------------------

def test_time_limit_warning_and_the_pending_interactive_clean_up_with_a_fake_clock(app, world, mailbox):
    # One A100 node cordoned, the other filled by two jobs. The admitter sees free GPUs (a GPU
    # notebook would wait in the queue), not CPU: a notebook asking for 125 of the largest node's
    # 128 cores is admitted and stays pending, since no schedulable node has them free.
    world["cluster"].patch_node("a100-1", {"spec": {"unschedulable": True}})
    long_job = submit(app, world, "80", time_limit_seconds=30 * 3600)
    filler = submit(app, world, "80", gpus=7)
    wait_for(lambda: job_of(app, long_job).state == job_of(app, filler).state == "Running", timeout=20)
    stuck = submit(app, world, "idle", job_type="jupyter", gpus=0, cpu_milli=125_000)
    wait_for(lambda: job_of(app, long_job).state == "Running" and job_of(app, stuck).reason == "Unschedulable", timeout=20)
    started = job_of(app, long_job).started_at
    clock = FakeClock(epoch(started) + 3600)
    passes = PolicyPasses(world["cluster"], Prometheus(MetricsSettings()), clock, "crater-jobs", every=60)
    with app.app_context():
        assert passes.time_limit_warning(policies.get("time_limit_warning")).warn == []  # 29 h left
        clock.advance(6 * 3600 + 60)  # 22 h 59 min left: within the 24 h warning
        assert [j for j, _at in passes.time_limit_warning(policies.get("time_limit_warning")).warn] == [long_job]
        assert passes.time_limit_warning(policies.get("time_limit_warning")).warn == []  # once
        done = passes.run_due()  # every policy, as the syncer runs them: idle GPUs cannot be seen here
        assert done["pending_interactive"].stop == [stuck] and done["time_limit_warning"].warn == []  # pending > 30 min
        assert "idle_gpu" not in done
        assert (passes.actions_total[("pending_interactive", "stop")], passes.actions_total[("time_limit_warning", "warn")],
                passes.actions_total[("idle_gpu", "stop")]) == (1, 0, 0)  # the syncer's metrics count these
    assert (job_of(app, stuck).state, job_of(app, stuck).reason) == ("Stopped", "PendingTooLong")
    with app.app_context():
        from portal.models import OutboxMessage
        kinds = sorted(m.kind for m in db.session.query(OutboxMessage))
    assert kinds == ["job_ended", "warning_time_limit"]


def test_policy_page_edits_suspends_and_refuses_bad_values(app, world, new_client):
    admin = new_client().login(world["admin"])
    assert admin.post("/admin/policies/idle_gpu", {"jupyter.window_minutes": "45"}).status_code == 303
    assert admin.post("/admin/policies/idle_gpu", {"jupyter.window_minutes": "-3"}).status_code == 422
    assert admin.post("/admin/policies/idle_gpu", {"jupyter.grace_minutes": "NaN"}).status_code == 422
    assert admin.post("/admin/policies/idle_gpu/suspend").status_code == 303
    page = admin.get("/admin/policies").get_data(as_text=True)
    assert 'value="45"' in page and "suspended" in page
    with app.app_context():
        p = policies.get("idle_gpu")
        assert p.suspended and p.per_type("jupyter", "window_minutes") == 45
    assert new_client().login(world["alice"]).post("/admin/policies/idle_gpu/resume").status_code == 403


# ---- notifications ----------------------------------------------------------------------------------

def test_notices_follow_preferences_and_never_repeat_across_restarts(app, world, mailbox, new_client):
    carol = new_client().login(world["carol"])
    assert carol.post("/settings", {"language": "en", "mail": ["job_started", "job_failed"]}).status_code == 303
    with app.app_context():
        actor = Actor(db.session.get(User, world["carol"]), "")
        form = jobs.Submission(job_type="batch", account_id=world["lab"], display_name="short", image="pytorch:2",
                               command="python train.py", gpus=1, gpu_model=A100, annotations=((A + "run-seconds", "2"),))
        ok = jobs.submit_job(actor, form, world["cluster"], jobs.SubmitSettings.from_config(current_app.config)).id
        bad = jobs.submit_job(actor, jobs.Submission(**{**form.__dict__, "display_name": "crash",
                                                        "annotations": ((A + "run-seconds", "2"), (A + "exit-code", "3"))}),
                              world["cluster"], jobs.SubmitSettings.from_config(current_app.config)).id
    wait_for(lambda: job_of(app, ok).state == "Succeeded" and job_of(app, bad).state == "Failed", timeout=30)
    wait_for(lambda: len(mails(mailbox)) >= 3, timeout=15, what="mails")
    # a new syncer (a restart, a failover) sees the same jobs: nothing is recorded or mailed again
    replacement = Syncer(app, world["cluster"], settings=SyncSettings(lease_seconds=3, watch_timeout=5, reconcile_seconds=1,
                                                                      outbox_seconds=0.3)).start()
    try:
        import time
        time.sleep(4)
    finally:
        replacement.stop()
    subjects = sorted(m["Subject"] for m in mails(mailbox))
    # started x2 (wanted), failed (wanted), succeeded (not wanted)
    assert subjects == sorted([f"[Crater] Job crash (#{bad}) failed", f"[Crater] Job crash (#{bad}) is running",
                               f"[Crater] Job short (#{ok}) is running"]), subjects
    assert all(m["To"] == "carol@example.edu" for m in mails(mailbox))
    count = carol.get("/notifications/count").get_data(as_text=True)
    assert '<span class="badge unread" id="unread-count">4</span>' in count  # started x2, succeeded, failed
    page = carol.get("/notifications").get_data(as_text=True)
    assert page.count('class="unread"') == 4 and "succeeded" in page and "failed" in page
    assert carol.post("/notifications/read").status_code == 303
    assert "unread-count" not in carol.get("/notifications/count").get_data(as_text=True)
    assert "unread-count" not in new_client().login(world["alice"]).get("/notifications/count").get_data(as_text=True)
    assert carol.post("/settings", {"language": "xx", "mail": ["job_started"]}).status_code == 422
    assert carol.post("/settings", {"language": "en", "mail": ["evil"]}).status_code == 422


def test_only_the_lease_holder_runs_the_policies(app, world):
    """Two more replicas beside the fixture's: only one replica at a time runs the policies (the
    one holding the Lease), and after the holder stops, another takes over."""
    extra = [Syncer(app, world["cluster"], identity=f"replica-{n}",
                    settings=SyncSettings(lease_seconds=3, watch_timeout=5, reconcile_seconds=1)).start() for n in range(2)]

    def runners_since(first_id):
        with app.app_context():
            rows = db.session.query(PolicyRun).filter(PolicyRun.id > first_id, PolicyRun.policy == "idle_gpu").all()
            db.session.remove()
            return [(r.started_at, r.runner) for r in rows]
    try:
        wait_for(lambda: len(runners_since(0)) >= 4, timeout=20, what="policy runs")
        runs = runners_since(0)
        # within any second, one runner (the Lease holder); each run is one pass, once per tick
        by_second = {}
        for at, runner in runs:
            by_second.setdefault(at, set()).add(runner)
        assert all(len(r) == 1 for r in by_second.values()), by_second
        holder = runs[-1][1]
        with app.app_context():
            last = db.session.query(PolicyRun).order_by(PolicyRun.id.desc()).first().id
        replicas = extra + [world["syncer"]]
        assert holder in {s.identity for s in replicas}
        next(s for s in replicas if s.identity == holder).stop()  # (stopping twice at teardown is harmless)
        wait_for(lambda: any(r != holder for _at, r in runners_since(last)), timeout=20, what="another replica taking over")
    finally:
        for s in extra:
            s.stop()
