"""A real Chromium (Debian's /usr/bin/chromium, driven by Playwright) signs in through the OIDC
provider, switches the interface to Chinese and adds a member to an account with htmx."""
import os
import shutil
import threading
from pathlib import Path
from contextlib import contextmanager

import pytest
import requests
from werkzeug.serving import make_server

from conftest import Factory, base_config, migrate_fresh, skip_or_fail
from flask import current_app
from portal import create_app

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("CRATER_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        skip_or_fail("CRATER_REQUIRE_BROWSER", f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("CRATER_REQUIRE_BROWSER", "playwright is not installed")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
            "--disable-component-update", "--no-first-run"])
        yield browser
        browser.close()


@contextmanager
def serving(tmp_path, **config):
    """The portal on a real HTTP server on loopback, on its own SQLite database."""
    url = "sqlite:///" + str(tmp_path / "browser.sqlite3")
    migrate_fresh(url)
    app = create_app(base_config(url, TESTING=False, **config))
    server = make_server("localhost", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://localhost:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def live_portal(tmp_path, oidc_issuer):
    with serving(tmp_path, OIDC_ISSUER=oidc_issuer, OIDC_CLIENT_SECRET="s", OIDC_ADMIN_GROUP="gpu-admins") as live:
        yield live


def test_sign_in_switch_to_chinese_and_add_a_member(browser, live_portal, oidc_issuer, tmp_path):
    app, base = live_portal
    make = Factory(app)
    bob = make.user("bob", display_name="Bob Li")
    lab = make.account("vision-lab", display_name="视觉实验室")
    requests.put(f"{oidc_issuer}/users/dora", json={"preferred_username": "dora", "name": "Dora",
                                                     "groups": ["gpu-admins"]}, timeout=5).raise_for_status()
    page = browser.new_page(locale="en-US")
    errors = []
    page.on("console", lambda msg: errors.append((page.url, msg.location.get("url"), msg.text[:150])) if msg.type == "error" else None)

    page.goto(base + "/login")
    page.click("#sso-login")
    page.fill("input[name=sub]", "dora")  # the provider's own page
    page.click("button:has-text('Authorize')")
    page.wait_for_url(base + "/")
    assert "Welcome, Dora" in page.inner_text("h1")

    page.click("button[lang=zh]")
    page.wait_for_selector("text=我的账户")
    assert page.get_attribute("html", "lang") == "zh-CN"

    page.goto(f"{base}/admin/accounts/{lab}")
    page.evaluate("window.__notReloaded = true")
    page.fill("#username", "bob")
    page.select_option("#role", "manager")
    page.click("#add-member button[type=submit]")
    page.wait_for_selector(f"#member-{bob}")
    assert page.evaluate("window.__notReloaded") is True  # swapped by htmx, not a page load
    assert "已添加 bob。" in page.inner_text("#flash")
    assert page.input_value(f"#member-{bob} select[name=role]") == "manager"
    page.screenshot(path=str(tmp_path / "members.png"), full_page=True)

    # Making bob an admin swaps his row in the users table, again without a reload.
    page.goto(f"{base}/admin/users")
    page.evaluate("window.__notReloaded = true")
    page.click(f"#user-{bob} button:has-text('设为管理员')")
    page.wait_for_selector(f"#user-{bob} button:has-text('取消管理员')")
    assert page.evaluate("window.__notReloaded") is True
    assert "bob" in page.inner_text("#flash")
    page.goto(f"{base}/admin/accounts/{lab}")
    page.evaluate("window.__notReloaded = true")

    # A bad username comes back as a field error in the same fragment, still without a reload.
    page.fill("#username", "nobody")
    page.click("#add-member button[type=submit]")
    page.wait_for_selector("text=没有名为 nobody 的用户。")
    assert page.evaluate("window.__notReloaded") is True
    # No CSP violation or failed resource on our pages (the deliberate 422 aside).
    assert [e for e in errors if e[0].startswith(base) and "status of 422" not in e[2]] == []


def signed_in_page(browser, base: str, username: str, password: str):
    """A page signed in with the local form, and the console errors it collects (url, text)."""
    page = browser.new_page(locale="en-US")
    errors = []
    page.on("console", lambda msg: errors.append((page.url, msg.text[:200])) if msg.type == "error" else None)
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(base + "/")
    return page, errors


@pytest.fixture
def live_cluster_portal(tmp_path, fresh_sim):
    """The portal on a real HTTP server with kubesim (2x speed) and the syncer running."""
    from portal.cluster.setup import cluster_for
    from portal.sync.syncer import SyncSettings, Syncer

    sim = fresh_sim(time_scale=2)[0]
    with serving(tmp_path, KUBECONFIG=str(sim.write_kubeconfig(tmp_path / "kc"))) as (app, base):
        syncer = Syncer(app, cluster_for(app), settings=SyncSettings(lease_seconds=3, watch_timeout=5)).start()
        yield app, base
        syncer.stop()


def submit_batch(page, name, gpus="2", account="Vision-Lab", verdict=None):
    """Fill the open batch form (`gpus` A100 GPUs, `python train.py`; in `account`, or the account the
    form chose first when None) and submit it; with `verdict`, the form must first say that (start,
    queue, ...). The GPU models come from the node inventory the syncer keeps: until it has them,
    load the form again."""
    import time
    deadline = time.monotonic() + 45
    while not page.locator("#gpu_model option[value='NVIDIA-A100-SXM4-80GB']").count():
        assert time.monotonic() < deadline, "the form never offered the A100 model (no node inventory)"
        time.sleep(0.5)
        page.reload()
    page.fill("#display_name", name)
    if account is not None:
        page.select_option("#account_id", label=account)
    page.fill("#image", "pytorch/pytorch:2.4")
    page.fill("#command", "python train.py")
    page.select_option("#gpu_model", "NVIDIA-A100-SXM4-80GB")
    page.fill("#gpus", gpus)
    if verdict is not None:
        page.press("#gpus", "Tab")
        page.wait_for_selector(f"#outlook-verdict[data-verdict={verdict}]", timeout=10000)
    page.click("#submit-job")
    page.wait_for_selector("#job-status")


def submit_notebook(page, base, gpus=None):
    """Fill and submit the JupyterLab form (a notebook image; the form's own GPUs unless given)."""
    page.goto(base + "/jobs/new/jupyter")
    page.fill("#display_name", "notebook")
    page.fill("#image", "quay.io/jupyter/pytorch-notebook")
    if gpus is not None:
        page.fill("#gpus", gpus)
    page.click("#submit-job")


def test_submit_a_batch_job_watch_it_run_and_read_its_logs_then_a_jupyterlab(browser, live_cluster_portal, tmp_path):
    app, base = live_cluster_portal
    make = Factory(app)
    alice = make.user("alice", password="alice-password-1")
    make.account("vision-lab", gpu_quota=8, members={alice: "member"})
    page, errors = signed_in_page(browser, base, "alice", "alice-password-1")

    # The GPU models come from the node inventory the syncer keeps.
    page.goto(base + "/jobs/new")
    page.click("#new-batch")
    submit_batch(page, "训练 ResNet")
    assert "Job 训练 ResNet submitted." in page.inner_text("#flash")
    assert page.inner_text("#job-status .state") in ("Pending", "Running")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_selector("#job-status .state-running", timeout=20000)
    page.wait_for_selector("#job-status .state-succeeded", timeout=40000)
    assert page.evaluate("window.__notReloaded") is True  # the status block was polled, not reloaded
    assert "Finished successfully." in page.inner_text("#job-reason")
    page.click("#show-logs")
    page.wait_for_selector("#log-text")
    assert "step" in page.inner_text("#log-text")
    assert page.evaluate("window.__notReloaded") is True
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)

    # A JupyterLab job: the link appears for its owner once it runs; then stop it.
    submit_notebook(page, base, gpus="1")
    page.wait_for_selector("#job-status")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_selector("#open-jupyter", timeout=20000)
    assert "/jupyter" in page.get_attribute("#open-jupyter", "href")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#stop-job")
    page.wait_for_selector("#job-status .state-stopped")
    assert page.evaluate("window.__notReloaded") is True
    assert "Stopped by its owner." in page.inner_text("#job-reason")
    page.goto(base + "/jobs")
    assert "notebook" in page.inner_text("#jobs-table") and "训练 ResNet" in page.inner_text("#jobs-table")
    assert [e for e in errors if e[0].startswith(base)] == []


ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var", "artifacts")


