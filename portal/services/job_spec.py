"""One job spec: the fields a submission has, their defaults and limits, written once in `FIELDS`,
and every conversion between the shapes a submission takes:

    form (views.job_forms) <-> Submission <-> stored spec (jobs.spec) <-> exported spec (page's
    YAML, API, craterctl) <-> API body (JSON/YAML) -> cluster request (cluster.manifests.JobRequest)

The limits the rules check (services.job_rules) and the API's OpenAPI description
(`body_schema`) come from the same table, so the description states every limit the service
enforces. Pure: no DB, no cluster (the caller passes what the deployment allows)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from flask_babel import gettext as _

from ..cluster.manifests import JobRequest, Mount
from ..models.types import MAX_ID
from ..vocabulary import JOB_TYPES, JobType
from .errors import ValidationFailed

IMAGE_PATTERN = r"^[a-z0-9]([a-z0-9._/:@-]*[a-zA-Z0-9_.-])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
IDEMPOTENCY_KEY_PATTERN = r"^([A-Za-z0-9-]{8,64})?$"  # "": none
NAME_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
NO_NUL = r"^[^\x00]*$"
RESERVED_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NNODES", "NPROC_PER_NODE", "RANK", "NODE_RANK", "JUPYTER_TOKEN")
WHEN_FULL = ("queue", "refuse", "borrow")  # borrow: run now on idle GPUs beyond the quota (preemptible)


@dataclass(frozen=True)
class Limits:
    """The bounds of the numbers and texts a spec may hold."""
    max_name: int = 128
    max_text: int = 8000  # command, and all environment names and values together
    max_env: int = 200
    max_working_dir: int = 256
    max_image: int = 512
    max_gpus_per_worker: int = 64
    max_workers: int = 64
    min_cpu_milli: int = 100
    max_cpu_milli: int = 256_000
    min_memory_mib: int = 1024
    max_memory_mib: int = 4096 * 1024
    min_time_limit: int = 360  # 0.1 h


LIMITS = Limits()


@dataclass(frozen=True)
class Field:
    """A spec field: its JSON kind, the default an absent value means, and what it says."""
    name: str
    kind: str  # str, int, bool, command, env
    default: Any
    text: str


FIELDS = (
    Field("job_type", "str", JobType.BATCH.value, "jupyter, batch or distributed"),
    Field("display_name", "str", "", "Any text (e.g. 训练 ResNet-50), without control characters"),
    Field("image", "str", "", "A container image reference"),
    Field("command", "command", "", "Shell text (/bin/sh -c), or the arguments; none for JupyterLab"),
    Field("env", "env", (), "Environment variables: [[NAME, value], ...] or {NAME: value}"),
    Field("gpu_model", "str", "", "A GPU model on the cluster's nodes; empty: any"),
    Field("gpus", "int", 0, "GPUs per worker (at most what one node of the model holds)"),
    Field("cpu_milli", "int", 4000, "CPU per worker, in thousandths of a core"),
    Field("memory_mib", "int", 32768, "Memory per worker, in MiB"),
    Field("shm_mib", "int", 0, "/dev/shm in MiB, counted in the memory (at most memory_mib)"),
    Field("working_dir", "str", "", "An absolute path; empty: the image's"),
    Field("time_limit_seconds", "int", 0, "0: the job type's default"),
    Field("workers", "int", 1, "Pods: 1, or 2 and more for a distributed job"),
    Field("mount_home", "bool", False, "Mount the owner's home folder"),
    Field("mount_share", "bool", False, "Mount the account's shared folder"),
    Field("notify", "bool", False, "Mail the owner when it ends"),
    Field("datasets", "names", (), "Datasets and models to mount read-only, by name: at /datasets/<name> or "
                                   "/models/<name> in every pod (at most 8)"),
    Field("ports", "ports", (), "Ports to open while it runs, each at an address of its own behind the portal's sign-in "
                                "(1024-65535, not 8888, at most 5), e.g. [6006] for a TensorBoard"),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)
DEFAULTS = {f.name: f.default for f in FIELDS}
DISTRIBUTED_WORKERS = 2  # what a new distributed form suggests
# What a body may carry besides the spec: which account, the resubmission key, what to do when full.
REQUEST_FIELDS = {"account": "str", "account_id": "int", "idempotency_key": "str", "when_full": "str"}


@dataclass(frozen=True)
class Submission:
    """A submission in the service's terms (per-worker resources, seconds, MiB)."""
    job_type: str
    account_id: int
    display_name: str
    image: str
    command: tuple[str, ...] | str = DEFAULTS["command"]
    env: tuple[tuple[str, str], ...] = DEFAULTS["env"]
    gpu_model: str = DEFAULTS["gpu_model"]
    gpus: int = DEFAULTS["gpus"]
    cpu_milli: int = DEFAULTS["cpu_milli"]
    memory_mib: int = DEFAULTS["memory_mib"]
    shm_mib: int = DEFAULTS["shm_mib"]
    working_dir: str = DEFAULTS["working_dir"]
    time_limit_seconds: int = DEFAULTS["time_limit_seconds"]
    workers: int = DEFAULTS["workers"]
    mount_home: bool = DEFAULTS["mount_home"]
    mount_share: bool = DEFAULTS["mount_share"]
    notify: bool = DEFAULTS["notify"]
    idempotency_key: str = ""
    annotations: tuple[tuple[str, str], ...] = field(default=())
    queue_if_full: bool = True  # over quota for now: wait in the account's queue (else: refuse)
    borrow: bool = False  # over quota for now: run on idle GPUs beyond it (may be preempted and requeued)
    ports: tuple[int, ...] = ()  # opened behind the portal's sign-in while it runs (services.job_ports)
    datasets: tuple[str, ...] = ()  # names (services.datasets); resolved at submission into:
    dataset_mounts: tuple[tuple[str, str], ...] = ()  # (sub-path of the shared claim, mount path), read-only


