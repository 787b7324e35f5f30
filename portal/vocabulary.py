"""One vocabulary for jobs: their states, types and reasons, and the words a person reads for
them in English or Chinese. Pages, mail, the syncer, the JSON API and the CLI all take their
words from here, so a reason reads the same wherever it is shown. Pure: no DB, no cluster; the
word functions need a Flask-Babel locale (a request, or `force_locale` in mail)."""
from __future__ import annotations

import enum

from flask_babel import gettext as _
from flask_babel import ngettext
from markupsafe import Markup, escape


class JobState(str, enum.Enum):
    QUEUED = "Queued"  # accepted, waiting for the account's quota; no cluster objects
    SUBMITTING = "Submitting"
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"
    LOST = "Lost"


# Active: admitted, holding the account's quota (and, but for a moment in Submitting, cluster objects).
ACTIVE_STATES = (JobState.SUBMITTING.value, JobState.PENDING.value, JobState.RUNNING.value)
# Open: not ended yet (Queued, or active): what can still change, be stopped, be polled.
OPEN_STATES = (JobState.QUEUED.value,) + ACTIVE_STATES
FINAL_STATES = (JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.STOPPED.value, JobState.LOST.value)


class JobType(str, enum.Enum):
    JUPYTER = "jupyter"
    BATCH = "batch"
    DISTRIBUTED = "distributed"

    def __str__(self) -> str:
        return self.value


JOB_TYPES = tuple(t.value for t in JobType)


class Reason:
    """Short codes kept in `jobs.reason`: why a job waits or how it ended."""
    CREATED = "Created"
    CREATING = "Creating"
    CONTAINER_CREATING = "ContainerCreating"
    UNSCHEDULABLE = "Unschedulable"
    IMAGE_PULL = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")
    COMPLETED = "Completed"
    EXIT_CODE = "ExitCode"
    OOM_KILLED = "OOMKilled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"  # the time limit
    SUBMIT_ERROR = "SubmitError"
    STOPPED_BY_USER = "StoppedByUser"
    STOPPED_BY_ADMIN = "StoppedByAdmin"
    IDLE_GPU = "IdleGPU"
    EVICTED = "Evicted"
    PENDING_TOO_LONG = "PendingTooLong"  # an interactive job that could not start in time
    LOST = "Lost"
    FAILED = "Failed"
    QUEUED = "WaitingForQuota"  # Queued: the account's quota is in use
    CANCELLED = "Cancelled"  # a queued job stopped by its owner before it was admitted
    PREEMPTED = "Preempted"  # Queued again: its borrowed GPUs were taken back for another account's guarantee


STOP_REASONS = (Reason.CANCELLED, Reason.STOPPED_BY_USER, Reason.STOPPED_BY_ADMIN, Reason.IDLE_GPU, Reason.EVICTED,
                Reason.DEADLINE_EXCEEDED, Reason.PENDING_TOO_LONG)


def state_words() -> dict[str, str]:
    return {"Queued": _("Queued"), "Submitting": _("Submitting"), "Pending": _("Pending"), "Running": _("Running"),
            "Succeeded": _("Succeeded"), "Failed": _("Failed"), "Stopped": _("Stopped"), "Lost": _("Lost")}


def phase_word(phase: str) -> str:
    """A pod's phase in words (four share their names with job states)."""
    return state_words().get(phase) or {"Unknown": _("Unknown")}.get(phase, phase)


def type_words() -> dict[str, str]:
    return {"jupyter": _("JupyterLab"), "batch": _("Batch"), "distributed": _("Distributed")}


def state_word(state: str) -> str:
    return state_words().get(state, state)


def ended_words(state: str) -> str:
    """How a final state reads in a sentence: "Your job X succeeded / failed / ..."."""
    return {"Succeeded": _("succeeded"), "Failed": _("failed"), "Stopped": _("was stopped"),
            "Lost": _("was lost")}.get(state, state)


