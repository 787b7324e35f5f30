"""The submission form, one shape per job type (JupyterLab, batch, distributed PyTorch).

The form only parses: text to numbers, lines to environment pairs and argv. Every rule (bounds,
GPUs per node, reserved variables, /dev/shm within memory, the time limit, the image list) lives
in `portal.services.job_rules`, so the API and the CLI get the same checks; its field errors are
shown at the form's fields through FIELD_OF. Choices come from the database: the user's
accounts, the GPU models on the cluster's nodes. Only the fields below are ever read: whatever
else is posted (privileged, hostPath, hostNetwork, ...) never reaches a manifest, which the
builders make from these values only.
"""
from __future__ import annotations

import re
import uuid
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, DecimalField, HiddenField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Optional, ValidationError

from ..models.account import DEFAULT_ACCOUNT
from ..vocabulary import JobType
from ..services.job_spec import DEFAULTS, DISTRIBUTED_WORKERS, Submission, from_stored
from .forms import WholeNumberField

ENV_LINE = re.compile(r"^\s*([^=\s]+)\s*=(.*)$")
LARGEST = Decimal("1e9")  # beyond any bound the rules allow: refuse before multiplying
# Submission field -> form field, for the rules' errors.
FIELD_OF = {"display_name": "display_name", "account_id": "account_id", "image": "image", "command": "command",
            "env": "env", "gpu_model": "gpu_model", "gpus": "gpus", "workers": "workers", "cpu_milli": "cpu",
            "memory_mib": "memory_gib", "shm_mib": "shm_gib", "working_dir": "working_dir",
            "time_limit_seconds": "time_limit_hours", "idempotency_key": "idempotency_key", "ports": "ports",
            "datasets": "datasets"}


def parse_env(text: str) -> tuple[tuple[str, str], ...]:
    """NAME=value lines (blank lines and # comments skipped) as pairs; the names are checked by the rules."""
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = ENV_LINE.match(line)
        if not match:
            raise ValidationError(_l("Line %(n)s: write NAME=value (letters, digits and _ in the name).", n=n))
        pairs.append((match.group(1), match.group(2)))
    return tuple(pairs)


class NumberField(DecimalField):
    """A decimal that is a finite number of sane size ("NaN", "Infinity", "1e999999" are refused)."""

    def pre_validate(self, form):
        if self.data is not None and (not self.data.is_finite() or abs(self.data) > LARGEST):
            self.data = None
            raise ValidationError(_l("Write a number."))


