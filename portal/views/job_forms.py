"""The submission form, one shape per job type (JupyterLab, batch, distributed PyTorch).

Choices come from the database: the user's accounts, the GPU models on the cluster's nodes, the
admin-kept images. Only the fields below are ever read: whatever else is posted (privileged,
hostPath, hostNetwork, ...) never reaches a manifest, which the builders make from these values only.
"""
from __future__ import annotations

import re
import uuid
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, DecimalField, HiddenField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp, ValidationError

from ..services.job_templates import IMAGE_REFERENCE
from ..services.jobs import Submission

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ENV = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NNODES", "NPROC_PER_NODE", "RANK", "NODE_RANK",
                "JUPYTER_TOKEN"}
MAX_GPUS_PER_WORKER = 64
TYPE_LABELS = {"jupyter": _l("JupyterLab"), "batch": _l("Batch job"), "distributed": _l("Distributed PyTorch")}
TYPE_HELP = {
    "jupyter": _l("An interactive notebook with GPUs, opened in your browser."),
    "batch": _l("One container runs your command to the end; logs stay readable afterwards."),
    "distributed": _l("Several workers with GPUs each, wired for torchrun (MASTER_ADDR, WORLD_SIZE, NODE_RANK)."),
}


def parse_env(text: str) -> tuple[tuple[str, str], ...]:
    pairs, seen = [], set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not ENV_NAME.match(name):
            raise ValidationError(_l("Line %(n)s: write NAME=value (letters, digits and _ in the name).", n=n))
        if name in RESERVED_ENV:
            raise ValidationError(_l("Line %(n)s: %(name)s is set by Crater.", n=n, name=name))
        if name in seen:
            raise ValidationError(_l("Line %(n)s: %(name)s appears twice.", n=n, name=name))
        seen.add(name)
        pairs.append((name, value))
    return tuple(pairs)


