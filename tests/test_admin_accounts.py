"""/admin/accounts: create, edit, delete (only without jobs), quotas (total and per GPU model),
bad input (422 with field errors, nothing written) and the audit trail."""
import pytest

from portal.models import Account, AccountGpuQuota, AuditEntry, Job

VALID = {"name": "vision-lab", "display_name": "视觉实验室", "description": "CV group", "gpu_quota": "16",
         "gpu_model_quotas": "NVIDIA-A100-SXM4-80GB: 8\nNVIDIA-GeForce-RTX-4090: 4", "cpu_quota": "256",
         "memory_quota_gib": "2048", "max_jobs": "20", "expires_on": "2027-07-01"}


@pytest.fixture
def admin(client, make):
    client.login(make.user("root", role="admin"))
    return client


def accounts(make):
    return make.query(lambda s: sorted(a.name for a in s.query(Account)))


def test_create_account_with_quotas(admin, make):
    response = admin.post("/admin/accounts/new", VALID)
    assert response.status_code == 303
    account = make.query(lambda s: s.query(Account).filter_by(name="vision-lab").one())
    assert (account.display_name, account.gpu_quota, account.cpu_quota, account.memory_quota_gib,
            account.max_jobs, str(account.expires_on)) == ("视觉实验室", 16, 256, 2048, 20, "2027-07-01")
    models = make.query(lambda s: {q.gpu_model: q.gpus for q in s.query(AccountGpuQuota)})
    assert models == {"NVIDIA-A100-SXM4-80GB": 8, "NVIDIA-GeForce-RTX-4090": 4}
    entry = make.query(lambda s: s.query(AuditEntry).filter_by(action="account.create").one())
    assert entry.actor_name == "root" and entry.detail["name"] == "vision-lab"
    assert entry.detail["gpu_model_quotas"]["NVIDIA-A100-SXM4-80GB"] == 8
    page = admin.get(response.location).get_data(as_text=True)
    assert "视觉实验室" in page and "NVIDIA-A100-SXM4-80GB: 8" in page


def test_empty_quotas_mean_no_limit(admin, make):
    assert admin.post("/admin/accounts/new", {"name": "open-lab"}).status_code == 303
    account = make.query(lambda s: s.query(Account).filter_by(name="open-lab").one())
    assert (account.gpu_quota, account.cpu_quota, account.memory_quota_gib, account.max_jobs) == (None,) * 4
    assert "no limit" in admin.get("/admin/accounts").get_data(as_text=True)


BAD = [
    ({"name": ""}, "name", "This field is required."),
    ({"name": "a" * 64}, "name", "Field cannot be longer than 63 characters."),
    ({"name": "Vision_Lab"}, "name", "Use lowercase letters"),
    ({"name": "-lab"}, "name", "Use lowercase letters"),
    ({"name": "lab-"}, "name", "Use lowercase letters"),
    ({"name": "视觉"}, "name", "Use lowercase letters"),
    ({"name": "ok", "gpu_quota": "-1"}, "gpu_quota", "Number must be between 0 and 4096."),
    ({"name": "ok", "gpu_quota": "99999999"}, "gpu_quota", "Number must be between 0 and 4096."),
    ({"name": "ok", "gpu_quota": "lots"}, "gpu_quota", "Not a valid integer value."),
    ({"name": "ok", "cpu_quota": "1e9"}, "cpu_quota", "Not a valid integer value."),
    ({"name": "ok", "memory_quota_gib": "-5"}, "memory_quota_gib", "Number must be between"),
    ({"name": "ok", "max_jobs": "100001"}, "max_jobs", "Number must be between"),
    ({"name": "ok", "expires_on": "tomorrow"}, "expires_on", "Not a valid date value."),
    ({"name": "ok", "gpu_model_quotas": "A100 eight"}, "gpu_model_quotas", "Line 1: write MODEL: COUNT."),
    ({"name": "ok", "gpu_model_quotas": "A100: 1\nA100: 2"}, "gpu_model_quotas", "appears twice"),
    ({"name": "ok", "gpu_model_quotas": "A100: 5000"}, "gpu_model_quotas", "at most 4096"),
    ({"name": "ok", "gpu_quota": "4", "gpu_model_quotas": "A100: 8"}, "gpu_model_quotas",
     "more than the account&#39;s total GPU quota (4)"),
    ({"name": "ok", "description": "x" * 2001}, "description", "cannot be longer than 2000"),
    ({"name": "ok", "borrow_limit": "-1"}, "borrow_limit", "Number must be between 0 and 4096."),
    ({"name": "ok", "borrow_limit": "1e3"}, "borrow_limit", "Not a valid integer value."),
    ({"name": "ok", "lend_limit": "99999"}, "lend_limit", "Number must be between 0 and 4096."),
    ({"name": "ok", "gpu_quota": "4", "lend_limit": "5"}, "lend_limit", "keeps back at most its guaranteed GPUs (4)"),
    ({"name": "ok", "lend_limit": "2"}, "lend_limit", "keeps back at most its guaranteed GPUs (0)"),
]


@pytest.mark.parametrize("data, field, message", BAD)
def test_bad_account_input_comes_back_with_field_errors(admin, make, data, field, message):
    before = accounts(make)
    response = admin.post("/admin/accounts/new", data)
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert message in body
    assert f'id="{field}"' in body and 'aria-invalid="true"' in body
    assert accounts(make) == before
    assert make.query(lambda s: s.query(AuditEntry).filter_by(action="account.create").count()) == 0


