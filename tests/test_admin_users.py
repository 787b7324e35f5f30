"""/admin/users: search, filters, pagination, role changes, deactivation, and their audit entries."""
from portal.models import AuditEntry, User


def listed(page: str, username: str) -> bool:
    return f"<td><code>{username}</code></td>" in page


def audit(make, action):
    return make.query(lambda s: [(e.actor_name, e.target_id, e.detail) for e in
                                 s.query(AuditEntry).filter_by(action=action)])


def test_search_matches_username_display_name_and_email(client, make):
    client.login(make.user("root", role="admin"))
    make.user("wang", display_name="王小明", email="xm@lab.edu")
    make.user("li", email="li@other.edu")
    page = client.get("/admin/users?q=王").get_data(as_text=True)
    assert listed(page, "wang") and not listed(page, "li")
    page = client.get("/admin/users?q=lab.edu").get_data(as_text=True)
    assert listed(page, "wang") and not listed(page, "li")


def test_search_treats_percent_and_underscore_literally(client, make):
    client.login(make.user("root", role="admin"))
    make.user("a_b")
    make.user("axb")
    page = client.get("/admin/users?q=a_b").get_data(as_text=True)
    assert listed(page, "a_b") and not listed(page, "axb")


def test_filters_by_role_and_status(client, make):
    client.login(make.user("root", role="admin"))
    make.user("sleepy", active=False)
    make.user("busy")
    page = client.get("/admin/users?status=inactive").get_data(as_text=True)
    assert listed(page, "sleepy") and not listed(page, "busy") and not listed(page, "root")
    page = client.get("/admin/users?role=admin").get_data(as_text=True)
    assert listed(page, "root") and not listed(page, "busy")


def many_users(app, client, make, page_size, count):
    """An admin (sorting first) signed in, `count` more users, and `page_size` rows a page."""
    app.config["PAGE_SIZE"] = page_size
    client.login(make.user("aaa-admin", role="admin"))
    for n in range(count):
        make.user(f"user{n:02d}")


def test_pagination_splits_the_list(app, client, make):
    many_users(app, client, make, 5, 12)
    first = client.get("/admin/users").get_data(as_text=True)
    third = client.get("/admin/users?page=3").get_data(as_text=True)
    assert listed(first, "aaa-admin") and listed(first, "user03") and not listed(first, "user04")
    assert "Page 1 of 3" in first and "1–5 of 13" in first
    assert listed(third, "user11") and "Page 3 of 3" in third
    beyond = client.get("/admin/users?page=99")
    assert beyond.status_code == 200 and "No users match." in beyond.get_data(as_text=True)


def test_active_search_returns_only_the_table(client, make):
    client.login(make.user("root", role="admin"))
    response = client.get("/admin/users?q=ro", headers={"HX-Request": "true", "HX-Target": "users-table"})
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<div id="users-table">') and "<html" not in body


def test_make_admin_swaps_the_row_and_is_audited(client, make):
    client.login(make.user("root", role="admin"))
    bob = make.user("bob")
    response = client.post(f"/admin/users/{bob}/role", {"role": "admin"}, htmx=True)
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith(f'<tr id="user-{bob}"') and "bob is now admin" in body
    assert make.query(lambda s: s.get(User, bob).role) == "admin"
    assert audit(make, "user.role") == [("root", str(bob), {"from": "user", "to": "admin", "username": "bob"})]


def test_role_change_without_js_redirects_back(client, make):
    client.login(make.user("root", role="admin"))
    bob = make.user("bob")
    response = client.post(f"/admin/users/{bob}/role", {"role": "admin"})
    assert response.status_code == 303 and response.location.endswith("/admin/users")


def test_unknown_role_is_refused(client, make):
    client.login(make.user("root", role="admin"))
    bob = make.user("bob")
    assert client.post(f"/admin/users/{bob}/role", {"role": "god"}).status_code == 400
    assert make.query(lambda s: s.get(User, bob).role) == "user"


def test_deactivate_and_reactivate(client, make):
    client.login(make.user("root", role="admin"))
    bob = make.user("bob")
    client.post(f"/admin/users/{bob}/deactivate", htmx=True)
    assert make.query(lambda s: s.get(User, bob).active) is False
    client.post(f"/admin/users/{bob}/reactivate", htmx=True)
    assert make.query(lambda s: s.get(User, bob).active) is True
    assert len(audit(make, "user.deactivate")) == 1 and len(audit(make, "user.reactivate")) == 1


def test_admin_cannot_lock_themselves_out(client, make):
    root = make.user("root", role="admin")
    client.login(root)
    response = client.post(f"/admin/users/{root}/deactivate", htmx=True)
    assert response.status_code == 409
    assert response.headers["HX-Retarget"] == "#flash"
    assert "cannot deactivate yourself" in response.get_data(as_text=True)
    assert client.post(f"/admin/users/{root}/role", {"role": "user"}).status_code == 409
    assert make.query(lambda s: (s.get(User, root).active, s.get(User, root).role)) == (True, "admin")


def test_unknown_user_is_404(client, make):
    client.login(make.user("root", role="admin"))
    assert client.post("/admin/users/999999/deactivate").status_code == 404


def test_counting_stops_ten_pages_ahead(app, client, make):
    many_users(app, client, make, 2, 30)
    first = client.get("/admin/users").get_data(as_text=True)
    assert "1–2 of more than 20" in first and "Page 1<" in first and 'rel="next"' in first
    near_end = client.get("/admin/users?page=14").get_data(as_text=True)
    assert "27–28 of 31" in near_end and "Page 14 of 16" in near_end
    last = client.get("/admin/users?page=16").get_data(as_text=True)
    assert "31–31 of 31" in last and 'rel="next"' not in last


def test_the_audit_filters_offer_every_action_and_object_type_the_code_records(client, make):
    """Every action the code writes to the audit log (and every object type) is one the audit
    page's filters offer: read from the code itself, so a new audited action cannot be missed."""
    import pathlib
    import re

    from portal.services import audit
    root = pathlib.Path(__file__).resolve().parent.parent / "portal"
    recorded, types = set(), set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        for call in re.finditer(r"audit\.record\(([^\n]*)", text):
            literals = re.findall(r'"([a-z_]+(?:\.[a-z_]+)+)"', call.group(1))
            recorded |= set(literals)
            kinds = re.findall(r'f"(job\.[a-z_]+)\.\{kind\}"', call.group(1))
            recorded |= {f"{k}.{kind}" for k in kinds for kind in audit.WARNING_KINDS}
            kind = re.match(r'[^,]+,\s*(?:f?"[a-z_.{}]+"(?:\s+if[^,]+else\s+"[a-z_.]+")?),\s*"([a-z_]+)"', call.group(1))
            types |= {kind.group(1)} if kind else set()
    assert len(recorded) > 40
    assert recorded <= set(audit.known_actions()), recorded - set(audit.known_actions())
    assert types <= set(audit.known_target_types()), types - set(audit.known_target_types())
    admin = make.user("root", role="admin")
    client.login(admin)
    page = client.get("/admin/audit").get_data(as_text=True)
    assert all(f'<option value="{a}"' in page for a in ("job.preempt", "node.drain", "token.revoke", "job.warned.idle_gpu"))
    assert all(f'<option value="{t}"' in page for t in ("node", "job", "token", "policy"))
