"""/images: users' own images (services/images.py): mine and those shared with me, registering one
(with an optional check that its registry has it), checking again, removing; admins approve the
ones their owners want public. The admins' own list stays at /admin/images."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from ..services import accounts, images
from ..services.errors import ValidationFailed
from ..vocabulary import type_titles
from .context import actor
from .forms import CsrfOnlyForm

bp = Blueprint("images", __name__)


def _page(values: dict | None = None, errors: dict | None = None, status: int = 200):
    who = actor()
    return render_template("images/index.html", images=images.offered(who), types=type_titles(), values=values or {},
                           errors=errors or {}, button=CsrfOnlyForm(),
                           pending=images.pending(who) if who.is_admin else [],
                           accounts=[m.account for m in accounts.my_memberships(current_user)]), status


@bp.get("/images")
@login_required
def index():
    return _page()


@bp.post("/images")
@login_required
def register():
    values = {"reference": request.form.get("reference", ""), "description": request.form.get("description", ""),
              "job_types": request.form.getlist("job_types"), "visibility": request.form.get("visibility", "private"),
              "account": request.form.get("account", ""), "check": request.form.get("check") == "1"}
    try:
        image = images.register(actor(), values["reference"], values["description"], values["job_types"],
                                values["visibility"], values["account"],
                                current_app.config["REGISTRY_TIMEOUT"] if values["check"] else None)
    except ValidationFailed as exc:
        return _page(values, exc.errors, 422)
    flash(_("%(ref)s registered.", ref=image.reference) + (" " + image.check_message if image.check_state else ""),
          "success" if image.check_state != images.MISSING else "error")
    return redirect(url_for(".index"), 303)


@bp.post("/images/<int:image_id>/check")
@login_required
def check(image_id):
    image = images.recheck(actor(), image_id, current_app.config["REGISTRY_TIMEOUT"])
    flash(image.check_message, "success" if image.check_state == images.FOUND else "error")
    return redirect(url_for(".index"), 303)


@bp.post("/images/<int:image_id>/delete")
@login_required
def delete(image_id):
    reference = images.remove(actor(), image_id)
    flash(_("%(ref)s removed.", ref=reference), "success")
    return redirect(url_for(".index"), 303)


@bp.post("/images/<int:image_id>/approve")
@login_required
def approve(image_id):
    yes = request.form.get("decision") != "decline"
    image = images.approve(actor(), image_id, yes)
    flash(_("%(ref)s is public now.", ref=image.reference) if yes else _("%(ref)s stays private.", ref=image.reference),
          "success")
    return redirect(url_for(".index"), 303)
