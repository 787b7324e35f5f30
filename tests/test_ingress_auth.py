"""Notebooks behind the portal's own sign-in: kubesim's ingress stand-in serves the JupyterLab
job's Ingress and asks the portal (ingress-nginx external auth) before every request. The owner's
browser reaches the notebook without a token in any link (the token goes from the portal's answer
to the backend); an anonymous one is sent to sign in and comes back; another user is refused; an
admin passes; once the job has ended nothing opens."""
import re
from urllib.parse import unquote

import pytest
import requests

from conftest import Factory
from kubesim.resources import lookup
from kubesim_fixtures import wait_for
from process_stack import CSRF, signed_in, submit_form
from test_browser import serving


@pytest.fixture
def portal(tmp_path, fresh_sim):
    from portal.cluster.setup import cluster_for
    from portal.sync.syncer import SyncSettings, Syncer

    sim = fresh_sim(time_scale=2, ingress_port=0)[0]
    ingress = f"http://localhost:{sim.ingress_port}"
    with serving(tmp_path, KUBECONFIG=str(sim.write_kubeconfig(tmp_path / "kc")), INGRESS_URL=ingress) as (app, base):
        app.config.update(INGRESS_AUTH_URL=f"{base}/auth/ingress", PUBLIC_URL=base)  # before the cluster is first used
        syncer = Syncer(app, cluster_for(app), settings=SyncSettings(lease_seconds=3, watch_timeout=5)).start()
        make = Factory(app)
        alice, bob = make.user("alice", password="alice-password-1"), make.user("bob", password="bob-password-12")
        make.user("root", password="root-password-1", role="admin")
        lab = make.account("vision-lab", gpu_quota=8, members={alice: "member", bob: "member"})
        yield app, base, ingress, lab, sim
        syncer.stop()


def test_the_owner_reaches_the_notebook_through_the_portals_sign_in_and_no_one_else(portal):
    app, base, ingress, lab, sim = portal
    alice = signed_in(base, "alice", "alice-password-1")
    page = submit_form(alice, base, lab, job_type="jupyter", display_name="notebook",
                       image="quay.io/jupyter/pytorch-notebook", notify="")
    job_id = int(re.search(r"/jobs/(\d+)$", page.url).group(1))
    wait_for(lambda: 'id="open-jupyter"' in alice.get(f"{base}/jobs/{job_id}", timeout=10).text, timeout=30,
             what="the notebook running")
    link = alice.get(f"{base}/jobs/{job_id}/jupyter", timeout=10, allow_redirects=False)
    assert link.status_code == 303 and link.headers["Location"] == f"{ingress}/jupyter/crater-{job_id}/"
    assert "token" not in link.headers["Location"]  # no shared secret in the link
    notebook = f"{ingress}/jupyter/crater-{job_id}/lab"

    # The owner: through, and the backend got the token from the portal's answer.
    mine = alice.get(notebook, timeout=10)
    assert mine.status_code == 200 and "JupyterLab" in mine.text and "token came from the auth answer" in mine.text

    # Anonymous: sent to the portal's sign-in, then back to the notebook.
    anonymous = requests.Session()
    first = anonymous.get(notebook, timeout=10, allow_redirects=False)
    assert first.status_code == 302 and first.headers["Location"].startswith(f"{base}/login?rd=")
    assert unquote(first.headers["Location"].split("rd=", 1)[1]) == notebook
    login_page = anonymous.get(first.headers["Location"], timeout=10)
    back = anonymous.post(login_page.url, data={"csrf_token": CSRF.search(login_page.text).group(1), "username": "alice",
                                                "password": "alice-password-1",
                                                "next": re.search(r'name="next"[^>]*value="([^"]*)"', login_page.text).group(1)},
                          timeout=10)
    assert back.url == notebook and "JupyterLab" in back.text

    # Another member of the account: refused (403, not a loop through the sign-in page).
    bob = signed_in(base, "bob", "bob-password-12")
    assert bob.get(notebook, timeout=10, allow_redirects=False).status_code == 403
    # A leaked URL with a forged cookie opens nothing.
    assert requests.get(notebook, headers={"Cookie": "session=forged"}, timeout=10, allow_redirects=False).status_code == 302
    # An admin passes.
    root = signed_in(base, "root", "root-password-1")
    assert root.get(notebook, timeout=10).status_code == 200
    # The portal's answer alone: no original URL, or a path that is not a notebook's, is refused.
    assert alice.get(f"{base}/auth/ingress", timeout=10).status_code == 403
    assert alice.get(f"{base}/auth/ingress", headers={"X-Original-URL": f"{ingress}/other/crater-{job_id}/"},
                     timeout=10).status_code == 403
    assert requests.get(f"{base}/auth/ingress", headers={"X-Original-URL": notebook}, timeout=10).status_code == 401

    # The job ends: nothing opens any more.
    token = CSRF.search(alice.get(f"{base}/jobs/{job_id}", timeout=10).text).group(1)
    alice.post(f"{base}/jobs/{job_id}/stop", data={"csrf_token": token}, timeout=30)
    wait_for(lambda: alice.get(notebook, timeout=10, allow_redirects=False).status_code in (403, 404, 503), timeout=30,
             what="the ended notebook refused")


