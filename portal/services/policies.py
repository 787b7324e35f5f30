"""The fair-use policies' parameters (defaults here, an admin's changes in policy_settings), their
suspension and "run now", and the log of their runs. Decisions live in portal.sync.policies; the
actions they take go through services.fair_use and services.jobs as the system."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from flask_babel import gettext as _
from sqlalchemy import delete, select

from ..extensions import db
from ..models import PolicyRun, PolicySetting, Preemption, utcnow
from ..vocabulary import JOB_TYPES, JobType
from . import audit
from .context import Actor
from .errors import NotFound, ValidationFailed
from .pagination import Page, paginate

# name -> {parameter: (default, low, high)}; per-type parameters are "<type>.<name>"
DEFAULTS: dict[str, dict[str, tuple[float, float, float]]] = {
    "idle_gpu": {**{f"{t}.window_minutes": (90 if t == JobType.JUPYTER else 120, 0.1, 10080) for t in JOB_TYPES},
                 **{f"{t}.threshold_percent": (0, 0, 100) for t in JOB_TYPES},
                 **{f"{t}.grace_minutes": (30, 0.1, 1440) for t in JOB_TYPES}},
    "time_limit_warning": {"hours_before": (24, 1, 336)},
    "pending_interactive": {"minutes": (30, 1, 10080)},
    "extensions": {"auto_max_hours": (12, 0, 336), "auto_every_hours": (48, 1, 8760), "max_request_hours": (168, 1, 2016)},
    # Reclaim (services/scheduling): the grace a preempted job's containers get after SIGTERM, the
    # least a borrowed job runs before it may be preempted unless the reclaiming job has waited
    # past the owner's bound, how often one job may be preempted, and the backoff (doubling)
    # before a preempted job borrows again. Suspended: nothing is preempted.
    "preemption": {"grace_seconds": (60, 0, 3600), "min_run_minutes": (10, 0, 1440), "owner_wait_minutes": (2, 0, 1440),
                   "max_preemptions": (3, 1, 100), "backoff_minutes": (1, 0, 1440)},
}
KEEP_RUNS = 2000  # per policy


def names() -> list[str]:
    return list(DEFAULTS)


def words() -> dict[str, str]:
    return {"idle_gpu": _("Idle-GPU clean-up"), "time_limit_warning": _("Time-limit warning"),
            "pending_interactive": _("Interactive jobs that cannot start"), "extensions": _("Time-limit extensions"),
            "preemption": _("Reclaiming lent GPUs")}


@dataclass(frozen=True)
class Policy:
    name: str
    params: dict[str, float]
    suspended: bool
    run_now: bool
    updated_by: str
    updated_at: object

    def per_type(self, job_type: str, key: str) -> float:
        return self.params[f"{job_type}.{key}"]


def get(name: str) -> Policy:
    if name not in DEFAULTS:
        raise NotFound(_("No such policy."))
    row = db.session.get(PolicySetting, name)
    params = {k: v[0] for k, v in DEFAULTS[name].items()}
    params.update({k: float(v) for k, v in ((row.params or {}) if row else {}).items() if k in params})
    return Policy(name, params, bool(row and row.suspended), bool(row and row.run_now), row.updated_by if row else "",
                  row.updated_at if row else None)


def all_policies() -> list[Policy]:
    rows = {r.name: r for r in db.session.execute(select(PolicySetting)).scalars()}
    out = []
    for name in DEFAULTS:
        row = rows.get(name)
        params = {k: v[0] for k, v in DEFAULTS[name].items()}
        params.update({k: float(v) for k, v in ((row.params or {}) if row else {}).items() if k in params})
        out.append(Policy(name, params, bool(row and row.suspended), bool(row and row.run_now),
                          row.updated_by if row else "", row.updated_at if row else None))
    return out


def _row(name: str) -> PolicySetting:
    if name not in DEFAULTS:
        raise NotFound(_("No such policy."))
    row = db.session.get(PolicySetting, name)
    if row is None:
        row = PolicySetting(name=name, params={})
        db.session.add(row)
    return row


def update(actor: Actor, name: str, values: dict[str, str]) -> Policy:
    """Change parameters (every one checked against its range; nothing changes on an error)."""
    actor.require_admin()
    if name not in DEFAULTS:
        raise NotFound(_("No such policy."))
    errors, parsed = {}, {}
    for key, (_default, low, high) in DEFAULTS[name].items():
        raw = (values.get(key) or "").strip()
        if not raw:
            continue
        try:
            number = float(raw)
            if number != number or not low <= number <= high:
                raise ValueError
        except ValueError:
            errors[key] = _("A number from %(low)s to %(high)s.", low=f"{low:g}", high=f"{high:g}")
            continue
        parsed[key] = number
    if errors:
        raise ValidationFailed(errors, _("Check the highlighted values."))
    row = _row(name)
    before = copy.deepcopy(row.params or {})
    row.params = {**before, **parsed}
    row.updated_by, row.updated_at = actor.name, utcnow()
    audit.record(actor, "policy.update", "policy", name, {"before": before, "after": row.params})
    db.session.commit()
    return get(name)


def set_suspended(actor: Actor, name: str, suspended: bool) -> Policy:
    actor.require_admin()
    row = _row(name)
    row.suspended, row.updated_by, row.updated_at = suspended, actor.name, utcnow()
    audit.record(actor, "policy.suspend" if suspended else "policy.resume", "policy", name)
    db.session.commit()
    return get(name)


def request_run(actor: Actor, name: str) -> Policy:
    actor.require_admin()
    row = _row(name)
    row.run_now = True
    audit.record(actor, "policy.run_now", "policy", name)
    db.session.commit()
    return get(name)


def take_run_request(name: str) -> bool:
    """The syncer takes an admin's "run now" (True once per request)."""
    row = db.session.get(PolicySetting, name)
    if row is None or not row.run_now:
        return False
    row.run_now = False
    db.session.commit()
    return True


