"""Accessibility in a real Chromium: axe-core (vendored from npm, tests/vendor/axe-core) over every
page type (home, lists, forms and forms with errors, a job page in each state, node and queue
pages, the admin pages, error pages) for an admin and a plain user, in English and in Chinese: no
serious or critical violation. Forms work by keyboard alone, and a polled status change is read
out by the page's live region."""
import json
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import Factory
from routes import fill, rules
from test_browser import ARTIFACTS, browser, serving  # noqa: F401  (the browser fixture)

pytestmark = pytest.mark.browser
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")
STATES = ("Queued", "Submitting", "Pending", "Running", "Succeeded", "Failed", "Stopped", "StoppedByAdmin", "Lost")
NOT_PAGES = ("/download", ".json", ".csv", "/metrics", "/healthz", "/readyz", "/logout", "/login/sso", "/auth/callback",
             "/logs/follow", "/terminal/ws", "/auth/ingress")  # a stream, a websocket, the ingress's question


@pytest.fixture
def world(tmp_path, fresh_sim):
    sim = fresh_sim(time_scale=1)[0]
    with serving(tmp_path, KUBECONFIG=str(sim.write_kubeconfig(tmp_path / "kc")), LOCAL_LOGIN=True) as (app, base):
        make = Factory(app)
        ids = {"admin": make.user("root", role="admin", password="root-password-1", display_name="Root Admin"),
               "user": make.user("bob", password="bob-password-1", display_name="Bob Li")}
        lab = make.account("vision-lab", display_name="Vision-Lab", gpu_quota=8, members={ids["user"]: "member"})
        now = datetime.utcnow()
        jobs = {}
        for _n, state in enumerate(STATES):
            extra = {"started_at": now - timedelta(hours=1)} if state in ("Running", "Succeeded", "Failed", "Stopped") else {}
            if state in ("Succeeded", "Failed", "Stopped", "StoppedByAdmin", "Lost"):
                extra["finished_at"] = now - timedelta(minutes=5)
            if state == "Queued":
                extra.update(queue_position=1, queue_estimate=now + timedelta(minutes=30),
                             queue_blocker={"kind": "gpus", "account": "vision-lab", "used": 8, "limit": 8, "ask": 2})
            jobs[state] = make.job(ids["user"], lab, job_type="jupyter" if state == "Running" else "batch", state=state,
                                   display_name=f"{state.lower()}-job", gpus=2, gpu_model="NVIDIA-A100-SXM4-80GB",
                                   reason="Unschedulable" if state == "Pending" else "", last_log="epoch 1\nepoch 2\n",
                                   exit_code=1 if state == "Failed" else None, time_limit_seconds=7200, **extra)
        ids.update(account_id=lab, job_id=jobs["Running"], template_id=make.template(ids["user"], lab, shared=True),
                   image_id=make.image(), name=make.node("a100-0"), jobs=jobs)
        make.placement("a100-0", jobs["Running"], gpus=2)
        ids["request_id"] = make.extension_request(jobs["Running"], ids["user"])
        yield app, base, ids


def page_urls(app, ids) -> list[str]:
    values = {**ids, "user_id": ids["user"], "job_type": "batch", "decision": "approve", "policy": "idle_gpu",
              "action": "suspend"}
    urls = {fill(rule, values) for _m, rule in rules(app, {"GET"})}
    urls |= {f"/jobs/{job_id}" for job_id in ids["jobs"].values()}  # a job page in each state
    urls |= {"/jobs?scope=all", "/jobs/999999", "/admin/accounts/999999", "/nodes/no-such-node"}  # lists, 404s
    return sorted(u for u in urls if not any(u.endswith(x) or x in u for x in NOT_PAGES))