def reason_words(job) -> tuple[str, str]:
    """(sentence, detail) for a job's reason: the sentence in the reader's language, the detail
    the cluster's or the actor's own message (shown as is), or "" when the sentence says it all."""
    r, state, message = job.reason or "", job.state, job.message or ""
    if r == Reason.UNSCHEDULABLE:
        return _("Waiting for resources."), message
    if r in Reason.IMAGE_PULL:
        return _("The image %(image)s cannot be pulled; check its name and tag.", image=job.image), message
    if r == Reason.EXIT_CODE:
        return _("The command exited with code %(code)s; see the logs.", code=job.exit_code), ""
    if r == Reason.OOM_KILLED:
        return _("Out of memory: the job used more memory than it asked for. Ask for more memory."), ""
    if r == Reason.DEADLINE_EXCEEDED:
        hours = round((job.time_limit_seconds or 0) / 3600, 1)
        return _("Time limit reached: the job ran for its %(hours)s hours and was stopped.", hours=hours), ""
    if r == Reason.SUBMIT_ERROR:
        return _("The cluster refused the job:"), message
    if r == Reason.CANCELLED and getattr(job, "preemptions", 0):
        return _("Cancelled while it waited to run again after a preemption."), ""
    if r == Reason.CANCELLED:
        return _("Cancelled while it waited in the queue; it never reached the cluster."), ""
    if r == Reason.QUEUED:
        return _("Queued: it starts when the account's quota allows."), ""
    if r == Reason.PREEMPTED:
        return _("Preempted: the GPUs it borrowed were taken back for another account's guaranteed work; it waits "
                 "in its original place to run again."), ""
    if r == Reason.STOPPED_BY_USER:
        return _("Stopped by its owner."), ""
    if r == Reason.STOPPED_BY_ADMIN:
        return _("Stopped by a manager or administrator."), message
    if r == Reason.LOST:
        return _("The job's cluster objects disappeared while it was active."), ""
    if r == Reason.COMPLETED:
        return _("Finished successfully."), ""
    if r == Reason.CREATED:
        return _("Submitted; waiting for the cluster to schedule it."), ""
    if r in (Reason.CREATING, Reason.CONTAINER_CREATING):
        return _("Starting: its containers are being created."), ""
    if r == Reason.FAILED:
        return _("The job failed; see its events and logs."), message
    if r == Reason.IDLE_GPU:
        return _("Stopped because its GPUs stayed idle."), message
    if r == Reason.EVICTED:
        return _("Evicted from its node."), message
    if r == Reason.PENDING_TOO_LONG:
        return _("Stopped because it could not start in time (interactive jobs do not wait long)."), message
    if state == JobState.RUNNING.value:
        return _("Running."), ""
    if state == JobState.PENDING.value:
        return _("Starting: %(reason)s", reason=r or _("waiting")), ""
    return r, message


def reason_label(reason: str) -> str:
    """A reason in a few words (a list's row); a code the portal does not know (the cluster's own
    waiting reasons) reads as waiting."""
    if not reason:
        return ""
    if reason in Reason.IMAGE_PULL:
        return _("image cannot be pulled")
    words = {
        Reason.CREATED: _("submitted"), Reason.CREATING: _("creating"), Reason.CONTAINER_CREATING: _("starting"),
        Reason.UNSCHEDULABLE: _("waiting for resources"), Reason.COMPLETED: _("finished"),
        Reason.EXIT_CODE: _("the command failed"), Reason.OOM_KILLED: _("out of memory"),
        Reason.DEADLINE_EXCEEDED: _("time limit reached"), Reason.SUBMIT_ERROR: _("the cluster refused it"),
        Reason.STOPPED_BY_USER: _("stopped by its owner"), Reason.STOPPED_BY_ADMIN: _("stopped by an administrator"),
        Reason.IDLE_GPU: _("idle GPUs"), Reason.EVICTED: _("evicted"), Reason.PENDING_TOO_LONG: _("could not start in time"),
        Reason.LOST: _("lost"), Reason.FAILED: _("failed"), Reason.QUEUED: _("waiting for the quota"),
        Reason.CANCELLED: _("cancelled in the queue"), Reason.PREEMPTED: _("preempted, waits to run again"),
    }
    return words.get(reason, _("waiting"))


def reason_codes() -> list[str]:
    """Every reason code the portal writes (for tests that enumerate them)."""
    codes = []
    for name, value in vars(Reason).items():
        if not name.startswith("_"):
            codes += list(value) if isinstance(value, tuple) else [value]
    return codes