@pytest.fixture
def live_metrics_portal(tmp_path, fresh_sim):
    """The portal with kubesim (real time), the syncer, and a Prometheus scraping kubesim every second."""
    from kubesim_fixtures import require_tool
    from portal.cluster.setup import cluster_for
    from portal.local_prometheus import LocalPrometheus
    from portal.sync.syncer import SyncSettings, Syncer

    binary = require_tool("prometheus", "CRATER_REQUIRE_PROMETHEUS")
    sim = fresh_sim(time_scale=1, tick=0.05)[0]
    with LocalPrometheus([f"127.0.0.1:{sim.port}"], tmp_path / "prom", 1.0, binary=binary) as prom, \
            serving(tmp_path, KUBECONFIG=str(sim.write_kubeconfig(tmp_path / "kc")), PROMETHEUS_URL=prom.url,
                    PROMETHEUS_STEP=1.0) as (app, base):
        syncer = Syncer(app, cluster_for(app), settings=SyncSettings(lease_seconds=3, watch_timeout=5,
                                                                     reconcile_seconds=1)).start()
        yield app, base
        syncer.stop()


def test_the_nodes_page_shows_a_new_jobs_gpus_without_a_reload_and_charts_render(browser, live_metrics_portal):
    from portal.cluster.setup import cluster_for
    from portal.extensions import db
    from portal.models import User
    from portal.services import jobs
    from portal.services.context import Actor

    app, base = live_metrics_portal
    make = Factory(app)
    alice = make.user("alice", password="alice-password-1")
    lab = make.account("vision-lab", gpu_quota=8, members={alice: "member"})
    page, errors = signed_in_page(browser, base, "alice", "alice-password-1")
    page.goto(base + "/nodes?model=NVIDIA-A100-SXM4-80GB")
    page.wait_for_selector("#node-a100-0")
    assert page.inner_text("#node-a100-0 .gpus-used") == "0" and page.inner_text("#node-a100-1 .gpus-used") == "0"
    page.evaluate("window.__notReloaded = true")
    with app.app_context():
        actor = Actor(db.session.get(User, alice), "")
        job_id = jobs.submit_job(actor, jobs.Submission(
            job_type="batch", account_id=lab, display_name="chart me", image="pytorch:2", command="python train.py",
            gpus=2, gpu_model="NVIDIA-A100-SXM4-80GB", annotations=(("kubesim.crater.io/run-seconds", "forever"),
                                                                   ("kubesim.crater.io/gpu-util", "30-90"))),
            cluster_for(app), jobs.SubmitSettings.from_config(current_app.config)).id
    page.wait_for_function("""() => ['a100-0', 'a100-1'].some(n => {
        const cell = document.querySelector('#node-' + n + ' .gpus-used');
        return cell && cell.textContent.trim() === '2'; })""", timeout=20000)
    assert page.evaluate("window.__notReloaded") is True  # the table was polled, not reloaded
    page.goto(f"{base}/jobs/{job_id}")
    page.wait_for_selector("#job-chart[data-state=rendered] figure.chart canvas", timeout=30000)
    assert page.locator("#job-chart figure.chart").count() == 2  # utilisation and memory
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "job-gpu-chart.png"), full_page=True)
    page.goto(base + "/")
    page.wait_for_selector("#cluster-chart[data-state]:not([data-state=loading])", timeout=15000)
    page.screenshot(path=os.path.join(ARTIFACTS, "home-cluster-chart.png"), full_page=True)
    assert [e for e in errors if e[0].startswith(base)] == []  # no CSP violation, no failed resource


