"""/datasets: datasets and models on the shared storage (services/datasets.py decides who may do
what): the ones I may use, registering a folder, a dataset's page (size, who may use it, the jobs
that mounted it), sharing, editing and unregistering it."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import login_required
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length

from ..services import datasets, storage
from ..services.errors import ValidationFailed
from .context import actor, page_arg, per_page
from .forms import CsrfOnlyForm, apply_errors

bp = Blueprint("datasets", __name__)

VISIBILITY = [SelectChoice("private", _l("private: only me")),
              SelectChoice("shared", _l("shared: the users and accounts I choose")),
              SelectChoice("public", _l("public: everyone (administrators)"))]


class DatasetEditForm(FlaskForm):
    description = TextAreaField(_l("Description"), validators=[Length(max=4000)])
    tags = StringField(_l("Tags"), validators=[Length(max=255)], description=_l("Separated by commas."))
    visibility = SelectField(_l("Who may use it"), choices=VISIBILITY, default="private")


class DatasetForm(DatasetEditForm):
    name = StringField(_l("Name"), validators=[Length(max=63)], description=_l("It names the mount: /datasets/<name>."))
    kind = SelectField(_l("Kind"), choices=[SelectChoice("dataset", _l("dataset")), SelectChoice("model", _l("model"))])
    path = StringField(_l("Folder"), validators=[Length(max=1024)],
                       description=_l("A folder you can read, e.g. users/<name>/imagenet or accounts/<name>/weights."))


class ShareForm(FlaskForm):
    user = StringField(_l("User name"), validators=[Length(max=64)])
    account = StringField(_l("or account name"), validators=[Length(max=63)])


def _index(form: DatasetForm, status: int = 200):
    q = request.args.get("q", "").strip()[:64]
    page = datasets.listing(actor(), q, page_arg(), per_page())
    return render_template("datasets/index.html", page=page, form=form, q=q, args={"q": q}), status


@bp.get("/datasets")
@login_required
def index():
    form = DatasetForm(formdata=None, data={"path": request.args.get("path", "")})
    return _index(form)


@bp.post("/datasets")
@login_required
def create():
    form = DatasetForm()
    if form.validate_on_submit():
        try:
            row = datasets.register(actor(), storage.root_of(current_app.config), form.name.data, form.kind.data,
                                    form.path.data, form.description.data, form.tags.data, form.visibility.data)
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            flash(_("%(name)s registered: jobs may mount it at %(path)s.", name=row.name, path=row.mount_path), "success")
            return redirect(url_for(".show", dataset_id=row.id), 303)
    return _index(form, 422)


def _show(dataset_id: int, form: DatasetEditForm | None = None, share_form: ShareForm | None = None, status: int = 200):
    who = actor()
    row = datasets.get(who, dataset_id)
    editable = who.is_admin or row.owner_id == who.user.id
    form = form or DatasetEditForm(formdata=None, obj=row)
    size, files, complete = datasets.sized_text(row)
    return render_template("datasets/show.html", row=row, editable=editable, form=form,
                           share_form=share_form or ShareForm(formdata=None), button=CsrfOnlyForm(),
                           jobs=datasets.jobs_of(who, dataset_id, page_arg(), per_page()), size=size, files=files,
                           complete=complete, args={"dataset_id": dataset_id}), status


@bp.get("/datasets/<int:dataset_id>")
@login_required
def show(dataset_id):
    return _show(dataset_id)


@bp.post("/datasets/<int:dataset_id>")
@login_required
def update(dataset_id):
    form = DatasetEditForm()
    datasets.get(actor(), dataset_id)  # visible, before field errors
    if form.validate_on_submit():
        try:
            datasets.update(actor(), dataset_id, form.description.data, form.tags.data, form.visibility.data)
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            flash(_("Saved."), "success")
            return redirect(url_for(".show", dataset_id=dataset_id), 303)
    return _show(dataset_id, form=form, status=422)


@bp.post("/datasets/<int:dataset_id>/measure")
@login_required
def measure(dataset_id):
    datasets.measure(actor(), storage.root_of(current_app.config), dataset_id)
    return redirect(url_for(".show", dataset_id=dataset_id), 303)


@bp.post("/datasets/<int:dataset_id>/shares")
@login_required
def share(dataset_id):
    form = ShareForm()
    datasets.get(actor(), dataset_id)
    if form.validate_on_submit():
        try:
            datasets.share(actor(), dataset_id, form.user.data or "", form.account.data or "")
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            flash(_("Shared."), "success")
            return redirect(url_for(".show", dataset_id=dataset_id), 303)
    return _show(dataset_id, share_form=form, status=422)


@bp.post("/datasets/<int:dataset_id>/shares/<int:share_id>/remove")
@login_required
def unshare(dataset_id, share_id):
    datasets.unshare(actor(), dataset_id, share_id)
    flash(_("No longer shared with them."), "success")
    return redirect(url_for(".show", dataset_id=dataset_id), 303)


@bp.get("/datasets/<int:dataset_id>/delete")
@login_required
def confirm_delete(dataset_id):
    row = datasets.get(actor(), dataset_id)
    return render_template("datasets/delete.html", row=row, button=CsrfOnlyForm())


@bp.post("/datasets/<int:dataset_id>/delete")
@login_required
def delete(dataset_id):
    name = datasets.delete(actor(), dataset_id)
    flash(_("%(name)s unregistered; its folder is left as it was.", name=name), "success")
    return redirect(url_for(".index"), 303)