def check_idempotency_key(key: str) -> str | None:
    """The error for a malformed resubmission key (the form's hidden field, the API's body)."""
    if key and not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        return _("The idempotency key is 8 to 64 letters, digits or dashes.")
    return None


# ---- stored and exported -------------------------------------------------------------------------

def to_stored(sub: Submission) -> dict:
    """The spec kept on the job row (clone, templates, the YAML view): no secrets are in it."""
    spec = {name: getattr(sub, name) for name in FIELD_NAMES}
    spec["command"] = sub.command if isinstance(sub.command, str) else list(sub.command)
    spec["env"] = [list(pair) for pair in sub.env]
    if sub.annotations:
        spec["annotations"] = [list(pair) for pair in sub.annotations]
    for name in ("ports", "datasets"):  # most jobs have none: their stored spec stays as it was
        if getattr(sub, name):
            spec[name] = list(getattr(sub, name))
        else:
            spec.pop(name, None)
    if sub.dataset_mounts:  # as resolved when it was submitted (a queued job launches with them)
        spec["dataset_mounts"] = [list(m) for m in sub.dataset_mounts]
    return spec


def from_stored(spec: dict, account_id: int) -> Submission:
    """A stored spec (a job's, a template's) as the Submission it came from."""
    values = {**DEFAULTS, **{k: v for k, v in spec.items() if k in DEFAULTS and v is not None}}
    command = values["command"]
    values["command"] = command if isinstance(command, str) else tuple(command)
    values["env"] = tuple(tuple(p) for p in values["env"] or ())
    for name in ("gpus", "cpu_milli", "memory_mib", "shm_mib", "time_limit_seconds", "workers"):
        values[name] = int(values[name])
    for name in ("mount_home", "mount_share", "notify"):
        values[name] = bool(values[name])
    values["ports"] = tuple(int(p) for p in values["ports"] or ())
    values["datasets"] = tuple(str(d) for d in values["datasets"] or ())
    return Submission(account_id=account_id, annotations=tuple(tuple(p) for p in spec.get("annotations") or ()),
                      dataset_mounts=tuple(tuple(m) for m in spec.get("dataset_mounts") or ()), **values)


def exported(spec: dict | None, account_name: str) -> dict:
    """The spec a job page shows and the API exports: as submitted, with the account's name, so
    that it can be submitted again unchanged (page -> file -> craterctl -> API)."""
    spec = dict(spec or {})
    spec.pop("dataset_mounts", None)  # the portal's own record: resubmitting names the datasets again
    ordered = {k: spec.pop(k) for k in ("job_type", "display_name") if k in spec}
    return {**ordered, "account": account_name, **spec}


# ---- the API's body ----------------------------------------------------------------------------

_JSON = {"str": (str,), "int": (int,), "bool": (bool,), "command": (str, list), "env": (list, dict), "ports": (list,),
         "names": (list,)}


