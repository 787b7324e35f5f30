"""Lists cost a fixed handful of SQL queries however many rows they show (no N+1)."""
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from portal.extensions import db
from portal.models import Account, AccountGpuQuota, AuditEntry, Job, JobTemplate, Membership, User


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
        accounts = s.query(Account).all()
        s.add_all(Job(user_id=admin if n % 2 else users[n % 120].id, account_id=accounts[n % 60].id, job_type="batch",
                      state=("Running", "Succeeded", "Pending", "Failed")[n % 4], display_name=f"任务 {n}", gpus=n % 3,
                      gpu_model="A100") for n in range(150))
        s.add_all(JobTemplate(user_id=admin if n % 2 else users[n].id, account_id=accounts[n % 60].id, name=f"t{n}",
                              job_type="batch", spec={}, shared=True) for n in range(40))
        s.add_all(AuditEntry(actor_id=admin, actor_name="root", action="user.role", target_type="user",
                             target_id=str(n), detail={"n": n}) for n in range(200))
        s.commit()
        return s.query(Account).filter_by(name="lab-05").one().id

    lab = make.query(fill)
    return admin, lab


@pytest.mark.parametrize("url, limit", [
    ("/admin/users", 3), ("/admin/users?q=user0&page=2", 3), ("/admin/accounts", 3),
    ("/admin/accounts?q=lab", 3), ("/admin/audit", 3),
    # home: user, memberships, their model quotas, heartbeat, my active jobs, usage of all my accounts, free GPUs
    # per model and what pending jobs wait for (both short-cached in production); every full page
    # also reads the maintenance banner (short-cached in production)
    ("/", 9),
    # job lists: user, managed accounts (scope tabs), my accounts (filter), heartbeat, count, page
    ("/jobs", 6), ("/jobs?scope=all&state=active&sort=gpus", 6), ("/jobs?scope=account&q=任务", 6),
    # templates: user, count, page (with owners and accounts joined)
    ("/templates", 3),
])
def test_list_pages_use_a_fixed_number_of_queries(app, client, crowd, url, limit):
    admin, _ = crowd
    client.login(admin)
    client.get(url)  # warm-up (first request of the app may reflect or create defaults)
    with count_queries(app) as statements:
        response = client.get(url)
    assert response.status_code == 200
    assert len(statements) <= limit, "\n\n".join(statements)


def test_polled_fragments_are_cheap(app, client, crowd, make):
    admin, _ = crowd
    client.login(admin)
    job = make.query(lambda s: s.query(Job).filter(Job.state == "Pending", Job.gpus > 0).first().id)
    for url, limit in ((f"/jobs/{job}/status", 9), ("/jobs?scope=all&page=2", 4)):
        headers = {"HX-Request": "true", "HX-Target": "jobs-table"}
        with count_queries(app) as statements:
            assert client.get(url, headers=headers).status_code == 200
        # status: user, job, events + the pending outlook (ahead, waiting, free GPUs, running jobs)
        assert len(statements) <= limit, "\n\n".join(statements)


def test_account_page_with_members(app, client, crowd):
    admin, lab = crowd
    client.login(admin)
    with count_queries(app) as statements:
        assert client.get(f"/admin/accounts/{lab}").status_code == 200
    assert len(statements) <= 4, "\n\n".join(statements)


@pytest.mark.parametrize("url", ["/jobs", "/jobs?scope=all&state=active&sort=gpus", "/jobs?scope=account&q=任务"])
def test_job_lists_rendered_afresh_add_one_query(app, client, crowd, url):
    """With no row cached (a new process, or every shown job changed), the rows are read in full
    in one more query, not one per row."""
    from portal.views.job_rows import EXTENSION
    admin, _ = crowd
    client.login(admin)
    client.get(url)
    app.extensions.pop(EXTENSION, None)
    with count_queries(app) as statements:
        response = client.get(url)
    assert response.status_code == 200 and "任务" in response.get_data(as_text=True)
    assert len(app.extensions[EXTENSION]) > 10  # the rows were rendered afresh
    assert len(statements) <= 7, "\n\n".join(statements)


