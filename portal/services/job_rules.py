"""The rules every job submission obeys, whatever it came through (the form, a template, the JSON
API, the CLI, the queue's admitter): the job type, a name, an image (from the admin-kept list when
custom images are off), a command for batch and distributed jobs, environment names Crater does
not set itself, GPUs that fit on one node of the chosen model, CPU and memory in sane bounds,
/dev/shm within the memory, an absolute working directory, a time limit within the type's bounds,
a worker count for distributed jobs. Errors are reported per field of `Submission`
(ValidationFailed), so a form shows each at its field and the API returns them as a list.

Reads the DB (node inventory, image list); no cluster."""
from __future__ import annotations

import re
from dataclasses import dataclass

from flask_babel import gettext as _
from sqlalchemy import select

from ..extensions import db
from ..models import Image

from ..vocabulary import JOB_TYPES, JobType
from . import job_queries, job_spec
from .errors import ValidationFailed

IMAGE_REFERENCE = re.compile(job_spec.IMAGE_PATTERN)
ENV_NAME = re.compile(job_spec.ENV_NAME_PATTERN)
RESERVED_ENV = frozenset(job_spec.RESERVED_ENV)
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
L = job_spec.LIMITS


@dataclass(frozen=True)
class SubmissionPolicy:
    """What the deployment allows: hours (default, maximum) per job type, free-text images."""
    time_limits: dict
    custom_images: bool = True
    jupyter_limit: int | None = None

    @classmethod
    def from_config(cls, config) -> SubmissionPolicy:
        return cls(time_limits=dict(config["TIME_LIMITS"]), custom_images=bool(config["CUSTOM_IMAGES"]),
                   jupyter_limit=config.get("MAX_JUPYTER_PER_USER"))

    def default_seconds(self, job_type: str) -> int:
        return int(self.time_limits[job_type][0] * 3600)

    def max_seconds(self, job_type: str) -> int:
        return int(self.time_limits[job_type][1] * 3600)


def images_for(job_type: str) -> list[Image]:
    """The admin-kept images offered for a job type (users' own are in services.images)."""
    return [i for i in db.session.execute(select(Image).where(Image.owner_id.is_(None)).order_by(Image.reference)).scalars()
            if i.offered_for(job_type)]


def spec_context(policy: SubmissionPolicy) -> dict:
    """What the API's description of a submission depends on besides the spec's own table: the
    longest time limit per type, the offered images when free text is off, the GPU models."""
    return {"max_hours": {t: policy.max_seconds(t) / 3600 for t in JOB_TYPES},
            "images": None if policy.custom_images else sorted({i.reference for t in JOB_TYPES for i in images_for(t)}),
            "models": {m: n for m, n in job_queries.gpus_per_node_by_model().items() if m},
            "largest": job_queries.largest_nodes().get("")}


def check(form, policy: SubmissionPolicy, own_images: set[str] = frozenset()) -> None:
    """Raise ValidationFailed naming every broken rule; return quietly when the form is fine.
    `own_images`: the submitter's own and shared images, offered besides the admins' list."""
    errors: dict[str, str] = {}
    if form.job_type not in JOB_TYPES:
        raise ValidationFailed({"job_type": _("Choose one of: %(types)s.", types=", ".join(JOB_TYPES))})
    _check_text(form, errors)
    _check_image(form, policy, errors, own_images)
    _check_env(form.env, errors)
    _check_resources(form, errors)
    key_error = job_spec.check_idempotency_key(form.idempotency_key)
    if key_error:
        errors["idempotency_key"] = key_error
    low, high = L.min_time_limit, policy.max_seconds(form.job_type)
    if not low <= form.time_limit_seconds <= high:
        errors["time_limit_seconds"] = _("Between %(low)s and %(high)s hours for this job type.", low=0.1,
                                         high=f"{high / 3600:g}")
    if errors:
        raise ValidationFailed(errors)


def _check_text(form, errors: dict) -> None:
    name = form.display_name
    if not name.strip():
        errors["display_name"] = _("Give the job a name.")
    elif len(name) > L.max_name or CONTROL.search(name):
        errors["display_name"] = _("At most %(n)s characters, without control characters.", n=L.max_name)
    command = form.command
    parts = [command] if isinstance(command, str) else list(command)
    if any(not isinstance(p, str) or "\x00" in p for p in parts) or sum(len(p) for p in parts if isinstance(p, str)) > L.max_text:
        errors["command"] = _("At most %(n)s characters, without NUL characters.", n=L.max_text)
    elif form.job_type != JobType.JUPYTER and not any(p.strip() for p in parts):
        errors["command"] = _("What should the job run?")
    wd = form.working_dir
    if wd and (len(wd) > L.max_working_dir or not wd.startswith("/") or CONTROL.search(wd)):
        errors["working_dir"] = _("An absolute path, e.g. /home/you/project.")
    ports = form.ports
    if ports and (len(ports) > 5 or len(set(ports)) != len(ports)
                  or any(not 1024 <= p <= 65535 or p == 8888 for p in ports)):
        errors["ports"] = _("At most 5 different ports from 1024 to 65535, not 8888 (JupyterLab's own).")