def test_jobs_over_quota_queue_and_go_to_the_end_without_a_reload(browser, live_cluster_portal):
    """Two jobs of 2 GPUs in an account allowed 2: the second is queued with its words, place and
    estimate; the list then shows it go Queued -> Running -> Succeeded while polling, no reload."""
    app, base = live_cluster_portal
    make = Factory(app)
    alice = make.user("alice", password="alice-password-1")
    make.account("vision-lab", gpu_quota=2, members={alice: "member"})
    page, errors = signed_in_page(browser, base, "alice", "alice-password-1")

    def submit(name):
        page.goto(base + "/jobs/new/batch")
        submit_batch(page, name)
        return int(page.url.rsplit("/", 1)[1])

    submit("first")
    # The form says, as the count changes and before submitting, that a second one would queue.
    page.goto(base + "/jobs/new/batch")
    page.evaluate("window.__notReloaded = true")
    page.select_option("#gpu_model", "NVIDIA-A100-SXM4-80GB")
    page.fill("#gpus", "2")
    page.press("#gpus", "Tab")
    page.wait_for_selector("#outlook-verdict[data-verdict=queue]", timeout=10000)
    assert "place 1" in page.inner_text("#outlook-verdict") and page.evaluate("window.__notReloaded") is True
    page.fill("#gpus", "0")
    page.press("#gpus", "Tab")
    page.wait_for_selector("#outlook-verdict[data-verdict=start]", timeout=10000)
    second = submit("second")
    assert "is queued" in page.inner_text("#flash")
    assert page.inner_text("#job-status .state") == "Queued"
    assert "vision-lab uses 2 of 2 GPUs" in page.inner_text("#job-queue")
    assert "Place 1 of 1" in page.inner_text("#job-queue")
    # The estimate arrives with a poll of the status block (the admitter estimates within seconds).
    page.wait_for_function("() => /UTC \\(in about/.test(document.querySelector('#job-estimate').textContent)",
                           timeout=15000)
    page.goto(base + "/jobs")
    page.evaluate("window.__notReloaded = true")
    row = f"#job-{second}"
    assert page.inner_text(f"{row} .state") == "Queued" and "#1 in line" in page.inner_text(row)
    page.wait_for_selector(f"{row} .state-running", timeout=60000)
    page.wait_for_selector(f"{row} .state-succeeded", timeout=60000)
    assert page.evaluate("window.__notReloaded") is True  # the table was polled, not reloaded
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "queue-list.png"), full_page=True)
    assert [e for e in errors if e[0].startswith(base)] == []