def from_body(body, account_id: int) -> Submission:
    """A body (JSON, or YAML as the job page shows it) as a Submission for the resolved account:
    unknown fields and wrong JSON types are errors per field (ValidationFailed); the rules
    (services.job_rules) check the rest."""
    if not isinstance(body, dict):
        raise ValidationFailed({"body": _("Send the job's spec as a JSON object.")})
    kinds = {**{f.name: f.kind for f in FIELDS}, **REQUEST_FIELDS}
    body = {name: int(v) if kinds.get(name) == "int" and isinstance(v, float) and v.is_integer() else v
            for name, v in body.items()}  # JSON's 2.0 is the integer 2
    errors = {}
    for name, value in body.items():
        kind = kinds.get(name)
        if kind is None:
            errors[name] = _("Unknown field %(name)s: a spec has %(fields)s.", name=name, fields=", ".join(sorted(kinds)))
        elif value is None:
            errors[name] = _("%(name)s has no value: leave it out for its default.", name=name)
        elif not isinstance(value, _JSON[kind]) or (kind == "int" and isinstance(value, bool)):
            errors[name] = _("%(name)s has the wrong type.", name=name)
    if errors:
        raise ValidationFailed(errors)
    command = body.get("command", DEFAULTS["command"])
    if isinstance(command, list) and not all(isinstance(c, str) for c in command):
        raise ValidationFailed({"command": _("command is a string, or a list of strings.")})
    env = body.get("env") or []
    if isinstance(env, dict):
        env = list(env.items())
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in env):
        raise ValidationFailed({"env": _("env is a list of [NAME, value] pairs, or an object of NAME: value.")})
    ports = [int(p) if isinstance(p, float) and p.is_integer() else p for p in body.get("ports") or []]  # 6006.0 too
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in ports):
        raise ValidationFailed({"ports": _("ports is a list of port numbers.")})
    datasets = body.get("datasets") or []
    if not all(isinstance(d, str) for d in datasets):
        raise ValidationFailed({"datasets": _("datasets is a list of names.")})
    when_full = body.get("when_full") or WHEN_FULL[0]
    if when_full not in WHEN_FULL:
        raise ValidationFailed({"when_full": _("when_full is queue, refuse or borrow.")})
    values = {name: body[name] for name in FIELD_NAMES if body.get(name) is not None}
    values.update(command=command if isinstance(command, str) else tuple(command), env=tuple(tuple(p) for p in env),
                  ports=tuple(ports), datasets=tuple(datasets))
    sub = replace(Submission(job_type=DEFAULTS["job_type"], account_id=account_id, display_name="", image=""), **values)
    return replace(sub, idempotency_key=body.get("idempotency_key") or "", queue_if_full=when_full != "refuse",
                   borrow=when_full == "borrow")


# ---- the cluster's request ---------------------------------------------------------------------

def cluster_request(job_id: int, sub: Submission, username: str, account: str, borrowed: bool = False,
                    grace_seconds: int | None = None) -> JobRequest:
    """What the cluster is asked to run: the manifests are built from these values only. A job
    that mounts its owner's home is told to write checkpoints under it (kept across a preemption)."""
    mounts = []
    if sub.mount_home:
        mounts.append(Mount(f"users/{username}", f"/home/{username}"))
    if sub.mount_share:
        mounts.append(Mount(f"accounts/{account}", "/shared"))
    mounts.extend(Mount(sub_path, path, read_only=True) for sub_path, path in sub.dataset_mounts)
    return JobRequest(
        job_id=job_id, job_type=sub.job_type, username=username, account=account,
        display_name=sub.display_name, image=sub.image, command=sub.command, env=sub.env,
        gpu_model=sub.gpu_model if sub.gpus else "", gpus=sub.gpus, cpu=f"{sub.cpu_milli}m",
        memory=f"{sub.memory_mib}Mi", shm=f"{sub.shm_mib}Mi" if sub.shm_mib else "",
        working_dir=sub.working_dir, time_limit_seconds=sub.time_limit_seconds, workers=sub.workers,
        mounts=tuple(mounts), annotations=sub.annotations, borrowed=borrowed, grace_seconds=grace_seconds, ports=sub.ports,
        checkpoint_dir=f"/home/{username}/.crater/checkpoints/{job_id}" if sub.mount_home
        else f"/shared/.crater/checkpoints/{username}/{job_id}" if sub.mount_share else "")


# ---- the API's description -----------------------------------------------------------------------

def _command_schema(required: bool) -> dict:
    text = {"type": "string", "maxLength": LIMITS.max_text, "pattern": NO_NUL}
    args = {"type": "array", "items": {"type": "string", "pattern": NO_NUL, "maxLength": LIMITS.max_text}}
    if required:
        text["pattern"] = r"^[^\x00]*\S[^\x00]*$"
        args = {**args, "minItems": 1, "contains": {"type": "string", "pattern": r"\S"}}
    return {"oneOf": [text, args]}


def _env_schema() -> dict:
    name = {"type": "string", "pattern": ENV_NAME_PATTERN, "maxLength": 256, "not": {"enum": list(RESERVED_ENV)}}
    value = {"type": "string", "pattern": NO_NUL}
    return {"oneOf": [
        {"type": "array", "maxItems": LIMITS.max_env, "uniqueItems": True,
         "items": {"type": "array", "prefixItems": [name, value], "items": False, "minItems": 2}},
        {"type": "object", "maxProperties": LIMITS.max_env, "propertyNames": name, "additionalProperties": value}]}