def test_a_job_port_opens_behind_the_sign_in_for_its_owner_and_closes(portal):
    """The owner of a running job opens port 6006 from the job page: an address of its own behind
    the same sign-in (the owner and admins pass, another user and an anonymous browser do not);
    audited; closed, it opens nothing; ports are refused on a job not theirs or not running."""
    from portal.extensions import db
    from portal.models import AuditEntry
    app, base, ingress, lab, sim = portal
    alice = signed_in(base, "alice", "alice-password-1")
    page = submit_form(alice, base, lab, display_name="tensorboard", command="sleep infinity", notify="")
    job_id = int(re.search(r"/jobs/(\d+)$", page.url).group(1))
    wait_for(lambda: 'id="open-port"' in alice.get(f"{base}/jobs/{job_id}", timeout=10).text, timeout=30,
             what="the job running")

    def post(session, path, **data):
        token = CSRF.search(session.get(f"{base}/jobs/{job_id}", timeout=10).text).group(1)
        return session.post(f"{base}/jobs/{job_id}{path}", data={"csrf_token": token, **data}, timeout=30)

    bad = post(alice, "/ports", port="80", name="web")
    assert "from 1024 to 65535" in bad.text
    assert "JupyterLab" in post(alice, "/ports", port="8888").text
    opened = post(alice, "/ports", port="6006", name="TensorBoard")
    url = f"{ingress}/ports/crater-{job_id}-6006/"
    assert f'href="{url}"' in opened.text and "TensorBoard" in opened.text
    assert alice.get(url, timeout=10).status_code == 200 and "Port 6006" in alice.get(url, timeout=10).text
    assert requests.get(url, timeout=10, allow_redirects=False).status_code == 302  # anonymous: sign in first
    bob = signed_in(base, "bob", "bob-password-12")
    assert bob.get(url, timeout=10, allow_redirects=False).status_code == 403
    assert signed_in(base, "root", "root-password-1").get(url, timeout=10).status_code == 200
    bob_token = re.search(r'name="csrf-token" content="([^"]+)"', bob.get(base + "/", timeout=10).text).group(1)
    bob.post(f"{base}/jobs/{job_id}/ports", data={"csrf_token": bob_token, "port": "7000"}, timeout=10)  # not his job
    ingresses = [i["metadata"]["name"] for i in sim.store.all(lookup("networking.k8s.io", "v1", "ingresses"))]
    assert f"crater-{job_id}-p6006" in ingresses and f"crater-{job_id}-p7000" not in ingresses
    # The port not opened: nothing there.
    assert alice.get(f"{ingress}/ports/crater-{job_id}-7001/", timeout=10, allow_redirects=False).status_code == 404
    closed = post(alice, "/ports/6006/close")
    assert "is closed" in closed.text and f'href="{url}"' not in closed.text
    assert alice.get(url, timeout=10, allow_redirects=False).status_code == 404
    with app.app_context():
        actions = [a.action for a in db.session.query(AuditEntry).filter(AuditEntry.action.like("job.port_%"))]
        db.session.remove()
    assert actions == ["job.port_open", "job.port_close"]
    # Opened again, then the job is stopped: the port's objects go with its Job, and nothing answers.
    post(alice, "/ports", port="6006", name="TensorBoard")
    post(alice, "/stop")
    wait_for(lambda: not [i for i in sim.store.all(lookup("networking.k8s.io", "v1", "ingresses"))
                          if i["metadata"]["name"] == f"crater-{job_id}-p6006"], timeout=30, what="the port's Ingress gone")
    assert alice.get(url, timeout=10, allow_redirects=False).status_code == 404
    assert 'id="open-port"' not in alice.get(f"{base}/jobs/{job_id}", timeout=10).text


def test_ports_asked_for_on_the_form_open_with_the_job(portal):
    """Ports named on the submission form (and in the API's spec) are published with the job's
    other objects and answer, behind the sign-in, once it runs; bad ones are refused with the field."""
    app, base, ingress, lab, sim = portal
    alice = signed_in(base, "alice", "alice-password-1")

    def submit(**fields):
        return submit_form(alice, base, lab, display_name="with ports", command="sleep infinity", notify="", **fields)
    for bad, words in (("80", "1024 to 65535"), ("8888", "JupyterLab"), ("6006, six", "separated by commas"),
                       ("6006 6006", "different ports")):
        refused = submit(ports=bad)
        assert refused.status_code == 422 and words in refused.text, (bad, refused.status_code)
    page = submit(ports="6006, 8080")
    job_id = int(re.search(r"/jobs/(\d+)$", page.url).group(1))
    wait_for(lambda: 'id="open-port"' in alice.get(f"{base}/jobs/{job_id}", timeout=10).text, timeout=30,
             what="the job running")
    shown = alice.get(f"{base}/jobs/{job_id}", timeout=10).text
    for port in (6006, 8080):
        url = f"{ingress}/ports/crater-{job_id}-{port}/"
        assert f'href="{url}"' in shown
        assert alice.get(url, timeout=10).status_code == 200
        assert requests.get(url, timeout=10, allow_redirects=False).status_code == 302
    assert "ports: [6006, 8080]" in shown or "- 6006" in shown  # the submitted spec keeps them (clone, templates)