def test_a_borrowed_job_is_preempted_and_runs_again_without_a_reload(browser, live_cluster_portal):
    """A job beyond vision-lab's guarantee runs on nlp-lab's idle A100s; nlp-lab's own job takes
    them back. The borrowed job's page, never reloaded, shows it Running (borrowed), then Queued with
    the preemption in words, then Running again once nlp-lab's job has ended."""
    from portal.extensions import db
    from portal.models import User
    from portal.services import jobs, policies
    from portal.services.context import SYSTEM, Actor

    app, base = live_cluster_portal
    make = Factory(app)
    alice = make.user("alice", password="alice-password-1")
    bob = make.user("bob")
    make.account("vision-lab", gpu_quota=8, members={alice: "member"})
    make.account("nlp-lab", gpu_quota=8, members={bob: "member"})
    sim = "kubesim.crater.io/"
    from portal.cluster.setup import cluster_for
    cluster = cluster_for(app)

    def submit(user, account, run, when_full="queue"):
        with app.app_context():
            from portal.models import Account
            actor = Actor(db.session.get(User, user), "")
            account_id = db.session.query(Account).filter_by(name=account).one().id
            form = jobs.Submission(job_type="batch", account_id=account_id, display_name=f"{account} {when_full}",
                                   image="pytorch:2", command="python train.py", gpus=8, gpu_model="NVIDIA-A100-SXM4-80GB",
                                   annotations=((sim + "run-seconds", run),), queue_if_full=True,
                                   borrow=when_full == "borrow")
            job_id = jobs.submit_job(actor, form, cluster, jobs.SubmitSettings.from_config(app.config)).id
            db.session.remove()
            return job_id

    with app.app_context():
        policies.update(SYSTEM, "preemption", {"grace_seconds": "2", "min_run_minutes": "0", "backoff_minutes": "0"})
    page, errors = signed_in_page(browser, base, "alice", "alice-password-1")
    page.goto(base + "/jobs/new/batch")
    assert page.locator("#when_full option[value='borrow']").count() == 1  # the form offers it
    import time
    deadline = time.monotonic() + 45
    with app.app_context():
        from portal.models import Node
        while not db.session.query(Node).filter(Node.gpus > 0).count():  # the admitter sees the cluster
            assert time.monotonic() < deadline
            db.session.remove()
            time.sleep(0.3)
        db.session.remove()
    submit(alice, "vision-lab", "forever")
    lent = submit(alice, "vision-lab", "forever", when_full="borrow")
    page.goto(f"{base}/jobs/{lent}")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_selector("#job-status .state-running", timeout=30000)
    assert "borrowed" in page.inner_text("#job-class")
    owner = submit(bob, "nlp-lab", "6")

    def jobs_now() -> str:  # what the queue and the syncer made of the three jobs, when a wait fails
        with app.app_context():
            from portal.models import Job, Node
            rows = [(j.id, j.account.name, j.state, j.reason, j.borrowed, j.queue_blocker) for j in db.session.query(Job)]
            nodes = [(n.name, n.gpus, n.gpus_requested, n.unschedulable) for n in db.session.query(Node).filter(Node.gpus > 0)]
            db.session.remove()
            return f"jobs {rows}; nodes {nodes}"
    try:
        page.wait_for_selector("#job-status .state-queued", timeout=30000)  # reclaimed
    except Exception:
        raise AssertionError(jobs_now()) from None
    page.wait_for_selector("#job-preempted", timeout=10000)
    assert f"so that nlp-lab's job {owner} could use its guaranteed GPUs" in page.inner_text("#job-preempted")
    page.wait_for_selector("#job-status .state-running", timeout=60000)  # nlp-lab's job ended: it runs again
    assert page.evaluate("window.__notReloaded") is True
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "borrowed-job.png"), full_page=True)
    assert [e for e in errors if e[0].startswith(base)] == []
    cluster.close()


