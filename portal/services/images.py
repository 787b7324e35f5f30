"""Users' own images: a user registers an image reference with a description, the job types it
suits and a visibility (private, shared with one of their accounts, or public once an admin
approves); the image pickers offer the admins' list, then one's own and those shared with one.

The optional reachability check asks the image's registry for its manifest (the Docker Registry
HTTP API v2, with an anonymous token where the registry asks for one) within a timeout, and says
"found", "missing", or "unknown" when it cannot tell (an air-gapped cluster, a registry that
wants credentials, a timeout)."""
from __future__ import annotations

import re
import requests
from flask_babel import gettext as _
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models import Account, Image, Membership, utcnow
from ..vocabulary import JOB_TYPES
from . import audit
from .context import Actor
from .errors import Forbidden, NotFound, ValidationFailed
from .job_rules import IMAGE_REFERENCE

VISIBILITIES = ("private", "account", "public")
FOUND, MISSING, UNKNOWN = "found", "missing", "unknown"
MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json"))


def _visible(actor: Actor):
    """Users' images the actor may use: their own, their accounts' shared ones, approved public."""
    mine = select(Membership.account_id).where(Membership.user_id == actor.user.id)
    return or_(Image.owner_id == actor.user.id,
               (Image.visibility == "account") & Image.account_id.in_(mine),
               (Image.visibility == "public") & Image.approved.is_(True))


def offered(actor: Actor, job_type: str | None = None) -> list[Image]:
    """Users' images the actor may use (for `job_type` when given), newest first; the admins' list
    is job_rules.images_for."""
    if actor.user is None:
        return []
    rows = db.session.execute(select(Image).where(Image.owner_id.is_not(None), _visible(actor))
                              .options(selectinload(Image.owner), selectinload(Image.account))
                              .order_by(Image.id.desc()).limit(200)).scalars()
    return [i for i in rows if job_type is None or i.offered_for(job_type)]


def pending(actor: Actor) -> list[Image]:
    """Users' images waiting for an admin to make them public."""
    actor.require_admin()
    return list(db.session.execute(select(Image).where(Image.owner_id.is_not(None), Image.visibility == "public",
                                                       Image.approved.is_(False)).order_by(Image.id)).scalars())


def register(actor: Actor, reference: str, description: str, job_types: list[str], visibility: str,
             account_name: str = "", check_timeout: float | None = None) -> Image:
    """Register an image of one's own; `check_timeout`: ask its registry first (the answer is
    kept on the row, and a missing image is still registered: the registry may need credentials
    the cluster has)."""
    reference = (reference or "").strip()
    errors = {}
    if not reference or len(reference) > 512 or not IMAGE_REFERENCE.match(reference):
        errors["reference"] = _("Write an image reference such as pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime.")
    types = [t for t in job_types if t in JOB_TYPES]
    if not types:
        errors["job_types"] = _("Offer the image for at least one job type.")
    if visibility not in VISIBILITIES:
        errors["visibility"] = _("Choose private, an account, or public.")
    account = None
    if visibility == "account":
        account = db.session.execute(select(Account).join(Membership, Membership.account_id == Account.id).where(
            Account.name == (account_name or "").strip(), Membership.user_id == actor.user.id)).scalar_one_or_none()
        if account is None:
            errors["account"] = _("Choose one of your accounts.")
    if len(description or "") > 256:
        errors["description"] = _("At most 256 characters.")
    if errors:
        raise ValidationFailed(errors)
    image = Image(reference=reference, description=(description or "").strip(), job_types=",".join(types),
                  owner_id=actor.user.id, visibility=visibility, account_id=account.id if account else None,
                  approved=visibility != "public" or actor.is_admin, created_at=utcnow())
    if check_timeout:
        image.check_state, image.check_message = check_reachable(reference, check_timeout)
        image.checked_at = utcnow()
    db.session.add(image)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise ValidationFailed({"reference": _("You registered this image already.")}) from None
    audit.record(actor, "image.register", "image", image.id, {"reference": reference, "visibility": visibility})
    db.session.commit()
    return image