def body_schema(max_hours: dict[str, float], images: list[str] | None, models: dict[str, int],
                largest: tuple[int, int] | None = None) -> dict:
    """The JSON Schema of a submission body, one variant per job type, from the table's limits and
    the deployment's: `max_hours` per type, `images` (the offered list when free text is off,
    else None), `models` (GPU model -> GPUs on its largest node), `largest` (the most CPU and
    memory one node offers). Rules across fields that JSON
    Schema cannot state (/dev/shm within the memory, GPUs per node of the chosen model, no name
    twice in env, all environment text within the limit) are in the descriptions."""
    most_gpus = max(models.values(), default=LIMITS.max_gpus_per_worker) or LIMITS.max_gpus_per_worker
    most_cpu = min(LIMITS.max_cpu_milli, largest[0] or LIMITS.max_cpu_milli) if largest else LIMITS.max_cpu_milli
    most_memory = min(LIMITS.max_memory_mib, largest[1] or LIMITS.max_memory_mib) if largest else LIMITS.max_memory_mib
    base = {
        "display_name": {"type": "string", "minLength": 1, "maxLength": LIMITS.max_name, "pattern": NAME_PATTERN},
        "image": ({"type": "string", "enum": images} if images is not None else
                  {"type": "string", "minLength": 1, "maxLength": LIMITS.max_image, "pattern": IMAGE_PATTERN}),
        "env": _env_schema(),
        "gpu_model": {"type": "string", "enum": [""] + sorted(models)} if models else {"type": "string", "maxLength": 128},
        "gpus": {"type": "integer", "minimum": 0, "maximum": most_gpus},
        "cpu_milli": {"type": "integer", "minimum": LIMITS.min_cpu_milli, "maximum": most_cpu},
        "memory_mib": {"type": "integer", "minimum": LIMITS.min_memory_mib, "maximum": most_memory},
        "shm_mib": {"type": "integer", "minimum": 0, "maximum": most_memory},
        "working_dir": {"type": "string", "maxLength": LIMITS.max_working_dir,
                        "pattern": r"^(/[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*)?$"},
        "mount_home": {"type": "boolean"}, "mount_share": {"type": "boolean"}, "notify": {"type": "boolean"},
        "datasets": {"type": "array", "maxItems": 8, "uniqueItems": True,
                     "items": {"type": "string", "minLength": 1, "maxLength": 63}},
        "ports": {"type": "array", "maxItems": 5, "uniqueItems": True,
                  "items": {"type": "integer", "minimum": 1024, "maximum": 65535, "not": {"enum": [8888]}}},
        "account": {"type": "string", "description": "The account's name (or give account_id); default: your only account"},
        "account_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        "idempotency_key": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN,
                            "description": "The same key again returns the first job (a resubmission); empty: none"},
        "when_full": {"type": "string", "enum": list(WHEN_FULL), "default": WHEN_FULL[0],
                      "description": "Over the account's quota for now: wait in its queue, refuse, or borrow (run now on "
                                     "idle GPUs beyond the quota; may be preempted and requeued; batch and distributed "
                                     "jobs, JupyterLab where the account allows it)"},
    }
    texts = {f.name: f.text for f in FIELDS}
    variants = []
    for job_type in JOB_TYPES:
        high = int(max_hours[job_type] * 3600)
        props = {
            "job_type": {"type": "string", "enum": [job_type]},
            **base,
            "command": _command_schema(required=job_type != JobType.JUPYTER),
            "time_limit_seconds": {"oneOf": [{"type": "integer", "enum": [0]},
                                             {"type": "integer", "minimum": LIMITS.min_time_limit, "maximum": high}]},
            "workers": ({"type": "integer", "minimum": 2, "maximum": LIMITS.max_workers}
                        if job_type == JobType.DISTRIBUTED else {"type": "integer", "enum": [1]}),
        }
        for name, schema in props.items():
            if name in texts and "description" not in schema:
                props[name] = {**schema, "description": texts[name]}
        required = ["display_name", "image"] + (["job_type"] if job_type != JobType.BATCH else [])
        if job_type != JobType.JUPYTER:
            required.append("command")
        if job_type == JobType.DISTRIBUTED:
            required.append("workers")
        variants.append({"title": job_type, "type": "object", "properties": props, "required": required,
                         "additionalProperties": False})
    return {"oneOf": variants, "description": "The same fields as the job page's Submitted spec (which can be sent "
                                              "back unchanged); job_type defaults to batch"}
