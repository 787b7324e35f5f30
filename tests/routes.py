"""Helpers shared by the route-walking tests: a URL for every rule, with real ids filled in."""
from werkzeug.routing import Rule

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


# a job port's number and a path on the shared storage (the plain user bob's home), when the
# caller's ids do not say
DEFAULTS = {"port": 6006, "path": "users/bob", "restriction_id": 999999, "dataset_id": 999999, "share_id": 999999,
            "maintenance_id": 999999, "drain_id": 999999}


def fill(rule: Rule, ids: dict) -> str:
    values = {arg: ids[arg] if arg in ids else DEFAULTS[arg] for arg in rule.arguments}
    return rule.build(values, append_unknown=False)[1]


def rules(app, methods=None):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if methods is None or method in methods:
                yield method, rule