def _own(actor: Actor, image_id: int) -> Image:
    image = db.session.get(Image, image_id)
    if image is None or image.owner_id is None or not (actor.is_admin or image.owner_id == actor.user.id):
        raise NotFound(_("No such image."))
    return image


def remove(actor: Actor, image_id: int) -> str:
    image = _own(actor, image_id)
    reference = image.reference
    audit.record(actor, "image.delete", "image", image.id, {"reference": reference})
    db.session.delete(image)
    db.session.commit()
    return reference


def approve(actor: Actor, image_id: int, yes: bool) -> Image:
    """An admin makes a user's image public, or declines (it stays the owner's, private)."""
    actor.require_admin()
    image = _own(actor, image_id)
    if image.visibility != "public" or image.approved:
        raise Forbidden(_("This image is not waiting for approval."))
    if yes:
        image.approved = True
    else:
        image.visibility = "private"
    audit.record(actor, "image.approve" if yes else "image.decline", "image", image.id, {"reference": image.reference})
    db.session.commit()
    return image


def recheck(actor: Actor, image_id: int, timeout: float) -> Image:
    image = _own(actor, image_id)
    image.check_state, image.check_message = check_reachable(image.reference, timeout)
    image.checked_at = utcnow()
    db.session.commit()
    return image


# ---- the registry ---------------------------------------------------------------------------------

REFERENCE = re.compile(r"^(?:(?P<registry>[^/]+\.[^/]+|[^/]+:\d+|localhost)/)?(?P<repo>[^:@]+)(?::(?P<tag>[^@]+))?(?:@(?P<digest>.+))?$")


def parse(reference: str) -> tuple[str, str, str]:
    """(registry host, repository, tag or digest) as a container runtime reads a reference."""
    m = REFERENCE.match(reference)
    if not m:
        raise ValueError(reference)
    registry = m.group("registry") or "registry-1.docker.io"
    repo = m.group("repo")
    if registry == "registry-1.docker.io" and "/" not in repo:
        repo = f"library/{repo}"
    return registry, repo, m.group("digest") or m.group("tag") or "latest"


def check_reachable(reference: str, timeout: float, scheme: str = "") -> tuple[str, str]:
    """Ask the registry for the manifest: (found | missing | unknown, a short message). Nothing
    here ever raises; every call has `timeout`."""
    try:
        registry, repo, ref = parse(reference)
    except ValueError:
        return UNKNOWN, _("The reference could not be read.")
    local = registry.startswith(("localhost", "127.0.0.1", "[::1]"))
    base = f"{scheme or ('http' if local else 'https')}://{registry}"
    url = f"{base}/v2/{repo}/manifests/{ref}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        # no redirects: a user names the registry, and it must not send the portal elsewhere
        answer = requests.head(url, headers=headers, timeout=timeout, allow_redirects=False)
        if answer.status_code == 401 and "bearer" in answer.headers.get("WWW-Authenticate", "").lower():
            token = _anonymous_token(answer.headers["WWW-Authenticate"], timeout)
            if token:
                headers["Authorization"] = f"Bearer {token}"
                answer = requests.head(url, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return UNKNOWN, _("The registry %(host)s did not answer (%(why)s): an air-gapped cluster may still have it.",
                          host=registry, why=type(exc).__name__)
    if answer.status_code == 200:
        return FOUND, _("The registry %(host)s has it.", host=registry)
    if answer.status_code == 404:
        return MISSING, _("The registry %(host)s does not know this image or tag.", host=registry)
    if answer.status_code in (401, 403):
        return UNKNOWN, _("The registry %(host)s wants credentials: the cluster may have them.", host=registry)
    return UNKNOWN, _("The registry %(host)s answered %(status)s.", host=registry, status=answer.status_code)


def _anonymous_token(challenge: str, timeout: float) -> str:
    """The anonymous pull token a registry's Bearer challenge points to ("" if none)."""
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.pop("realm", "")
    if not realm.startswith("https://"):
        return ""
    answer = requests.get(realm, params=params, timeout=timeout, allow_redirects=False)
    if answer.status_code != 200:
        return ""
    body = answer.json()
    return body.get("token") or body.get("access_token") or ""