class JobForm(FlaskForm):
    display_name = StringField(_l("Name"), validators=[DataRequired(), Length(max=128)],
                               description=_l("Any text, e.g. 训练 ResNet-50."))
    account_id = SelectField(_l("Account"), coerce=int, validate_choice=True)
    image = StringField(_l("Image"), validators=[DataRequired(), Length(max=512), Regexp(
        IMAGE_REFERENCE, message=_l("Write an image reference such as pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime."))])
    command_mode = SelectField(_l("Command is"), choices=[SelectChoice("shell", _l("shell text (run with /bin/sh -c)")),
                                                         SelectChoice("argv", _l("arguments, one per line"))], default="shell")
    command = TextAreaField(_l("Command"), validators=[Length(max=8000)])
    env = TextAreaField(_l("Environment variables"), validators=[Optional(), Length(max=8000)],
                        description=_l("One NAME=value per line."))
    gpu_model = SelectField(_l("GPU model"), default="")
    gpus = IntegerField(_l("GPUs"), default=1, validators=[Optional(), NumberRange(min=0)])
    workers = IntegerField(_l("Workers"), default=2, validators=[NumberRange(min=2, max=64)],
                           description=_l("Pods; each gets the GPUs, CPU and memory below."))
    cpu = DecimalField(_l("CPU cores"), default=Decimal("4"), places=1,
                       validators=[DataRequired(), NumberRange(min=Decimal("0.1"), max=256)])
    memory_gib = IntegerField(_l("Memory (GiB)"), default=32, validators=[DataRequired(), NumberRange(min=1, max=4096)])
    shm_gib = IntegerField(_l("Shared memory /dev/shm (GiB)"), default=0, validators=[Optional(), NumberRange(min=0, max=4096)],
                           description=_l("PyTorch data loaders need it; counted in the memory above."))
    working_dir = StringField(_l("Working directory"), validators=[Optional(), Length(max=256), Regexp(
        r"^/[^\x00-\x1f]*$", message=_l("An absolute path, e.g. /home/you/project."))])
    time_limit_hours = DecimalField(_l("Time limit (hours)"), places=1, validators=[DataRequired()])
    mount_home = BooleanField(_l("Mount my home folder"), default=True)
    mount_share = BooleanField(_l("Mount the account's shared folder"), default=True)
    notify = BooleanField(_l("Email me when it ends"))
    idempotency_key = HiddenField(validators=[Optional(), Regexp(r"^[A-Za-z0-9-]{8,64}$")])

    def setup(self, job_type: str, accounts: list, models: list[str], max_gpus: int, limits: tuple[float, float]):
        """Choices and limits for this user and type (call before validate)."""
        self.job_type, self.limits = job_type, limits
        self.account_id.choices = [SelectChoice(a.id, a.label) for a in accounts]
        self.gpu_model.choices = [SelectChoice("", _l("Any model"))] + [SelectChoice(m, m) for m in models]
        self.max_gpus = max_gpus or MAX_GPUS_PER_WORKER
        if self.time_limit_hours.data is None and not self.is_submitted():
            self.time_limit_hours.data = Decimal(str(limits[0]))
        if not self.idempotency_key.data:
            self.idempotency_key.data = uuid.uuid4().hex
        return self

    def validate_gpus(self, field):
        if (field.data or 0) > self.max_gpus:
            raise ValidationError(_l("At most %(n)s GPUs fit on one node.", n=self.max_gpus))

    def validate_command(self, field):
        if self.job_type != "jupyter" and not (field.data or "").strip():
            raise ValidationError(_l("What should the job run?"))

    def validate_workers(self, field):
        if self.job_type == "distributed" and field.data is None:
            raise ValidationError(_l("How many workers?"))

    def validate_env(self, field):
        self.parsed_env = parse_env(field.data or "")

    def validate_shm_gib(self, field):
        if (field.data or 0) > (self.memory_gib.data or 0):
            raise ValidationError(_l("Shared memory counts in the job's memory; ask for more memory."))

    def validate_time_limit_hours(self, field):
        low, high = Decimal("0.1"), Decimal(str(self.limits[1]))
        if field.data is None or not low <= field.data <= high:
            raise ValidationError(_l("Between %(low)s and %(high)s hours for this job type.", low=low, high=self.limits[1]))

    def to_submission(self, job_type: str) -> Submission:
        if job_type == "jupyter":
            command = ()
        elif self.command_mode.data == "argv":
            command = tuple(line.strip() for line in self.command.data.splitlines() if line.strip())
        else:
            command = self.command.data.strip()
        return Submission(
            job_type=job_type, account_id=self.account_id.data, display_name=self.display_name.data.strip(),
            image=self.image.data.strip(), command=command, env=getattr(self, "parsed_env", ()),
            gpu_model=self.gpu_model.data or "", gpus=self.gpus.data or 0,
            cpu_milli=int(self.cpu.data * 1000), memory_mib=self.memory_gib.data * 1024,
            shm_mib=(self.shm_gib.data or 0) * 1024, working_dir=(self.working_dir.data or "").strip(),
            time_limit_seconds=int(self.time_limit_hours.data * 3600),
            workers=self.workers.data if job_type == "distributed" else 1,
            mount_home=bool(self.mount_home.data), mount_share=bool(self.mount_share.data),
            notify=bool(self.notify.data), idempotency_key=self.idempotency_key.data or "")


def form_data_from_spec(spec: dict) -> dict:
    """A saved spec (clone, template) as the form's initial data."""
    command = spec.get("command") or ""
    data = {
        "display_name": spec.get("display_name", ""), "image": spec.get("image", ""),
        "command_mode": "argv" if isinstance(command, list) else "shell",
        "command": "\n".join(command) if isinstance(command, list) else command,
        "env": "\n".join(f"{k}={v}" for k, v in spec.get("env") or []),
        "gpu_model": spec.get("gpu_model", ""), "gpus": spec.get("gpus", 0),
        "workers": spec.get("workers", 2) if spec.get("job_type") == "distributed" else 2,
        "cpu": Decimal(spec.get("cpu_milli", 4000)) / 1000, "memory_gib": max(1, spec.get("memory_mib", 32768) // 1024),
        "shm_gib": spec.get("shm_mib", 0) // 1024, "working_dir": spec.get("working_dir", ""),
        "time_limit_hours": Decimal(spec.get("time_limit_seconds", 3600)) / 3600,
        "mount_home": spec.get("mount_home", False), "mount_share": spec.get("mount_share", False),
        "notify": spec.get("notify", False),
    }
    if spec.get("account_id"):
        data["account_id"] = spec["account_id"]
    return data