class JobForm(FlaskForm):
    display_name = StringField(_l("Name"), description=_l("Any text, e.g. 训练 ResNet-50."))
    account_id = SelectField(_l("Account"), coerce=int, validate_choice=True)
    image = StringField(_l("Image"))
    command_mode = SelectField(_l("Command is"), choices=[SelectChoice("shell", _l("shell text (run with /bin/sh -c)")),
                                                         SelectChoice("argv", _l("arguments, one per line"))], default="shell")
    command = TextAreaField(_l("Command"))
    env = TextAreaField(_l("Environment variables"), description=_l("One NAME=value per line."))
    gpu_model = SelectField(_l("GPU model"), default="")
    gpus = WholeNumberField(_l("GPUs"), default=1, validators=[Optional()])
    workers = WholeNumberField(_l("Workers"), default=DISTRIBUTED_WORKERS, validators=[Optional()],
                           description=_l("Pods; each gets the GPUs, CPU and memory below."))
    cpu = NumberField(_l("CPU cores"), default=Decimal(DEFAULTS["cpu_milli"]) / 1000, places=1, validators=[InputRequired()])
    memory_gib = WholeNumberField(_l("Memory (GiB)"), default=DEFAULTS["memory_mib"] // 1024, validators=[InputRequired()])
    shm_gib = WholeNumberField(_l("Shared memory /dev/shm (GiB)"), default=DEFAULTS["shm_mib"] // 1024, validators=[Optional()],
                           description=_l("PyTorch data loaders need it; counted in the memory above."))
    working_dir = StringField(_l("Working directory"))
    time_limit_hours = NumberField(_l("Time limit (hours)"), places=1, validators=[InputRequired()])
    mount_home = BooleanField(_l("Mount my home folder"), default=True)
    mount_share = BooleanField(_l("Mount the account's shared folder"), default=True)
    notify = BooleanField(_l("Email me when it ends"))
    datasets = SelectMultipleField(_l("Datasets and models"), validate_choice=False, description=_l(
        "Mounted read-only at /datasets/<name> or /models/<name> in every pod."))
    ports = StringField(_l("Ports to open"), description=_l(
        "E.g. 6006 for a TensorBoard: each at an address of its own while the job runs, only for you, signed in."))
    when_full = SelectField(_l("If the account's quota is in use"), default="queue", validate_choice=True, choices=[
        SelectChoice("queue", _l("wait in the account's queue and start when its turn comes")),
        SelectChoice("refuse", _l("refuse it now (e.g. for a quick notebook)")),
        SelectChoice("borrow", _l("run now on idle GPUs beyond the quota (may be preempted and requeued)"))])
    idempotency_key = HiddenField()  # its rule: services.job_rules

    def setup(self, job_type: str, accounts: list, models: list[str], limits: tuple[float, float], datasets: list = ()):
        """Choices and the default time limit for this user and type (call before validate)."""
        self.job_type, self.limits = job_type, limits
        self.datasets.choices = [SelectChoice(d.name, f"{d.mount_path}" + (f" · {d.tags}" if d.tags else ""))
                                 for d in datasets]
        # A lab's account first (and chosen), the Default account every user is in last.
        accounts = sorted(accounts, key=lambda a: a.name == DEFAULT_ACCOUNT)
        self.account_id.choices = [SelectChoice(a.id, a.label) for a in accounts]
        if self.account_id.data is None and not self.is_submitted() and accounts:
            self.account_id.data = accounts[0].id
        self.gpu_model.choices = [SelectChoice("", _l("Any model"))] + [SelectChoice(m, m) for m in models]
        if job_type == JobType.JUPYTER and not any(getattr(a, "borrow_jupyter", False) for a in accounts):
            self.when_full.choices = [c for c in self.when_full.choices if c.value != "borrow"]
        if self.time_limit_hours.data is None and not self.is_submitted():
            self.time_limit_hours.data = Decimal(str(limits[0]))
        if not self.idempotency_key.data:
            self.idempotency_key.data = uuid.uuid4().hex
        return self

    def validate_workers(self, field):
        if self.job_type == JobType.DISTRIBUTED and field.data is None:
            raise ValidationError(_l("How many workers?"))

    def validate_env(self, field):
        self.parsed_env = parse_env(field.data or "")

    def validate_ports(self, field):
        words = [w for w in re.split(r"[\s,]+", field.data or "") if w]
        if any(not w.isdigit() or len(w) > 5 for w in words):
            raise ValidationError(_l("Port numbers, separated by commas (e.g. 6006, 8080)."))
        self.parsed_ports = tuple(int(w) for w in words)

    def best_effort(self, job_type: str) -> Submission:
        """The submission as far as the form parsed: a field that did not parse takes its default,
        so the rules can still judge the others (every error at once)."""
        saved = {f.name: f.data for f in self}
        defaults = {"cpu": Decimal(DEFAULTS["cpu_milli"]) / 1000, "memory_gib": DEFAULTS["memory_mib"] // 1024,
                    "time_limit_hours": Decimal(str(self.limits[0])), "workers": DISTRIBUTED_WORKERS}
        try:
            for name, value in defaults.items():
                field = getattr(self, name)
                if field.errors or field.data is None:
                    field.data = value
            return self.to_submission(job_type)
        finally:
            for f in self:
                f.data = saved[f.name]

    def to_submission(self, job_type: str) -> Submission:
        if job_type == JobType.JUPYTER:
            command = ()
        elif self.command_mode.data == "argv":
            command = tuple(line.strip() for line in (self.command.data or "").splitlines() if line.strip())
        else:
            command = (self.command.data or "").strip()
        return Submission(
            job_type=job_type, account_id=self.account_id.data, display_name=(self.display_name.data or "").strip(),
            image=(self.image.data or "").strip(), command=command, env=getattr(self, "parsed_env", ()),
            gpu_model=self.gpu_model.data or "", gpus=self.gpus.data or 0,
            cpu_milli=int(self.cpu.data * 1000), memory_mib=self.memory_gib.data * 1024,
            shm_mib=(self.shm_gib.data or 0) * 1024, working_dir=(self.working_dir.data or "").strip(),
            time_limit_seconds=int(self.time_limit_hours.data * 3600),
            workers=self.workers.data if job_type == JobType.DISTRIBUTED else 1,
            mount_home=bool(self.mount_home.data), mount_share=bool(self.mount_share.data),
            notify=bool(self.notify.data), idempotency_key=self.idempotency_key.data or "",
            queue_if_full=self.when_full.data != "refuse", borrow=self.when_full.data == "borrow",
            ports=getattr(self, "parsed_ports", ()), datasets=tuple(self.datasets.data or ()))


def form_data_from_spec(spec: dict) -> dict:
    """A saved spec (clone, template) as the form's initial data, in the form's units."""
    sub = from_stored(spec, spec.get("account_id") or 0)
    data = {
        "display_name": sub.display_name, "image": sub.image,
        "command_mode": "shell" if isinstance(sub.command, str) else "argv",
        "command": sub.command if isinstance(sub.command, str) else "\n".join(sub.command),
        "env": "\n".join(f"{k}={v}" for k, v in sub.env),
        "gpu_model": sub.gpu_model, "gpus": sub.gpus,
        "workers": sub.workers if sub.job_type == JobType.DISTRIBUTED else DISTRIBUTED_WORKERS,
        "cpu": Decimal(sub.cpu_milli) / 1000, "memory_gib": max(1, sub.memory_mib // 1024),
        "shm_gib": sub.shm_mib // 1024, "working_dir": sub.working_dir,
        "time_limit_hours": Decimal(sub.time_limit_seconds or 3600) / 3600,
        "mount_home": sub.mount_home, "mount_share": sub.mount_share, "notify": sub.notify,
        "ports": ", ".join(str(p) for p in sub.ports), "datasets": list(sub.datasets),
    }
    if spec.get("account_id"):
        data["account_id"] = spec["account_id"]
    return data