def record_run(name: str, started_at, seconds: float, looked_at: int, warned: list[int], stopped: list[int],
               cleared: list[int], error: str = "", runner: str = "") -> None:
    db.session.add(PolicyRun(policy=name, runner=runner[:128], started_at=started_at, seconds=round(seconds, 3), looked_at=looked_at,
                             warned=warned, stopped=stopped, cleared=cleared, error=error[:2000]))
    db.session.flush()
    newest = db.session.execute(select(PolicyRun.id).where(PolicyRun.policy == name).order_by(PolicyRun.id.desc())
                                .offset(KEEP_RUNS).limit(1)).scalar()
    if newest:
        db.session.execute(delete(PolicyRun).where(PolicyRun.policy == name, PolicyRun.id <= newest))
    db.session.commit()


@dataclass(frozen=True)
class PoliciesPage:
    policies: list
    defaults: dict
    words: dict
    runs: Page
    shown: str  # the policy whose runs are listed ("": every policy's)


def policies_page(actor: Actor, shown: str, page: int, per_page: int) -> PoliciesPage:
    """The admins' policy page: every policy with its settings and words, and a page of the log."""
    shown = shown if shown in names() else ""
    runs = list_runs(actor, shown, page, per_page)
    return PoliciesPage(all_policies(), DEFAULTS, words(), runs, shown)


def list_runs(actor: Actor, name: str, page: int, per_page: int) -> Page:
    """A page of the policies' runs; for the preemption policy, the log of every preemption."""
    actor.require_admin()
    if name == "preemption":
        return paginate(select(Preemption).order_by(Preemption.id.desc()), page, per_page)
    stmt = select(PolicyRun).order_by(PolicyRun.id.desc())
    if name:
        stmt = stmt.where(PolicyRun.policy == name)
    return paginate(stmt, page, per_page)
