"""The example alert rules and Grafana dashboard under deploy/monitoring: the rules pass
`promtool check rules` and their unit tests (`promtool test rules`: they fire when they should and
only then), every dashboard query is valid PromQL, and every series they name is one the portal or
the syncer exports."""
import json
import re
import subprocess
from pathlib import Path

import yaml

from kubesim_fixtures import require_tool

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
EXPORTERS = (ROOT / "portal" / "telemetry.py", ROOT / "portal" / "sync" / "telemetry.py", ROOT / "portal" / "sync" / "writers.py")


def promtool(*args, cwd=MONITORING):
    binary = require_tool("promtool", "CRATER_REQUIRE_PROMETHEUS")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def alert_queries() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def exported() -> set[str]:
    names = {n for path in EXPORTERS for n in re.findall(r'"(crater_[a-z_]+)"', path.read_text())}
    return {n + suffix for n in names for suffix in ("", "_total", "_bucket", "_count", "_sum")}


def test_the_alert_rules_check_and_pass_their_unit_tests():
    checked = promtool("check", "rules", "alerts.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts-test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path):
    queries = dashboard_queries()
    assert len(queries) >= 15
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"crater:panel_{i}", "expr": q}
                                                         for i, q in enumerate(queries)]}]}
    (tmp_path / "panels.yaml").write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", "panels.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = {"groups": [{"name": "x", "rules": [{"record": "crater:x", "expr": "sum(rate(crater_http_requests_total[5m]"}]}]}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    assert promtool("check", "rules", "broken.yaml", cwd=tmp_path).returncode != 0  # the check can fail


def test_every_series_named_is_exported():
    names = exported()
    assert {"crater_http_requests_total", "crater_sync_write_lag_seconds_bucket", "crater_sync_policy_actions_total"} <= names
    for query in dashboard_queries() + alert_queries():
        used = set(re.findall(r"\b(crater_[a-z_]+)", query))
        assert used <= names and (used or "up{" in query), (query, used - names)