def test_a_terminal_in_a_running_job_runs_commands_in_the_browser(browser, live_cluster_portal):
    """The owner of a running JupyterLab opens its terminal from the job page: xterm.js connects
    over the portal's websocket (no console error: the page's CSP lets xterm style its rows), a
    command typed runs in the pod (kubesim's local shell) and its output shows."""
    app, base = live_cluster_portal
    make = Factory(app)
    alice = make.user("alice", password="alice-password-1")
    make.account("vision-lab", gpu_quota=8, members={alice: "member"})
    page, errors = signed_in_page(browser, base, "alice", "alice-password-1")
    submit_notebook(page, base)
    page.wait_for_selector("#open-terminal", timeout=30000)  # once it runs, without a reload
    page.click("#open-terminal")
    page.wait_for_selector("#terminal[data-state=open]", timeout=20000)
    page.click("#terminal")
    page.keyboard.type("echo hello-$((6*7))")
    page.keyboard.press("Enter")
    page.wait_for_function("""() => { const b = window.craterTerminal.buffer.active;
        for (let i = 0; i < b.length; i++) { const l = b.getLine(i);
          if (l && l.translateToString().includes('hello-42')) { return true; } }
        return false; }""", timeout=15000)
    page.keyboard.type("exit")
    page.keyboard.press("Enter")
    page.wait_for_selector("#terminal[data-state=closed]", timeout=15000)
    assert [e for e in errors if e[0].startswith(base)] == []


@pytest.fixture
def long_training_portal(tmp_path, fresh_sim):
    """The portal with kubesim in real time, where a training job runs for an hour (a step line
    every 2 s), and the syncer running."""
    from portal.cluster.setup import cluster_for
    from portal.sync.syncer import SyncSettings, Syncer

    sim = fresh_sim(time_scale=1)[0]
    sim.default_run_seconds = 3600
    with serving(tmp_path, KUBECONFIG=str(sim.write_kubeconfig(tmp_path / "kc"))) as (app, base):
        syncer = Syncer(app, cluster_for(app), settings=SyncSettings(lease_seconds=3, watch_timeout=5)).start()
        yield app, base
        syncer.stop()


