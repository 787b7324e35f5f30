"""Lists cost a fixed handful of SQL queries however many rows they show (no N+1)."""
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from portal.extensions import db
from portal.models import Account, AccountGpuQuota, AuditEntry, Membership, User


@contextmanager
def count_queries(app):
    statements = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def crowd(app, make):
    """120 users, 60 accounts with per-model quotas and members, 200 audit entries."""
    admin = make.user("root", role="admin")

    def fill(s):
        users = [User(username=f"user{n:03d}", display_name=f"用户 {n}") for n in range(120)]
        s.add_all(users)
        s.flush()
        for n in range(60):
            account = Account(name=f"lab-{n:02d}", gpu_quota=8)
            account.gpu_model_quotas = [AccountGpuQuota(gpu_model="A100", gpus=4), AccountGpuQuota(gpu_model="V100", gpus=4)]
            account.memberships = [Membership(user_id=users[n].id, role="manager"),
                                   Membership(user_id=users[n + 1].id, role="member")]
            s.add(account)
        s.add_all(AuditEntry(actor_id=admin, actor_name="root", action="user.role", target_type="user",
                             target_id=str(n), detail={"n": n}) for n in range(200))
        s.commit()
        return s.query(Account).filter_by(name="lab-05").one().id

    lab = make.query(fill)
    return admin, lab


@pytest.mark.parametrize("url, limit", [
    ("/admin/users", 3), ("/admin/users?q=user0&page=2", 3), ("/admin/accounts", 3),
    ("/admin/accounts?q=lab", 3), ("/admin/audit", 3), ("/", 3),
])
def test_list_pages_use_a_fixed_number_of_queries(app, client, crowd, url, limit):
    admin, _ = crowd
    client.login(admin)
    client.get(url)  # warm-up (first request of the app may reflect or create defaults)
    with count_queries(app) as statements:
        response = client.get(url)
    assert response.status_code == 200
    assert len(statements) <= limit, "\n\n".join(statements)


def test_account_page_with_members(app, client, crowd):
    admin, lab = crowd
    client.login(admin)
    with count_queries(app) as statements:
        assert client.get(f"/admin/accounts/{lab}").status_code == 200
    assert len(statements) <= 4, "\n\n".join(statements)