def reason_text(job) -> str:
    """The reason as one line of plain text (mail, CLI)."""
    sentence, detail = reason_words(job)
    return f"{sentence} {detail}".strip()


def _cores(milli: float) -> str:
    return f"{milli / 1000:g}"


def _gib(mib: float) -> str:
    return f"{mib / 1024:g}"


def blocker_words(b: dict | None) -> str:
    """What holds a job back, in one sentence (the admitter's structured blocker): the same words
    on a queued job's page, in the queue, in the API and in a refusal."""
    b = b or {}
    kind, name = b.get("kind"), b.get("account", "")
    used, limit, ask = b.get("used", 0), b.get("limit", 0), b.get("ask", 0)
    if kind == "gpus":
        return _("account %(account)s uses %(used)s of %(limit)s GPUs; this job asks for %(ask)s.", account=name,
                 used=used, limit=limit, ask=ask)
    if kind == "model":
        return _("account %(account)s uses %(used)s of %(limit)s %(model)s GPUs; this job asks for %(ask)s.",
                 account=name, used=used, limit=limit, model=b.get("model", ""), ask=ask)
    if kind == "cpu":
        return _("account %(account)s uses %(used)s of %(limit)s CPU cores; this job asks for %(ask)s.", account=name,
                 used=_cores(used), limit=_cores(limit), ask=_cores(ask))
    if kind == "memory":
        return _("account %(account)s uses %(used)s of %(limit)s GiB of memory; this job asks for %(ask)s GiB.",
                 account=name, used=_gib(used), limit=_gib(limit), ask=_gib(ask))
    if kind == "jobs":
        return _("account %(account)s already runs %(used)s of at most %(limit)s jobs at a time.", account=name,
                 used=used, limit=limit)
    if kind == "member":
        return _("the owner's GPU cap in account %(account)s is %(limit)s; they use %(used)s and this job asks for %(ask)s.",
                 account=name, limit=limit, used=used, ask=ask)
    if kind == "jupyter":
        return _("the owner already has %(used)s of at most %(limit)s JupyterLab jobs.", used=used, limit=limit)
    if kind == "head":
        return _("job %(job)s is at the head of the queue and holds the quota it waits for; this job would delay it.",
                 job=b.get("job", ""))
    if kind == "behind":
        return _("it starts after its owner's earlier job %(job)s (a member's jobs start in the order submitted).",
                 job=b.get("job", ""))
    if kind == "restricted":
        return (_("its owner is restricted from submitting jobs until %(until)s UTC; it waits until then.",
                  until=b["until"].replace("T", " ")[:16]) if b.get("until") else
                _("its owner is restricted from submitting jobs until an administrator lifts it; it waits until then."))
    if kind == "nomember":
        return _("the owner is no longer a member of account %(account)s.", account=name)
    if kind == "cluster":
        return _("the cluster could not take it just now; it is tried again shortly.")
    if kind == "capacity":
        return _("the cluster has %(free)s free %(model)s GPUs for it now; it asks for %(ask)s and starts as soon as "
                 "they are free (it holds its place).", free=used, model=b.get("model") or "", ask=ask)
    if kind == "fragmented":
        return _("%(free)s %(model)s GPUs are free, but not enough of them on the same nodes for its pods; it starts "
                 "as soon as they fit (it holds its place).", free=used, model=b.get("model") or "")
    if kind == "reclaim":
        return _("GPUs lent to other accounts are being taken back for it (by %(when)s at the latest).",
                 when=b.get("note", "")[:16].replace("T", " "))
    if kind == "borrow":
        return _("it may run beyond account %(account)s's guarantee, but not enough %(model)s GPUs are idle for it now "
                 "(it asks for %(ask)s); it starts when enough are idle.", account=name, model=b.get("model") or "", ask=ask)
    if kind == "borrow_limit":
        return _("account %(account)s already borrows %(used)s of at most %(limit)s GPUs beyond its guarantee; this job "
                 "asks for %(ask)s.", account=name, used=used, limit=limit, ask=ask)
    if kind == "backoff":
        return _("it was preempted recently; it borrows GPUs again from %(when)s.",
                 when=b.get("note", "")[:16].replace("T", " "))
    if kind == "maintenance":
        model = b.get("model") or _("GPU")
        if b.get("note"):
            return _("every %(model)s node is under maintenance (%(reason)s); it starts once one is back.",
                     model=model, reason=b["note"])
        return _("every %(model)s node is under maintenance; it starts once one is back.", model=model)
    return _("the account's quota is in use.")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def waiting_words(b: dict | None) -> str:
    """What a queued job waits for, as a sentence of its own."""
    return _sentence(blocker_words(b))