def test_a_running_jobs_log_follows_itself_and_pauses(browser, long_training_portal):
    """A running job's page shows its log at once and the log grows without a reload (a stream,
    asked again while the job runs); Pause stops it, Follow goes on."""
    app, base = long_training_portal
    make = Factory(app)
    alice = make.user("alice", password="alice-password-1")
    make.account("vision-lab", gpu_quota=8, members={alice: "member"}, display_name="Vision-Lab")
    page, errors = signed_in_page(browser, base, "alice", "alice-password-1")
    page.goto(base + "/jobs/new/batch")
    submit_batch(page, "training")
    page.wait_for_selector("#job-status .state-running", timeout=30000)
    page.reload()  # the page of a running job: its log loads and follows by itself
    page.wait_for_selector("#log-text[data-state=following]", timeout=15000)
    page.evaluate("window.__notReloaded = true")
    count = lambda: page.evaluate("document.getElementById('log-text').textContent.split('\\n').length")  # noqa: E731
    first = count()
    page.wait_for_function(f"() => document.getElementById('log-text').textContent.split('\\n').length > {first}",
                           timeout=20000)
    page.click("#log-pause")
    assert page.get_attribute("#log-text", "data-state") == "paused"
    held = count()
    page.wait_for_timeout(2500)
    assert count() == held  # paused: nothing more is appended
    page.click("#log-pause")
    page.wait_for_selector("#log-text[data-state=following]", timeout=10000)
    assert page.evaluate("window.__notReloaded") is True
    assert [e for e in errors if e[0].startswith(base)] == []


def test_upload_a_file_make_a_folder_move_and_download_it(browser, tmp_path):
    """/files in the browser: upload two files, make a folder, move one into it, download it (an
    attachment, the same bytes), delete the other after the no-JavaScript confirmation."""
    with serving(tmp_path, STORAGE_ROOT=str(tmp_path / "storage")) as (app, base):
        Factory(app).user("bob", password="bob-password-1")
        page, errors = signed_in_page(browser, base, "bob", "bob-password-1")
        page.click("nav.mainnav >> text=Files")
        page.click("#areas >> text=My home")
        (tmp_path / "train.py").write_text("print('epoch 1')\n")
        (tmp_path / "notes.txt").write_text("lr 3e-4\n")
        page.set_input_files("#upload-files", [str(tmp_path / "train.py"), str(tmp_path / "notes.txt")])
        page.click("#upload-form button[type=submit]")
        page.wait_for_selector("#entries >> text=train.py")
        page.fill("#folder-name", "code")
        page.click("#mkdir-form button[type=submit]")
        page.wait_for_selector("#entries >> text=code/")
        page.click("#entries tr:has-text('train.py') >> text=Rename or move")
        page.fill("#move-folder", "users/bob/code")
        page.click("#move button[type=submit]")
        page.click("#entries >> text=code/")
        with page.expect_download() as info:
            page.click("#entries >> text=train.py")
        download = info.value
        assert download.suggested_filename == "train.py"
        assert Path(download.path()).read_text() == "print('epoch 1')\n"
        page.click("#crumbs >> text=bob")
        page.click("#entries tr:has-text('notes.txt') >> text=Delete")
        page.click("#confirm-delete button[type=submit]")
        page.wait_for_selector("text=notes.txt deleted.")
        assert sorted(os.listdir(tmp_path / "storage" / "users" / "bob")) == ["code"]
        assert errors == []


# What breaks a laptop's page: a document wider than the window, or a label squeezed to about one
# character per line (a short box, many lines, several characters of text).
LAYOUT_PROBLEMS = """() => {
  const out = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1) out.push('scrolls sideways: ' + doc.scrollWidth + ' > ' + window.innerWidth);
  for (const el of document.querySelectorAll('label, th, button, .badge, .button, nav a, summary, legend, h1, h2, td')) {
    const text = (el.innerText || '').trim();
    if (text.length < 4 || el.closest('pre, code, textarea, .visually-hidden')) continue;
    const r = el.getBoundingClientRect();
    const size = parseFloat(getComputedStyle(el).fontSize) || 16;
    if (r.width > 0 && r.width < 2.2 * size && r.height > 3.5 * size)
      out.push('squeezed ' + el.tagName.toLowerCase() + ': ' + text.slice(0, 30).replace(/\\s+/g, ' '));
  }
  const ctx = document.createElement('canvas').getContext('2d');
  for (const sel of document.querySelectorAll('select:not([multiple])')) {
    const option = sel.options[sel.selectedIndex];
    if (!option || !sel.offsetWidth) continue;
    ctx.font = getComputedStyle(sel).font;
    if (ctx.measureText(option.text).width + 34 > sel.clientWidth)  // the text, the padding and the arrow
      out.push('cut-off choice: ' + option.text.slice(0, 40));
  }
  return out;
}"""


