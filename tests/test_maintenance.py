"""Maintenance, announced: a banner on every page until it ends (node names only for signed-in
users), a notice and a mail to the owners of the jobs it touches and to nobody else, its words on
those jobs' pages, refused input, cancel. (Drains with a grace period, and a maintenance that
drains its nodes, run against kubesim in test_cluster_view.)"""
from datetime import datetime, timedelta

import pytest

from conftest import rows_of
from portal.extensions import db
from portal.models import AuditEntry, Notification, OutboxMessage, utcnow


def _when(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M")


@pytest.fixture
def site(app, make):
    ids = {"root": make.user("root", role="admin"), "alice": make.user("alice"), "bob": make.user("bob")}
    ids["lab"] = make.account("vision-lab", members={ids["alice"]: "member", ids["bob"]: "member"})
    make.node("a100-0")
    make.node("a100-1")
    ids["a_job"] = make.job(ids["alice"], ids["lab"], state="Running", display_name="alice-train", gpus=1,
                            pods=[{"name": "alice-pod", "node": "a100-0", "phase": "Running"}])
    ids["b_job"] = make.job(ids["bob"], ids["lab"], state="Running", display_name="bob-train", gpus=1,
                            pods=[{"name": "bob-pod", "node": "a100-1", "phase": "Running"}])
    ids["old"] = make.job(ids["bob"], ids["lab"], state="Succeeded", display_name="bob-old")
    make.placement("a100-0", ids["a_job"])
    make.placement("a100-1", ids["b_job"])
    return ids


def announce(client, **form):
    start = utcnow() + timedelta(hours=2)
    data = {"message": "Rack r1 power work", "starts": _when(start), "ends": _when(start + timedelta(hours=3))}
    data.update(form)
    return client.post("/admin/maintenance", data)


def test_an_announcement_is_a_banner_everywhere_and_a_notice_to_the_owners_it_touches(app, site, new_client):
    root, alice, bob = (new_client().login(site[n]) for n in ("root", "alice", "bob"))
    response = announce(root, nodes=["a100-0"])
    assert response.status_code == 303
    assert "1 owner of jobs it touches was told" in root.get("/admin/maintenance").get_data(as_text=True)
    for client, path in ((bob, "/jobs"), (bob, "/"), (alice, "/nodes"), (root, "/admin/users")):
        page = client.get(path).get_data(as_text=True)
        assert 'class="maintenance-banner"' in page and "Rack r1 power work" in page and "a100-0" in page, path
    anonymous = new_client().get("/login").get_data(as_text=True)
    assert "Rack r1 power work" in anonymous and "a100-0" not in anonymous and "some nodes" in anonymous
    # alice's job runs on a100-0: her notice, her mail, her job's page; bob's does not
    notices = {(n.user_id, n.kind) for n in rows_of(app, Notification)}
    assert notices == {(site["alice"], "maintenance")}
    assert [(o.user_id, o.kind) for o in rows_of(app, OutboxMessage)] == [(site["alice"], "maintenance")]
    listed = alice.get("/notifications").get_data(as_text=True)
    assert "Maintenance announced" in listed and "Rack r1 power work" in listed
    job_page = alice.get(f"/jobs/{site['a_job']}").get_data(as_text=True)
    assert "runs on a node under maintenance" in job_page
    assert "runs on a node under maintenance" not in bob.get(f"/jobs/{site['b_job']}").get_data(as_text=True)
    # in Chinese too
    bob.post("/settings/language", {"lang": "zh", "next": "/jobs"})
    assert "维护" in bob.get("/jobs").get_data(as_text=True)
    # cancelled: the banner goes
    with app.app_context():
        from portal.models import Maintenance
        mid = db.session.query(Maintenance).one().id
    assert root.post(f"/admin/maintenance/{mid}/cancel", {}).status_code == 303
    assert "Rack r1 power work" not in bob.get("/jobs").get_data(as_text=True)
    assert root.post(f"/admin/maintenance/{mid}/cancel", {}).status_code == 409
    actions = [e.action for e in rows_of(app, AuditEntry) if e.action.startswith("maintenance.")]
    assert actions == ["maintenance.announce", "maintenance.cancel"]


def test_a_whole_cluster_announcement_tells_every_owner_of_an_active_job_once(app, site, new_client):
    root = new_client().login(site["root"])
    assert announce(root).status_code == 303
    assert sorted(n.user_id for n in rows_of(app, Notification)) == sorted([site["alice"], site["bob"]])
    page = new_client().login(site["bob"]).get("/").get_data(as_text=True)
    assert "whole cluster" in page


@pytest.mark.parametrize("form, field_words", [
    ({"message": ""}, "Say what happens"),
    ({"starts": "tomorrow"}, "Give a date and time"),
    ({"starts": "2026-02-30T10:00"}, "Give a date and time"),
    ({"starts": _when(datetime(2030, 1, 1, 12)), "ends": _when(datetime(2030, 1, 1, 11))}, "end must come after"),
    ({"starts": _when(datetime(2020, 1, 1, 12)), "ends": _when(datetime(2020, 1, 1, 13))}, "has passed"),
    ({"nodes": ["a100-0", "no-such-node"]}, "No node named no-such-node"),
    ({"drain": "1"}, "Choose the nodes to drain"),
    ({"drain": "1", "nodes": ["a100-0"], "drain_grace": "-5"}, "Between 0 and"),
    ({"message": "x" * 501}, "At most 500 characters"),
])
def test_refused_announcements_say_why_and_write_nothing(app, site, new_client, form, field_words):
    root = new_client().login(site["root"])
    response = announce(root, **form)
    assert response.status_code == 422
    assert field_words in response.get_data(as_text=True)
    from portal.models import Maintenance
    assert rows_of(app, Maintenance) == [] and rows_of(app, Notification) == []


def test_only_admins_announce_and_cancel(app, site, new_client):
    alice = new_client().login(site["alice"])
    assert announce(alice).status_code == 403
    assert alice.get("/admin/maintenance").status_code == 403
    csrfless = new_client().login(site["root"])
    assert csrfless.post("/admin/maintenance", {"message": "x"}, csrf=False).status_code == 400

