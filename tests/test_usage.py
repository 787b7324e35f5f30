"""Usage and waste, from jobs with known times and utilisation: the per-day split of allocation
and use (a job across midnight counts only its share in a one-day report), the summary maths,
who sees what, the CSV, and a bad period refused with a message."""
from datetime import date, datetime, timedelta, UTC

from sqlalchemy import update

import pytest

from portal.extensions import db
from portal.metrics import Series, chart, day_overlaps, summarize
from portal.models import Job, UsageDay
from portal.services import usage

DAY1, DAY2 = date(2026, 11, 10), date(2026, 11, 11)


def ts(day: date, hour: int, minute: int = 0) -> float:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).timestamp()


def test_day_overlaps_split_a_run_at_midnight():
    assert day_overlaps(datetime(2026, 11, 10, 22), datetime(2026, 11, 11, 1, 30)) == {DAY1: 7200.0, DAY2: 5400.0}
    assert day_overlaps(datetime(2026, 11, 10, 1), datetime(2026, 11, 10, 1)) == {}


def test_summarize_counts_use_and_idle_per_gpu_and_day():
    busy = Series("GPU 0", [(ts(DAY1, 23, 59), 80.0), (ts(DAY2, 0, 0), 80.0)])
    idle = Series("GPU 1", [(ts(DAY1, 23, 59), 0.0), (ts(DAY2, 0, 0), 0.0)])
    memory = [Series("GPU 0", [(ts(DAY1, 23, 59), 1000.0), (ts(DAY2, 0, 0), 3000.0)])]
    s = summarize([busy, idle], memory, step=60, idle_percent=0)
    assert (s.util_mean, s.util_peak, s.memory_peak_mib) == (40.0, 80.0, 3000)
    assert s.used_by_day == {DAY1: 48.0, DAY2: 48.0} and s.idle_by_day == {DAY1: 60.0, DAY2: 60.0}
    assert not summarize([], [], 60, 0).has_metrics


def test_chart_aligns_series_on_one_axis():
    data = chart([Series("a", [(100.0, 1.0), (110.0, 2.0)]), Series("b", [(105.0, 5.0)])], 100, 110, 5)
    assert data["x"] == [100.0, 105.0, 110.0]
    assert [s["values"] for s in data["series"]] == [[1.0, None, 2.0], [None, 5.0, None]]


@pytest.fixture
def world(make):
    ids = {"admin": make.user("root", role="admin"), "alice": make.user("alice"), "bob": make.user("bob"),
           "carol": make.user("carol")}
    ids["vision"] = make.account("vision-lab", members={ids["alice"]: "member", ids["carol"]: "manager"})
    ids["nlp"] = make.account("nlp-lab", members={ids["bob"]: "member"})
    # alice: 2 GPUs from 16:00 on day 1 to 04:00 on day 2 (12 h), busy 50 % the whole time
    ids["long"] = make.job(ids["alice"], ids["vision"], gpus=2, cpu_milli=4000, memory_mib=16384,
                           gpu_model="NVIDIA-A100-SXM4-80GB", started_at=datetime(2026, 11, 10, 16),
                           finished_at=datetime(2026, 11, 11, 4), pods=[{"name": "crater-1-x"}])
    # bob: 1 GPU for 2 h on day 2, idle throughout
    ids["idle"] = make.job(ids["bob"], ids["nlp"], gpus=1, gpu_model="NVIDIA-GeForce-RTX-4090",
                           started_at=datetime(2026, 11, 11, 10), finished_at=datetime(2026, 11, 11, 12),
                           display_name="=HYPERLINK(\"x\")")
    return ids


def hourly(start: datetime, end: datetime, value: float, gpus: int) -> list[Series]:
    points = []
    t = start.replace(tzinfo=UTC).timestamp()
    stop = end.replace(tzinfo=UTC).timestamp()
    while t < stop:
        points.append((t, value))
        t += 3600
    return [Series(f"GPU {i}", list(points)) for i in range(gpus)]


def record(app, world):
    with app.app_context():
        s = summarize(hourly(datetime(2026, 11, 10, 16), datetime(2026, 11, 11, 4), 50.0, 2), [], 3600, 0)
        usage.record_usage(world["long"], s, datetime(2026, 12, 1), final=True)
        s = summarize(hourly(datetime(2026, 11, 11, 10), datetime(2026, 11, 11, 12), 0.0, 1), [], 3600, 0)
        usage.record_usage(world["idle"], s, datetime(2026, 12, 1), final=True)


def actor_of(world, who):
    from portal.models import User
    from portal.services.context import Actor
    return Actor(db.session.get(User, world[who]), "")