def refusal_words(b: dict) -> str:
    """Why a submission that may not queue is refused now."""
    words = _("Quota exceeded: %(why)s", why=blocker_words(b))
    if b.get("kind") in ("head", "behind"):
        words += " " + _("Submit it to the queue to wait for its turn.")
    return words


def never_words(account: str, b: dict) -> str:
    """Why a job could never start in an account (it asks more than a limit allows on its own)."""
    return _("This job can never start in account %(name)s: %(why)s", name=account, why=blocker_words(b))


# ---- job types, node states, a job's history --------------------------------------------------

def type_titles() -> dict[str, str]:
    """A job type as a form's or a page's title."""
    return {JobType.JUPYTER: _("JupyterLab"), JobType.BATCH: _("Batch job"), JobType.DISTRIBUTED: _("Distributed PyTorch")}


def extension_decision_words(granted: bool, hours: int, who: str, note: str) -> str:
    """A manager's decision on a request for more time, as its owner reads it."""
    if granted:
        words = ngettext("%(who)s granted your request for %(num)s more hour.",
                         "%(who)s granted your request for %(num)s more hours.", hours, who=who)
    else:
        words = ngettext("%(who)s refused your request for %(num)s more hour.",
                         "%(who)s refused your request for %(num)s more hours.", hours, who=who)
    return words + (" " + _("Note: %(note)s", note=note) if note else "")


def new_titles() -> dict[str, str]:
    """A submission form's heading, in its own words (not "New Batch job")."""
    return {JobType.JUPYTER: _("New JupyterLab"), JobType.BATCH: _("New batch job"),
            JobType.DISTRIBUTED: _("New distributed PyTorch job")}


def type_help() -> dict[str, str]:
    return {JobType.JUPYTER: _("An interactive notebook with GPUs, opened in your browser."),
            JobType.BATCH: _("One container runs your command to the end; logs stay readable afterwards."),
            JobType.DISTRIBUTED: _("Several workers with GPUs each, wired for torchrun (MASTER_ADDR, WORLD_SIZE, NODE_RANK).")}


class NodeState:
    READY = "Ready"
    NOT_READY = "NotReady"
    CORDONED = "Cordoned"
    RESERVED = "Reserved"
    ALL = (READY, NOT_READY, CORDONED, RESERVED)


def node_state_words() -> dict[str, str]:
    return {NodeState.READY: _("Ready"), NodeState.NOT_READY: _("NotReady"), NodeState.CORDONED: _("Cordoned"),
            NodeState.RESERVED: _("Reserved")}


def preemption_words(p) -> str:
    """One preemption in words (the job page, its history, the notice and the mail)."""
    return _("Preempted at %(when)s so that %(account)s's job %(job)s could use its guaranteed GPUs; %(hours)s "
             "GPU-hours lost.", when=p.at.strftime("%Y-%m-%d %H:%M"), account=p.by_account or "?", job=p.by_job_id or "?",
             hours=_gpu_hours(p.gpu_seconds_lost))


def _gpu_hours(seconds: float) -> str:
    return hours_text((seconds or 0) / 3600)


def hours_text(hours: float) -> str:
    """Hours as pages show them: one decimal, two below 0.1, and a real amount too small for
    that is "<0.01", never a bare 0.0."""
    if 0 < hours < 0.005:
        return "<0.01"
    return f"{hours:.2f}" if 0 < hours < 0.1 else f"{hours:.1f}"


