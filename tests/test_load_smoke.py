"""The load test (bench/load.py) as CI's smoke test: 30 locust users for one minute against
gunicorn, `crater sync`, kubesim and MariaDB as separate processes on loopback, with a gunicorn
worker and the syncer killed (SIGKILL) while it runs. (The full run, 300 users for 10 minutes and a
MariaDB restart as well, is `bench/load.py --crash`.) No failed request outside the crashes, every
page back within 10 s of each, no job lost or duplicated, every job final, the database matching
the cluster, one end-of-job mail each."""
import os
import sys
from pathlib import Path

import pytest

from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.load


def test_thirty_users_for_a_minute_with_a_worker_and_the_syncer_killed():
    url = os.environ.get("CRATER_TEST_DATABASE_URL", "")
    if not url:
        skip_or_fail("CRATER_REQUIRE_MYSQL", "CRATER_TEST_DATABASE_URL is not set: the load smoke test needs MariaDB")
    base, _, query = url.partition("?")
    bench_url = f"{base}_bench?{query}"  # scripts/mariadb.sh makes <db>_bench beside the test database
    sys.path.insert(0, str(ROOT / "bench"))
    import load

    result = load.run(users=30, minutes=1, crash=True, crash_database=False, database_url=bench_url, web_workers=2,
                      spawn_rate=15, quiet=False)
    assert result.total_requests > 300
    assert result.failures_outside_crashes == 0, result.failure_samples
    assert [c["what"] for c in result.crashes if c["pages back after s"] is None or c["pages back after s"] > 10] == []
    assert len(result.crashes) == 2
    assert result.jobs >= 10
    assert (result.lost, result.duplicated, result.not_final, result.mismatched) == ([], [], {}, {})
    assert (result.mails_twice, result.mails_missing) == ([], [])
