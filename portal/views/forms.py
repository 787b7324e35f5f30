"""Flask-WTF forms: parsing and field-level checks with translatable messages. Rules that need the
database (unique names, known users) live in the services, which report them per field."""
from __future__ import annotations

import re

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, DateTimeLocalField, HiddenField, IntegerField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp, ValidationError

from ..services.accounts import AccountInput
from ..services.errors import ValidationFailed

DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
MAX_GPUS = 4096
MAX_CPU = 65536
MAX_MEMORY_GIB = 1048576
MAX_JOBS = 10000
GPU_MODEL_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]{0,127})\s*[:=]\s*(\d{1,6})\s*$")


class WholeNumberField(IntegerField):
    """An integer of sane size: digits beyond any bound the portal allows are refused while parsing
    (WTForms' range check would otherwise fail on integers too large for a float)."""

    LARGEST = 10**12

    def process_formdata(self, valuelist):
        super().process_formdata(valuelist)
        if self.data is not None and abs(self.data) > self.LARGEST:
            self.data = None
            raise ValueError(_l("Write a whole number of sane size."))


def quota_field(label, maximum):
    return WholeNumberField(label, validators=[Optional(), NumberRange(min=0, max=maximum)],
                        description=_l("Empty means no limit."))


class CsrfOnlyForm(FlaskForm):
    """For buttons that change state (stop, deactivate, remove): just the CSRF token."""


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


class AccountForm(FlaskForm):
    name = StringField(_l("Name"), validators=[
        DataRequired(), Length(max=63),
        Regexp(DNS_LABEL, message=_l("Use lowercase letters, digits and '-', starting and ending with a letter or digit.")),
    ], description=_l("Used in cluster labels; cannot be changed later."))
    display_name = StringField(_l("Display name"), validators=[Optional(), Length(max=128)])
    description = TextAreaField(_l("Description"), validators=[Optional(), Length(max=2000)])
    gpu_quota = quota_field(_l("GPUs (all models)"), MAX_GPUS)
    gpu_model_quotas = TextAreaField(
        _l("GPUs per model"), validators=[Optional(), Length(max=4000)],
        description=_l("One line per model, e.g. NVIDIA-A100-SXM4-80GB: 8"))
    cpu_quota = quota_field(_l("CPU cores"), MAX_CPU)
    memory_quota_gib = quota_field(_l("Memory (GiB)"), MAX_MEMORY_GIB)
    max_jobs = quota_field(_l("Concurrent jobs"), MAX_JOBS)
    expires_on = DateField(_l("Expires on"), validators=[Optional()])
    borrow_limit = WholeNumberField(_l("GPUs it may borrow beyond its guarantee"),
                                    validators=[Optional(), NumberRange(min=0, max=MAX_GPUS)],
                                    description=_l("At once, on idle GPUs of other accounts. Empty: as many as are idle; 0: never."))
    lend_limit = WholeNumberField(_l("GPUs it never lends"), validators=[Optional(), NumberRange(min=0, max=MAX_GPUS)],
                                  description=_l("Of its unused guarantee, kept free for its own jobs. Empty: lends them all "
                                                 "(taken back by preemption when its jobs need them)."))
    borrow_jupyter = BooleanField(_l("JupyterLab jobs may borrow GPUs too"))

    def validate_gpu_model_quotas(self, field):
        self.parsed_model_quotas = parse_model_quotas(field.data or "")

    def to_input(self) -> AccountInput:
        return AccountInput(
            name=self.name.data.strip(), display_name=(self.display_name.data or "").strip(),
            description=(self.description.data or "").strip(), gpu_quota=self.gpu_quota.data,
            cpu_quota=self.cpu_quota.data, memory_quota_gib=self.memory_quota_gib.data,
            max_jobs=self.max_jobs.data, expires_on=self.expires_on.data,
            gpu_model_quotas=getattr(self, "parsed_model_quotas", {}),
            borrow_limit=self.borrow_limit.data, lend_limit=self.lend_limit.data, borrow_jupyter=bool(self.borrow_jupyter.data),
        )


def parse_model_quotas(text: str) -> dict[str, int]:
    quotas: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = GPU_MODEL_LINE.match(line)
        if not m:
            raise ValidationError(_l("Line %(n)s: write MODEL: COUNT.", n=n))
        model, count = m.group(1), int(m.group(2))
        if count > MAX_GPUS:
            raise ValidationError(_l("Line %(n)s: at most %(max)s GPUs.", n=n, max=MAX_GPUS))
        if model in quotas:
            raise ValidationError(_l("Line %(n)s: %(model)s appears twice.", n=n, model=model))
        quotas[model] = count
    return quotas


def format_model_quotas(quotas) -> str:
    return "\n".join(f"{q.gpu_model}: {q.gpus}" for q in quotas)


MEMBER_ROLES = [SelectChoice("member", _l("Member")), SelectChoice("manager", _l("Manager"))]


class MemberForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    role = SelectField(_l("Role"), choices=MEMBER_ROLES, default="member")
    gpu_cap = WholeNumberField(_l("GPU cap"), validators=[Optional(), NumberRange(min=0, max=MAX_GPUS)],
                               description=_l("Empty: only the account's quota applies."))
    files_write = BooleanField(_l("May write to the account's share"))


class MemberUpdateForm(FlaskForm):
    role = SelectField(_l("Role"), choices=MEMBER_ROLES)
    gpu_cap = WholeNumberField(_l("GPU cap"), validators=[Optional(), NumberRange(min=0, max=MAX_GPUS)])
    files_write = BooleanField(_l("May write to the account's share"))


class RestrictionForm(FlaskForm):
    kind = SelectField(_l("Restrict from"), choices=[
        SelectChoice("submit", _l("submitting jobs (queued jobs wait)")),
        SelectChoice("storage", _l("the shared storage (files and WebDAV)")),
        SelectChoice("portal", _l("the portal as a whole (pages, API, craterctl, terminals, WebDAV)"))])
    until = DateTimeLocalField(_l("Until (UTC)"), format="%Y-%m-%dT%H:%M", validators=[Optional()],
                               description=_l("Empty: until an administrator lifts it."))
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(), Length(max=500)],
                           description=_l("The user reads it wherever they are refused."))
    stop_running = BooleanField(_l("Stop their running jobs now"))


class RoleForm(FlaskForm):
    role = SelectField(_l("Role"), choices=[SelectChoice("user", _l("User")), SelectChoice("admin", _l("Administrator"))])


def apply_errors(form: FlaskForm, exc: ValidationFailed, names: dict | None = None) -> None:
    """Show a service's per-field errors on the form (unknown fields go to the form-level list);
    `names` maps the service's field names to the form's where they differ."""
    for name, message in exc.errors.items():
        field = form._fields.get((names or {}).get(name, name))
        if field is not None:
            field.errors = [*field.errors, message] if isinstance(field.errors, list) else [message]
        else:
            form.form_errors.append(message)
