"""Job templates (saved submission forms: mine, and those shared in my accounts) and the
admin-kept list of images the forms offer. Touches the DB only."""
from __future__ import annotations


from flask_babel import gettext as _
from sqlalchemy import or_, select
from sqlalchemy.orm import joinedload

from ..extensions import db
from ..vocabulary import JOB_TYPES
from ..models import Image, JobTemplate, Membership
from . import audit
from .context import Actor
from .errors import NotFound, ValidationFailed
from .job_rules import IMAGE_REFERENCE, images_for  # noqa: F401  (images_for: re-exported)
from .jobs import get_job
from .pagination import Page, paginate



def _member_account_ids(actor: Actor):
    return select(Membership.account_id).where(Membership.user_id == actor.user.id)


def save_template(actor: Actor, job_id: int, name: str, shared: bool) -> JobTemplate:
    """Save a job's submitted form as a template in the job's account."""
    job = get_job(actor, job_id)
    name = name.strip()
    if not name or len(name) > 128:
        raise ValidationFailed({"name": _("Give the template a name of at most 128 characters.")})
    template = JobTemplate(user_id=actor.user.id, account_id=job.account_id, name=name, job_type=job.job_type,
                           spec=dict(job.spec or {}, account_id=job.account_id), shared=shared)
    db.session.add(template)
    db.session.flush()
    audit.record(actor, "template.create", "template", template.id, {"name": name, "job": job.id, "shared": shared})
    db.session.commit()
    return template


def list_templates(actor: Actor, page: int, per_page: int) -> Page:
    """My templates and those shared in accounts I belong to."""
    stmt = (select(JobTemplate).options(joinedload(JobTemplate.user), joinedload(JobTemplate.account)).where(or_(JobTemplate.user_id == actor.user.id,
                                          JobTemplate.shared.is_(True) & JobTemplate.account_id.in_(_member_account_ids(actor))))
            .order_by(JobTemplate.name, JobTemplate.id))
    return paginate(stmt, page, per_page)


def get_template(actor: Actor, template_id: int) -> JobTemplate:
    template = db.session.get(JobTemplate, template_id)
    visible = template is not None and (
        actor.is_admin or template.user_id == actor.user.id
        or (template.shared and db.session.execute(_member_account_ids(actor).where(
            Membership.account_id == template.account_id)).first() is not None))
    if not visible:
        raise NotFound(_("No such template."))
    return template


def delete_template(actor: Actor, template_id: int) -> None:
    """The owner (or an admin) deletes a template; members who could use a shared one cannot."""
    template = get_template(actor, template_id)
    if not actor.is_admin and template.user_id != actor.user.id:
        raise NotFound(_("No such template."))
    audit.record(actor, "template.delete", "template", template.id, {"name": template.name})
    db.session.delete(template)
    db.session.commit()


# ---- images --------------------------------------------------------------------------------

def list_images(actor: Actor) -> list[Image]:
    actor.require_admin()
    return list(db.session.execute(select(Image).where(Image.owner_id.is_(None)).order_by(Image.reference)).scalars())


def add_image(actor: Actor, reference: str, description: str, job_types: list[str]) -> Image:
    actor.require_admin()
    reference = reference.strip()
    errors = {}
    if not reference or len(reference) > 512 or not IMAGE_REFERENCE.match(reference):
        errors["reference"] = _("Write an image reference such as pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime.")
    elif db.session.execute(select(Image.id).where(Image.reference == reference, Image.owner_id.is_(None))).first():
        errors["reference"] = _("This image is already in the list.")
    types = [t for t in job_types if t in JOB_TYPES]
    if not types:
        errors["job_types"] = _("Offer the image for at least one job type.")
    if errors:
        raise ValidationFailed(errors)
    image = Image(reference=reference, description=description.strip()[:256], job_types=",".join(types))
    db.session.add(image)
    db.session.flush()
    audit.record(actor, "image.add", "image", image.id, {"reference": reference})
    db.session.commit()
    return image


def delete_image(actor: Actor, image_id: int) -> None:
    actor.require_admin()
    image = db.session.get(Image, image_id)
    if image is None:
        raise NotFound(_("No such image."))
    audit.record(actor, "image.delete", "image", image.id, {"reference": image.reference})
    db.session.delete(image)
    db.session.commit()