def history_words(entry) -> str:
    """One line of a job's history: what happened, by whom (a person or a policy), and why."""
    d, who = entry.detail or {}, entry.actor_name or "system"
    a = entry.action
    if a == "job.stop":
        by = _("a policy") if who == "system" else who
        reason = d.get("reason", "")
        if not reason:
            return _("stopped by %(who)s", who=by)
        return _("stopped by %(who)s (%(reason)s)", who=by, reason=reason_label(reason) or reason)
    hours = d.get("hours") or 0
    if a == "job.extend":
        if d.get("automatic"):
            return ngettext("%(num)s more hour granted within policy (asked by %(owner)s: %(why)s)",
                            "%(num)s more hours granted within policy (asked by %(owner)s: %(why)s)", hours,
                            owner=d.get("by", ""), why=d.get("reason", ""))
        if d.get("note"):
            return ngettext("%(num)s more hour granted by %(who)s (%(note)s)", "%(num)s more hours granted by %(who)s (%(note)s)",
                            hours, who=who, note=d["note"])
        return ngettext("%(num)s more hour granted by %(who)s", "%(num)s more hours granted by %(who)s", hours, who=who)
    if a == "job.extension_requested":
        return ngettext("%(who)s asked for %(num)s more hour: %(why)s", "%(who)s asked for %(num)s more hours: %(why)s", hours,
                        who=who, why=d.get("reason", ""))
    if a == "job.extension_rejected":
        if d.get("note"):
            return ngettext("request for %(num)s more hour rejected by %(who)s: %(note)s",
                            "request for %(num)s more hours rejected by %(who)s: %(note)s", hours, who=who, note=d["note"])
        return ngettext("request for %(num)s more hour rejected by %(who)s", "request for %(num)s more hours rejected by %(who)s",
                        hours, who=who)
    if a == "job.extension_cancelled":
        return _("request for more time cancelled: the job ended")
    if a == "job.lock":
        return _("locked by %(who)s until %(until)s: %(why)s", who=who, until=d.get("until", ""), why=d.get("reason", ""))
    if a == "job.unlock":
        return _("unlocked by %(who)s", who=who)
    if a == "job.warned.idle_gpu":
        return _("warned by the idle-GPU policy: stopped at %(when)s unless busy", when=d.get("act_at", "")[:16].replace("T", " "))
    if a == "job.warned.time_limit":
        return _("warned: the time limit is reached at %(when)s", when=d.get("act_at", "")[:16].replace("T", " "))
    if a.startswith("job.warning_cleared."):
        return _("warning withdrawn (%(why)s)", why=d.get("why", ""))
    if a == "job.queue":
        if d.get("blocker"):  # what held it back when it was queued, in the queue's own words
            return _("queued by %(who)s: %(why)s", who=who, why=blocker_words(d["blocker"]))
        return _("queued by %(who)s: the account's quota was in use", who=who)
    if a == "job.admit":
        if d.get("borrowed"):
            return _("admitted from the queue after %(minutes)s minutes, on idle GPUs beyond its account's guarantee "
                     "(it may be preempted)", minutes=round(d.get("waited_s", 0) / 60))
        return _("admitted from the queue after %(minutes)s minutes", minutes=round(d.get("waited_s", 0) / 60))
    if a == "job.preempt":
        return _("preempted at %(when)s so that %(account)s's job %(job)s could use its guaranteed GPUs; %(hours)s "
                 "GPU-hours lost; back in the queue in its original place", when=d.get("at", "")[:16].replace("T", " "),
                 account=d.get("by_account", "?"), job=d.get("by_job", "?"), hours=_gpu_hours(d.get("gpu_seconds_lost", 0)))
    if a == "job.reclaim":
        return ngettext("took back %(num)s GPU lent to other accounts (jobs %(jobs)s) to run within its guarantee",
                        "took back %(num)s GPUs lent to other accounts (jobs %(jobs)s) to run within its guarantee",
                        d.get("gpus", 0), jobs=", ".join(str(j) for j in d.get("victims", [])))
    if a == "job.reclassify":
        return _("now runs within its account's guarantee: it is no longer borrowed and is not preempted")
    if a == "job.cancel":
        return _("cancelled in the queue by %(who)s", who=who)
    if a == "job.requeue":
        return _("queued again: the portal stopped while creating it")
    if a == "job.submit_failed":
        return _("the cluster refused it")
    if a == "job.orphan_removed":
        return _("its leftover cluster objects were removed")
    if a == "job.delete":
        return _("deleted from the lists by %(who)s", who=who)
    return f"{a} ({who})"