def _check_image(form, policy: SubmissionPolicy, errors: dict, own_images: set[str]) -> None:
    image = form.image
    if not image or len(image) > L.max_image or not IMAGE_REFERENCE.match(image):
        errors["image"] = _("Write an image reference such as pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime.")
    elif not policy.custom_images and image not in own_images | {i.reference for i in images_for(form.job_type)}:
        errors["image"] = _("Choose one of the offered images.")


def _check_env(env, errors: dict) -> None:
    seen: set[str] = set()
    if len(env) > L.max_env:
        errors["env"] = _("At most %(n)s environment variables.", n=L.max_env)
        return
    total = 0
    for pair in env:
        if len(pair) != 2 or not all(isinstance(x, str) for x in pair):
            errors["env"] = _("Write NAME=value pairs.")
            return
        name, value = pair
        total += len(name) + len(value)
        if not ENV_NAME.match(name) or len(name) > 256:
            errors["env"] = _("%(name)s is not a valid variable name (letters, digits and _).", name=name[:60])
        elif name in RESERVED_ENV:
            errors["env"] = _("%(name)s is set by Crater.", name=name)
        elif name in seen:
            errors["env"] = _("%(name)s appears twice.", name=name)
        elif "\x00" in value:
            errors["env"] = _("The value of %(name)s contains a NUL character.", name=name)
        if "env" in errors:
            return
        seen.add(name)
    if total > L.max_text:
        errors["env"] = _("At most %(n)s characters, without NUL characters.", n=L.max_text)


def _check_resources(form, errors: dict) -> None:
    per_model = job_queries.gpus_per_node_by_model()
    models = {m for m in per_model if m}
    if form.gpu_model and (len(form.gpu_model) > 128 or (models and form.gpu_model not in models)):
        errors["gpu_model"] = _("No node has GPUs of model %(model)s.", model=form.gpu_model[:128])
    most = (per_model.get(form.gpu_model) if form.gpu_model in models else max(per_model.values(), default=0)) \
        or L.max_gpus_per_worker
    if form.gpus < 0:
        errors["gpus"] = _("Zero or more GPUs.")
    elif form.gpus > most:
        errors["gpus"] = _("At most %(n)s GPUs fit on one node.", n=most)
    if not L.min_cpu_milli <= form.cpu_milli <= L.max_cpu_milli:
        errors["cpu_milli"] = _("Between %(low)s and %(high)s CPU cores.", low=L.min_cpu_milli / 1000, high=L.max_cpu_milli // 1000)
    if not L.min_memory_mib <= form.memory_mib <= L.max_memory_mib:
        errors["memory_mib"] = _("Between %(low)s and %(high)s GiB.", low=L.min_memory_mib // 1024, high=L.max_memory_mib // 1024)
    _check_node_size(form, errors)
    if form.shm_mib < 0:
        errors["shm_mib"] = _("Zero or more GiB.")
    elif "memory_mib" not in errors and form.shm_mib > form.memory_mib:  # only against a memory that is itself right
        errors["shm_mib"] = _("Shared memory counts in the job's memory; ask for more memory.")
    if form.job_type == JobType.DISTRIBUTED:
        if not 2 <= form.workers <= L.max_workers:
            errors["workers"] = _("Between %(low)s and %(high)s workers.", low=2, high=L.max_workers)
    elif form.workers != 1:
        errors["workers"] = _("Only distributed jobs have several workers.")


def _check_node_size(form, errors: dict) -> None:
    """A worker must fit on one node: no node of the chosen GPU model (or, without GPUs, none at
    all) offers more CPU or memory than its largest. Refused at submission with the numbers,
    before the queue could promise it a start."""
    sizes = job_queries.largest_nodes()
    largest = sizes.get(form.gpu_model if form.gpus and form.gpu_model else "") or sizes.get("")
    if not largest:
        return  # no node seen yet: nothing to compare with
    cpu, memory = largest
    if "cpu_milli" not in errors and cpu and form.cpu_milli > cpu:
        errors["cpu_milli"] = _("No node can hold %(ask)s CPU cores per worker: the largest has %(most)s.",
                                ask=f"{form.cpu_milli / 1000:g}", most=f"{cpu / 1000:g}")
    if "memory_mib" not in errors and memory and form.memory_mib > memory:
        errors["memory_mib"] = _("No node can hold %(ask)s GiB of memory per worker: the largest has %(most)s GiB.",
                                 ask=f"{form.memory_mib / 1024:g}", most=f"{memory / 1024:g}")