def test_every_page_fits_a_laptop_in_both_languages(browser, tmp_path):
    """Every page type at 1280 and 1366 px, in English and Chinese: nothing scrolls sideways and
    no label is squeezed to a character per line; no console error."""
    from worlds import every_kind_of_page, page_urls

    with serving(tmp_path) as (app, base):
        make = Factory(app)
        ids = every_kind_of_page(app, make, password="layout-password-1")
        with app.app_context():
            from portal.extensions import db
            from portal.models import User
            db.session.get(User, ids["user"]).language = "en"
            db.session.commit()
        urls = page_urls(app, ids)
        problems = {}
        for who, username in (("admin", "root"), ("member", "bob")):
            page, errors = signed_in_page(browser, base, username, "layout-password-1")
            for endpoint, url in urls:
                if "download" in endpoint or "download" in url:
                    continue  # an attachment, not a page
                response = page.goto(base + url)
                if response is None or response.status != 200 or "text/html" not in response.headers.get("content-type", ""):
                    continue
                for width in (1280, 1366):
                    page.set_viewport_size({"width": width, "height": 800})
                    found = page.evaluate(LAYOUT_PROBLEMS)
                    if found:
                        problems[f"{who} {width} {url}"] = found
                if endpoint == "admin_audit.index":  # the check itself sees a page too narrow for its table
                    page.set_viewport_size({"width": 360, "height": 800})
                    assert page.evaluate(LAYOUT_PROBLEMS), "the layout check finds nothing even at 360 px"
            # (no cluster here: the terminal's websocket is refused with a 503, as it should be)
            assert [e for e in errors if e[0].startswith(base) and "status of 4" not in e[1]
                    and not e[1].startswith("WebSocket connection")] == [], who
            page.close()
        assert problems == {}, "\n".join(f"{k}: {v}" for k, v in problems.items())


# ---- the first hour's journeys, in English and Chinese at 1280 px --------------------------------

def journey_page(browser, base, app, user_id, username, lang):
    """A signed-in page at 1280 px in `lang` (the user's setting), and a check for each page it
    reaches: no console error, nothing scrolls sideways, in Chinese no English word left."""
    from worlds import english_words
    with app.app_context():
        from portal.extensions import db
        from portal.models import User
        db.session.get(User, user_id).language = lang
        db.session.commit()
    page, errors = signed_in_page(browser, base, username, "journey-password-1")
    page.set_viewport_size({"width": 1280, "height": 800})

    def check(where: str):
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), f"{where} scrolls sideways"
        if lang == "zh":
            assert english_words(page.content()) == set(), where
        assert [e for e in errors if e[0].startswith(base)] == [], where
    return page, check


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_researchers_first_hour(browser, live_cluster_portal, lang):
    """Free GPUs on the home page, a batch job from the form (which says it would start now)
    watched to its end without a reload, its log; a clone; a template and a job from it; more time
    for a running job; a token."""
    app, base = live_cluster_portal
    make = Factory(app)
    alice = make.user("alice", password="journey-password-1")
    make.account("own-lab", gpu_quota=8, display_name="视觉实验室", members={alice: "member"})
    page, check = journey_page(browser, base, app, alice, "alice", lang)
    zh = lang == "zh"

    page.goto(base + "/")
    check("home")
    page.goto(base + "/jobs/new/batch")
    submit_batch(page, "训练一", gpus="1", account=None, verdict="start")
    check("the new job")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_selector("#job-status .state-succeeded", timeout=45000)
    assert page.evaluate("window.__notReloaded") is True
    page.click("#show-logs")
    page.wait_for_selector("#log-text")
    check("the ended job with its log")

    page.click("a[href$='/clone']")
    page.wait_for_selector("#job-form")
    assert page.input_value("#display_name").startswith("训练一") and page.input_value("#gpus") == "1"
    check("the clone's form")
    page.fill("#display_name", "训练二")
    page.fill("#command", "sleep 600")
    page.click("#submit-job")
    page.wait_for_selector("#job-status .state-running", timeout=30000)
    page.fill("#extend-form input[name=hours]", "1")
    page.fill("#extend-form input[name=reason]", "多训练几轮")
    page.click("#extend-form button[type=submit]")
    page.wait_for_selector("tr[data-state=granted]", timeout=10000)
    check("more time, granted")

    page.fill("input[name=name][maxlength='128']", "我的模板")
    page.click("button:has-text('保存模板')" if zh else "button:has-text('Save template')")
    page.goto(base + "/templates")
    page.click("a:has-text('我的模板')")
    page.wait_for_selector("#job-form")
    assert page.input_value("#command") == "sleep 600"
    check("a job from the template")

    page.goto(base + "/settings/tokens")
    page.fill("#token-form input[name=name]", "laptop")
    page.click("#create-token")
    page.wait_for_selector("#token-value")
    assert page.input_value("#token-value").startswith("crt_") or len(page.input_value("#token-value")) > 20
    check("a new token")



