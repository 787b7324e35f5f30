"""What a job's page reads, in one call per page: its polled status part (state, reason, place in
the queue, outlook, events, time left, warnings) and the whole page (plus the submitted spec as
YAML, its history and its requests for more time). Authorization is get_job's: the owner, the
account's managers, admins. Reads the DB only."""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta

import yaml

from ..models import Job
from . import fair_use, job_queries, jobs, maintenance
from .context import Actor
from .scheduling import pages as queue_pages


@dataclass
class JobStatus:
    job: Job
    is_owner: bool
    now: datetime
    outlook: job_queries.Outlook | None
    standing: queue_pages.Standing | None
    events: list
    time_left: timedelta | None
    idle_warning: object | None
    limit_warning: object | None
    preemption: object | None = None  # the last time it was preempted (a Preemption row)
    maintenance: object | None = None  # announcements touching its nodes, a drain that will stop it

    def context(self) -> dict:
        """The fields as template variables."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class JobPage(JobStatus):
    spec_yaml: str = ""
    history: list | None = None
    requests: list | None = None


def job_status(actor: Actor, job_id: int, now: datetime) -> JobStatus:
    return _status(jobs.get_job(actor, job_id), actor, now)


def job_page(actor: Actor, job_id: int, now: datetime) -> JobPage:
    job = jobs.get_job(actor, job_id)
    status = _status(job, actor, now)
    spec_yaml = yaml.safe_dump(jobs.exported_spec(job), allow_unicode=True, sort_keys=False)
    return JobPage(**status.context(), spec_yaml=spec_yaml, history=fair_use.history(actor, job.id),
                   requests=fair_use.requests_of(job.id))


def _status(job: Job, actor: Actor, now: datetime) -> JobStatus:
    warned = fair_use.warnings_of([job.id]) if job.is_open else {}
    return JobStatus(job=job, is_owner=actor.user is not None and job.user_id == actor.user.id, now=now,
                     outlook=job_queries.outlook(job), standing=queue_pages.standing(job),
                     events=job_queries.job_events(job.id, 20),
                     time_left=fair_use.time_left(job, now) if job.is_open else None,
                     idle_warning=warned.get((job.id, "idle_gpu")), limit_warning=warned.get((job.id, "time_limit")),
                     preemption=queue_pages.last_preemption(job.id) if job.preemptions else None,
                     maintenance=maintenance.for_job(job))