def test_a_job_across_midnight_counts_its_share_of_each_day(app, world):
    record(app, world)
    with app.app_context():
        job = db.session.get(Job, world["long"])
        assert (job.usage_state, job.gpu_seconds, job.gpu_seconds_used, job.gpu_seconds_idle) == ("final", 86400.0, 43200.0, 0.0)
        assert job.gpu_util_mean == 50.0
        rows = {r.day: r for r in db.session.query(UsageDay).filter_by(job_id=world["long"])}
        assert rows[DAY1].gpu_seconds == 2 * 8 * 3600 and rows[DAY2].gpu_seconds == 2 * 4 * 3600
        assert rows[DAY1].cpu_seconds == 4 * 8 * 3600 and rows[DAY1].memory_gib_seconds == 16 * 8 * 3600
        admin = actor_of(world, "admin")
        day2 = usage.report(admin, usage.Scope("all"), usage.Period(DAY2, DAY2), 1, 50)
        by = {r["name"]: r for r in day2.by_user.items}
        assert by["alice"]["gpu_hours"] == 8.0 and by["alice"]["used_hours"] == 4.0 and by["alice"]["wasted_hours"] == 0.0
        assert by["bob"]["gpu_hours"] == 2.0 and by["bob"]["used_hours"] == 0.0 and by["bob"]["wasted_hours"] == 2.0
        assert day2.totals["gpu_hours"] == 10.0 and day2.totals["jobs"] == 1  # jobs started that day
        assert {m["name"]: m["gpu_hours"] for m in day2.by_model} == {"NVIDIA-A100-SXM4-80GB": 8.0, "NVIDIA-GeForce-RTX-4090": 2.0}
        both = usage.report(admin, usage.Scope("all"), usage.Period(DAY1, DAY2), 1, 50)
        assert both.totals["jobs"] == 2
        assert [d["gpu_hours"] for d in both.daily] == [16.0, 10.0]
        assert {a["name"]: a["gpu_hours"] for a in both.by_account} == {"vision-lab": 24.0, "nlp-lab": 2.0}


def test_rollups_follow_a_job_rewritten_while_it_runs(app, world):
    """A running job's usage is rewritten every few minutes: the rollups move by the difference."""
    from portal.models import UsageModelDay, UsageRollup
    with app.app_context():
        start = datetime(2026, 11, 10, 23)
        for hours in (1, 2, 5):  # 23:00 -> 00:00, 01:00, 04:00 (the job's row, refreshed)
            s = summarize(hourly(start, datetime(2026, 11, 10, 23) + timedelta(hours=hours), 100.0, 2), [], 3600, 0)
            db.session.execute(update(Job).where(Job.id == world["long"]).values(
                started_at=start, finished_at=start + timedelta(hours=hours), state="Succeeded"))
            db.session.commit()
            usage.record_usage(world["long"], s, datetime(2026, 12, 1), final=False)
        rollups = {(r.day, r.user_id): (r.gpu_seconds, r.used_gpu_seconds, r.jobs_started)
                   for r in db.session.query(UsageRollup)}
        assert rollups == {(DAY1, world["alice"]): (7200.0, 7200.0, 1), (DAY2, world["alice"]): (28800.0, 28800.0, 0)}
        models = {(r.day, r.gpu_model): r.gpu_seconds for r in db.session.query(UsageModelDay)}
        assert models == {(DAY1, "NVIDIA-A100-SXM4-80GB"): 7200.0, (DAY2, "NVIDIA-A100-SXM4-80GB"): 28800.0}


def test_who_sees_what(app, world, new_client):
    record(app, world)
    span = "start=2026-11-10&end=2026-11-11"
    alice = new_client().login(world["alice"])
    mine = alice.get("/usage?" + span).get_data(as_text=True)
    assert 'data-key="alice"' in mine and 'data-key="bob"' not in mine
    assert alice.get("/usage?scope=all&" + span).status_code == 403
    assert alice.get("/usage?scope=account&" + span).status_code == 403  # she manages nothing
    carol = new_client().login(world["carol"])
    managed = carol.get("/usage?scope=account&" + span).get_data(as_text=True)
    assert 'data-key="alice"' in managed and 'data-key="bob"' not in managed
    assert carol.get(f"/usage?scope=account&account={world['nlp']}&" + span).status_code == 403
    admin = new_client().login(world["admin"])
    everyone = admin.get("/usage?scope=all&" + span).get_data(as_text=True)
    assert 'data-key="alice"' in everyone and 'data-key="bob"' in everyone and "usage-models" in everyone


def test_csv_is_streamed_and_safe_for_spreadsheets(app, world, new_client):
    record(app, world)
    admin = new_client().login(world["admin"])
    response = admin.get("/usage.csv?scope=all&group=job&start=2026-11-11&end=2026-11-11")
    assert response.is_streamed and response.mimetype == "text/csv"
    assert response.get_data().startswith(b"\xef\xbb\xbf")  # UTF-8 with a BOM: Excel on Chinese Windows reads it right
    lines = response.get_data(as_text=True).lstrip("\ufeff").splitlines()
    assert lines[0].startswith("period_start,period_end,job,name,user,account,gpu_model,started_at,finished_at,jobs_started,gpu_hours")
    bob = next(line for line in lines if ",bob," in line)
    assert "'=HYPERLINK" in bob and ",2.000,0.000,2.000," in bob
    per_user = admin.get("/usage.csv?scope=all&group=user&start=2026-11-10&end=2026-11-11").get_data(as_text=True)
    assert "2026-11-10,2026-11-11,alice,1,24.000,12.000,0.000," in per_user


@pytest.mark.parametrize("query", ["start=yesterday", "start=2026-11-12&end=2026-11-01", "start=2020-01-01&end=2026-01-01",
                                   "end=2026-02-30"])
def test_a_bad_period_is_refused_with_a_message(app, world, new_client, query):
    response = new_client().login(world["alice"]).get("/usage?" + query)
    assert response.status_code == 400
    assert "last 30 days" in response.get_data(as_text=True)