@pytest.mark.parametrize("lang", ["en", "zh"])
def test_an_admins_first_hour(browser, live_cluster_portal, lang):
    """The nodes, a reservation with its reason, a drain with a grace period, a maintenance with
    its banner, the usage CSV (with a byte-order mark), the audit log filtered without a reload."""
    app, base = live_cluster_portal
    make = Factory(app)
    root = make.user("root", role="admin", password="journey-password-1")
    lab = make.account("own-lab", display_name="视觉实验室", members={root: "manager"})
    page, check = journey_page(browser, base, app, root, "root", lang)

    page.goto(base + "/nodes")
    page.wait_for_selector("#node-a100-1", timeout=30000)
    check("the nodes")
    page.goto(base + "/nodes/a100-1")
    page.select_option("form[action$='/reserve'] select[name=account]", str(lab))
    page.fill("form[action$='/reserve'] input[name=reason]", "截止日期")
    page.click("form[action$='/reserve'] button[type=submit]")
    page.wait_for_selector("form[action$='/release']")
    assert "截止日期" in page.content()
    check("a reserved node")

    page.goto(base + "/nodes/a100-0/drain")
    page.fill("input[name=reason]", "更换电源")
    page.fill("input[name=grace]", "30")
    page.click("button.danger[type=submit]")
    page.wait_for_selector("#scheduled-drain")
    check("a scheduled drain")

    from datetime import timedelta
    from portal.models import utcnow
    start = utcnow() + timedelta(days=1)
    page.goto(base + "/admin/maintenance")
    page.fill("textarea[name=message]", "机房电源检修")
    page.fill("input[name=starts]", f"{start:%Y-%m-%dT%H:%M}")
    page.fill("input[name=ends]", f"{start + timedelta(hours=2):%Y-%m-%dT%H:%M}")
    page.select_option("select[name=nodes]", ["a100-0"])
    page.click("#maintenance-form button[type=submit]")
    page.wait_for_selector(".maintenance-banner")
    assert "机房电源检修" in page.inner_text(".maintenance-banner")
    check("an announced maintenance")

    page.goto(base + "/usage?scope=all")
    check("usage")
    with page.expect_download() as download:
        page.click("a[href*='/usage.csv'], a[href*='group=user']")
    with open(download.value.path(), "rb") as f:
        assert f.read(3) == b"\xef\xbb\xbf"  # opens as UTF-8 in spreadsheet programs on Chinese Windows

    page.goto(base + "/admin/audit")
    page.evaluate("window.__notReloaded = true")
    page.select_option("select[name=action]", "node.drain_scheduled")
    page.wait_for_function("() => document.querySelectorAll('#audit-table tbody tr').length === 1")
    assert "node.drain_scheduled" in page.inner_text("#audit-table") and page.evaluate("window.__notReloaded") is True
    check("the audit log, filtered")