@pytest.fixture
def racks(app, make):
    """60 GPU nodes, each with 4 pods (portal jobs) on it and 8 GPU devices."""
    from portal.models import GpuDevice, Placement
    admin = make.user("root", role="admin")
    lab = make.account("lab", members={admin: "manager"})

    def fill(s):
        from portal.models import Node
        for n in range(60):
            s.add(Node(name=f"gpu-{n:02d}", gpu_model="A100", gpus=8, gpus_requested=4, ready=True,
                       labels={"a": "b", "rack": str(n)}, taints=[], conditions=[], version=1))
        jobs = [Job(user_id=admin, account_id=lab, job_type="batch", state="Running", display_name=f"任务 {n}", gpus=1)
                for n in range(240)]
        s.add_all(jobs)
        s.flush()
        for i, job in enumerate(jobs):
            s.add(Placement(namespace="crater-jobs", pod=f"crater-{job.id}-x", node=f"gpu-{i % 60:02d}", job_id=job.id, gpus=1))
            s.add(GpuDevice(node=f"gpu-{i % 60:02d}", index=i // 60, uuid=f"GPU-{i}", util=50.0, namespace="crater-jobs",
                            pod=f"crater-{job.id}-x", job_id=job.id))
        s.commit()
    make.query(fill)
    return admin


@pytest.mark.parametrize("url, limit", [
    # nodes: user, heartbeat, version (2), summary (2), page of nodes with its count; the accounts'
    # guaranteed, borrowed and lent GPUs (GPUs per account and class, accounts, names)
    ("/nodes", 11), ("/nodes?model=A100&free=2&sort=free", 11), ("/admin/nodes?state=Ready", 11),
    # a node: user, heartbeat, node, managed accounts, placements with jobs, owners, accounts, GPU devices, accounts list,
    # (admins) a scheduled drain, the maintenance banner
    ("/nodes/gpu-07", 10),
    # usage: user, managed accounts (x2: scope, choices), rollups by user and account, names (2), models, days
    ("/usage?scope=all", 10),
])
def test_cluster_pages_use_a_fixed_number_of_queries(app, client, racks, url, limit):
    client.login(racks)
    client.get(url)
    app.extensions.pop("crater_nodes_rendered", None)  # rendered afresh, not from the table cache
    with count_queries(app) as statements:
        response = client.get(url)
    assert response.status_code == 200
    assert len(statements) <= limit, "\n\n".join(statements)


def test_queue_pages_and_a_queued_jobs_poll_use_a_fixed_number_of_queries(app, client, crowd, make):
    """120 queued jobs of 60 members in one account: the queue page, the list of queues and a
    queued job's polled status cost the same few queries as with one."""
    admin, lab = crowd

    def queue_up(s):
        members = [User(username=f"q{n:03d}") for n in range(60)]
        s.add_all(members)
        s.flush()
        s.add_all(Membership(user_id=u.id, account_id=lab, role="member") for u in members)
        s.add_all(Job(user_id=members[n % 60].id, account_id=lab, job_type="batch", state="Queued", gpus=2,
                      gpu_model="A100", display_name=f"排队 {n}", queue_position=n + 1,
                      queue_blocker={"kind": "gpus", "used": 8, "limit": 8, "ask": 2, "account": "lab-05"})
                  for n in range(120))
        s.commit()
        return s.query(Job).filter_by(state="Queued").first().id
    queued = make.query(queue_up)
    client.login(admin)
    # queue page: user, account, the queue's nine reads (restricted users, queued, account, model
    # quotas, members, admitted jobs, usage, models under maintenance), the page's jobs, the owners,
    # the maintenance banner (short-cached in production)
    for url, limit in ((f"/queues/{lab}", 13), ("/queues", 6), (f"/jobs/{queued}/status", 7)):
        client.get(url)
        with count_queries(app) as statements:
            response = client.get(url)
        assert response.status_code == 200 and "排队" in response.get_data(as_text=True) or url != f"/queues/{lab}"
        assert len(statements) <= limit, (url, "\n\n".join(statements))