def drain_words(d) -> str:
    """A drain with a grace period, as the owner of a job on the node reads it (job page, mail)."""
    return _("Node %(node)s is being drained by an administrator: this job will be stopped at %(when)s UTC. "
             "Reason: %(reason)s", node=d.node, when=d.stop_at.strftime("%Y-%m-%d %H:%M"), reason=d.reason)


def maintenance_words(m, under_way: bool | None = None, show_nodes: bool = True) -> str:
    """An announced maintenance's times and reach, in words (the banner, the job page, mail).
    Node names only for signed-in users (`show_nodes`)."""
    start, end = m.starts_at.strftime("%Y-%m-%d %H:%M"), m.ends_at.strftime("%Y-%m-%d %H:%M")
    nodes = ", ".join(m.nodes or ()) if show_nodes else ""
    if m.nodes and not show_nodes:
        return (_("Maintenance of some nodes under way until %(end)s UTC.", end=end) if under_way
                else _("Maintenance of some nodes from %(start)s to %(end)s UTC.", start=start, end=end))
    if under_way:
        return (_("Maintenance under way until %(end)s UTC on %(nodes)s.", end=end, nodes=nodes) if nodes
                else _("Maintenance of the whole cluster under way until %(end)s UTC.", end=end))
    return (_("Maintenance from %(start)s to %(end)s UTC on %(nodes)s.", start=start, end=end, nodes=nodes) if nodes
            else _("Maintenance of the whole cluster from %(start)s to %(end)s UTC.", start=start, end=end))


def target_type_words() -> dict[str, str]:
    """The kinds of object the audit log names."""
    return {"user": _("user"), "account": _("account"), "job": _("job"), "node": _("node"), "policy": _("policy"),
            "template": _("template"), "image": _("image"), "token": _("token"), "file": _("file"),
            "dataset": _("dataset"), "maintenance": _("maintenance")}


def account_description(account) -> str:
    """An account's description; the Default account's own words in the reader's language."""
    from .models.account import DEFAULT_ACCOUNT, DEFAULT_DESCRIPTION
    if account.name == DEFAULT_ACCOUNT and account.description == DEFAULT_DESCRIPTION:
        return _("Every user belongs to this account.")
    return account.description or ""


def policy_param_words(key: str) -> str:
    """A policy parameter in words (per job type: the type first); the key itself stays beside it."""
    kind, _dot, name = key.rpartition(".")
    words = {"window_minutes": _("Idle for (minutes)"), "threshold_percent": _("Idle at or below (percent utilisation)"),
             "grace_minutes": _("Stop after the warning (minutes)"), "hours_before": _("Warn before the time limit (hours)"),
             "minutes": _("Stop a JupyterLab job still pending after (minutes)"),
             "auto_max_hours": _("Grant automatically up to (hours)"),
             "auto_every_hours": _("At most one automatic grant per job every (hours)"),
             "max_request_hours": _("Largest request (hours)"),
             "grace_seconds": _("Grace after SIGTERM (seconds)"), "min_run_minutes": _("Minimum run before preemption (minutes)"),
             "owner_wait_minutes": _("Unless the owner has waited longer than (minutes)"),
             "max_preemptions": _("Preemptions of one job at most"),
             "backoff_minutes": _("Backoff before borrowing again (minutes)")}.get(name, name)
    return f"{type_words().get(kind, kind)}: {words}" if kind else words


def event_type_word(kind: str) -> str:
    return {"Normal": _("normal"), "Warning": _("warning")}.get(kind, kind)


def event_reason_words(reason: str) -> Markup:
    """A Kubernetes event's reason in words; one the portal does not know, as the code it is."""
    words = {"Scheduled": _("placed on a node"), "FailedScheduling": _("cannot be placed yet"),
             "Pulling": _("pulling the image"), "Pulled": _("image pulled"), "Created": _("container created"),
             "Started": _("container started"), "Completed": _("finished"), "Killing": _("stopping the container"),
             "BackOff": _("restarting after a failure"), "Failed": _("failed"), "Evicted": _("evicted"),
             "SuccessfulCreate": _("pod created"), "SuccessfulDelete": _("pod removed"), "Preempted": _("preempted"),
             "Suspended": _("suspended"), "Resumed": _("resumed"), "OOMKilling": _("out of memory")}.get(reason)
    return Markup(escape(words)) if words else Markup("<code>%s</code>") % reason