def run_axe(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    return page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']})).violations
        .map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))""")


def sign_in(context, base, username, password, lang):
    page = context.new_page()
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(base + "/")
    if lang == "zh":
        page.click("button[lang=zh]")
        page.wait_for_selector("html[lang=zh-CN]")
    return page


def forms_with_errors(page, base) -> list[str]:
    """Submit forms wrongly, the way a user would, and leave the page showing the errors."""
    page.goto(base + "/jobs/new/batch")
    page.fill("#gpus", "-3")
    page.click("#submit-job")
    page.wait_for_selector(".field-error, .error, [aria-invalid=true]")
    return None


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_page_type_passes_axe_for_an_admin_and_a_user(browser, world, lang):  # noqa: F811
    app, base, ids = world
    report, blocking = {}, {}
    checked = 0
    for role, username, password in (("admin", "root", "root-password-1"), ("user", "bob", "bob-password-1")):
        context = browser.new_context(bypass_csp=True, locale="zh-CN" if lang == "zh" else "en-US")
        page = sign_in(context, base, username, password, lang)
        visits = [(url, lambda u=url, page=page: page.goto(base + u)) for url in page_urls(app, ids)]
        visits.append(("POST /jobs/new/batch (field errors)", lambda page=page: forms_with_errors(page, base)))
        for label, visit in visits:
            response = visit()
            if response is not None and not response.text().lstrip().lower().startswith("<!doctype html"):
                continue  # a fragment (htmx), not a page
            if role == "user" and response is not None and response.status == 403 and checked and any(
                    r.get("status") == 403 for r in report.values()):
                continue  # one forbidden page is enough
            violations = run_axe(page)
            checked += 1
            report[f"{role} {label}"] = {"status": response.status if response is not None else None,
                                         "violations": violations}
            bad = [f"{v['id']} ({v['impact']}): {v['nodes']}" for v in violations if v["impact"] in BLOCKING]
            if bad:
                blocking[f"{role} {label}"] = bad
        anonymous = browser.new_context(bypass_csp=True, locale="en-US").new_page()
        anonymous.goto(base + "/login")
        anonymous.fill("#username", "root")
        anonymous.fill("#password", "wrong")
        anonymous.click("form[action='/login'] button[type=submit]")
        anonymous.wait_for_selector("[role=alert], .flash.error")
        violations = run_axe(anonymous)
        report["anonymous /login (wrong password)"] = {"status": 401, "violations": violations}
        checked += 1
        if [v for v in violations if v["impact"] in BLOCKING]:
            blocking["anonymous /login"] = violations
        anonymous.context.close()
        context.close()
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, f"axe-{lang}.json"), "w") as out:
        json.dump(report, out, indent=1, ensure_ascii=False)
    assert checked >= 60
    assert blocking == {}, json.dumps(blocking, indent=1, ensure_ascii=False)


def test_a_job_is_submitted_by_keyboard_alone_and_its_state_is_announced(browser, world):  # noqa: F811
    app, base, ids = world
    context = browser.new_context(locale="en-US")
    page = sign_in(context, base, "bob", "bob-password-1", "en")
    page.goto(base + "/jobs/new")

    def tab_to(selector, limit=80):
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"Tab never reached {selector}")

    page.keyboard.press("Tab")  # the first stop skips the navigation, and is visible when focused
    assert page.evaluate("document.activeElement.classList.contains('skip-link')")
    assert page.evaluate("document.activeElement.getBoundingClientRect().top >= 0")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "content"
    tab_to("#new-batch")
    style = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert style not in ("none", "")  # a visible focus
    page.keyboard.press("Enter")
    page.wait_for_selector("#display_name")
    tab_to("#display_name")
    page.keyboard.type("typed-by-keyboard")
    tab_to("#account_id")
    page.keyboard.type("Vision")  # a closed select takes typed letters
    tab_to("#image")
    page.keyboard.type("busybox:1.36")
    tab_to("#command")
    page.keyboard.type("echo hello")
    tab_to("#submit-job")
    page.keyboard.press("Enter")
    page.wait_for_selector("#job-status")
    assert "typed-by-keyboard" in page.inner_text("h1")
    job_id = int(page.url.rstrip("/").rsplit("/", 1)[1])

    # The page polls its status; when the state changes, the live region says so.
    page.evaluate("""() => { window.__said = [];
        new MutationObserver(() => window.__said.push(document.getElementById('live-announcer').textContent))
            .observe(document.getElementById('live-announcer'), {childList: true, characterData: true, subtree: true}); }""")
    from portal.extensions import db
    from portal.models import Job
    with app.app_context():
        db.session.query(Job).filter_by(id=job_id).update({"state": "Running", "version": Job.version + 5,
                                                            "started_at": datetime.utcnow()})
        db.session.commit()
    deadline = time.monotonic() + 15
    while not page.evaluate("window.__said.join(' ')"):
        assert time.monotonic() < deadline, "the state change was never announced"
        time.sleep(0.2)
    assert f"Job {job_id}: Running" in page.evaluate("window.__said.join(' ')")
    assert page.get_attribute("#live-announcer", "aria-live") == "polite"
    context.close()