def test_submitted_values_are_kept_on_error(admin):
    body = admin.post("/admin/accounts/new", {"name": "ok", "display_name": "我的实验室", "gpu_quota": "-3"}).get_data(as_text=True)
    assert 'value="我的实验室"' in body and 'value="-3"' in body


def test_duplicate_name_is_a_field_error(admin, make):
    make.account("vision-lab")
    response = admin.post("/admin/accounts/new", {"name": "vision-lab"})
    assert response.status_code == 422
    assert "An account named vision-lab already exists." in response.get_data(as_text=True)
    assert accounts(make) == ["default", "vision-lab"]


def test_edit_changes_quotas_but_never_the_name(admin, make):
    account_id = make.account("vision-lab", gpu_quota=4, model_quotas={"A100": 2, "V100": 2})
    data = dict(VALID, name="renamed", gpu_model_quotas="A100: 6\nH100: 1")
    assert admin.post(f"/admin/accounts/{account_id}/edit", data).status_code == 303
    account = make.query(lambda s: (s.get(Account, account_id).name, s.get(Account, account_id).gpu_quota))
    assert account == ("vision-lab", 16)
    models = make.query(lambda s: {q.gpu_model: q.gpus for q in s.query(AccountGpuQuota)})
    assert models == {"A100": 6, "H100": 1}
    entry = make.query(lambda s: s.query(AuditEntry).filter_by(action="account.update").one().detail)
    assert entry["changed"]["gpu_quota"] == [4, 16]
    assert entry["changed"]["gpu_model_quotas"] == [{"A100": 2, "V100": 2}, {"A100": 6, "H100": 1}]


def test_borrowing_and_lending_limits_are_set_on_the_account_page_and_audited(admin, make):
    account_id = make.account("vision-lab", gpu_quota=8)
    data = dict(VALID, gpu_quota="8", borrow_limit="4", lend_limit="2", borrow_jupyter="y")
    assert admin.post(f"/admin/accounts/{account_id}/edit", data).status_code == 303
    row = make.query(lambda s: (lambda a: (a.borrow_limit, a.lend_limit, a.borrow_jupyter))(s.get(Account, account_id)))
    assert row == (4, 2, True)
    changed = make.query(lambda s: s.query(AuditEntry).filter_by(action="account.update").one().detail["changed"])
    assert changed["borrow_limit"] == [None, 4] and changed["lend_limit"] == [None, 2]
    page = admin.get(f"/admin/accounts/{account_id}").get_data(as_text=True)
    assert "Borrows at most" in page and "JupyterLab may borrow" in page
    # empty again: borrows as much as is idle, lends everything
    assert admin.post(f"/admin/accounts/{account_id}/edit", dict(VALID, gpu_quota="8")).status_code == 303
    assert make.query(lambda s: (s.get(Account, account_id).borrow_limit, s.get(Account, account_id).lend_limit)) == (None, None)


def test_edit_form_shows_current_values(admin, make):
    account_id = make.account("vision-lab", gpu_quota=4, model_quotas={"A100": 2})
    body = admin.get(f"/admin/accounts/{account_id}/edit").get_data(as_text=True)
    assert 'value="4"' in body and "A100: 2" in body


def test_bad_edit_is_422_and_changes_nothing(admin, make):
    account_id = make.account("vision-lab", gpu_quota=4)
    response = admin.post(f"/admin/accounts/{account_id}/edit", {"gpu_quota": "-1"})
    assert response.status_code == 422
    assert make.query(lambda s: s.get(Account, account_id).gpu_quota) == 4


def test_delete_account_without_jobs(admin, make):
    account_id = make.account("old-lab")
    assert admin.get(f"/admin/accounts/{account_id}/delete").status_code == 200  # confirmation page
    assert admin.post(f"/admin/accounts/{account_id}/delete").status_code == 303
    assert "old-lab" not in accounts(make)
    entry = make.query(lambda s: s.query(AuditEntry).filter_by(action="account.delete").one().detail)
    assert entry == {"name": "old-lab"}


def test_account_with_jobs_cannot_be_deleted(admin, make):
    account_id = make.account("busy-lab")
    owner = make.user("bob")
    make.query(lambda s: (s.add(Job(user_id=owner, account_id=account_id, job_type="batch")), s.commit()))
    response = admin.post(f"/admin/accounts/{account_id}/delete")
    assert response.status_code == 409
    assert "has 1 job(s) and cannot be deleted" in response.get_data(as_text=True)
    assert "busy-lab" in accounts(make)


def test_default_account_cannot_be_deleted(admin, make):
    default_id = make.query(lambda s: s.query(Account).filter_by(name="default").one().id)
    assert admin.post(f"/admin/accounts/{default_id}/delete").status_code == 409
    assert "default" in accounts(make)


def test_accounts_list_search_and_member_counts(admin, make):
    bob, eve = make.user("bob"), make.user("eve")
    make.account("vision-lab", members={bob: "member", eve: "manager"})
    make.account("nlp-lab")
    body = admin.get("/admin/accounts?q=vision").get_data(as_text=True)
    assert "vision-lab" in body and "nlp-lab" not in body
    assert "<td>2</td>" in body
