"""/admin/accounts: accounts (labs) and their quotas (admins), and their members (admins and the
account's managers). Validation errors re-render the same form with the submitted values (422)."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required

from ..services import accounts
from ..services.errors import ValidationFailed
from .context import actor, fragment_or_page, is_htmx, page_arg, per_page
from .forms import AccountForm, CsrfOnlyForm, MemberForm, MemberUpdateForm, apply_errors, format_model_quotas

bp = Blueprint("admin_accounts", __name__, url_prefix="/admin/accounts")


@bp.get("")
@login_required
def index():
    """All accounts with quotas and member counts."""
    q = request.args.get("q", "").strip()[:100]
    page = accounts.list_accounts(actor(), q, page_arg(), per_page())
    template = fragment_or_page("accounts-table", "admin/_accounts_table.html", "admin/accounts.html")
    return render_template(template, page=page, q=q)


@bp.get("/new")
@login_required
def new():
    actor().require_admin()
    return render_template("admin/account_form.html", form=AccountForm(), account=None)


@bp.post("/new")
@login_required
def create():
    """Create an account; a taken or malformed name comes back as a field error."""
    form = AccountForm()
    if form.validate_on_submit():
        try:
            account = accounts.create_account(actor(), form.to_input())
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            flash(_("Account %(name)s created.", name=account.name), "success")
            return redirect(url_for(".show", account_id=account.id), 303)
    return render_template("admin/account_form.html", form=form, account=None), 422


@bp.get("/<int:account_id>")
@login_required
def show(account_id):
    """An account's quotas and members (admins, and this account's managers)."""
    account, members = accounts.list_members(actor(), account_id, page_arg(), per_page())
    return render_template("admin/account.html", account=account, members=members,
                           member_form=MemberForm(), form=CsrfOnlyForm())


@bp.get("/<int:account_id>/edit")
@login_required
def edit(account_id):
    account = accounts.account_to_edit(actor(), account_id)
    form = AccountForm(obj=account)
    form.gpu_model_quotas.data = format_model_quotas(account.gpu_model_quotas)
    return render_template("admin/account_form.html", form=form, account=account)


@bp.post("/<int:account_id>/edit")
@login_required
def update(account_id):
    """Save quotas and descriptions; the name is fixed once created."""
    account = accounts.account_to_edit(actor(), account_id)
    form = AccountForm()
    form.name.data = account.name  # never taken from the form
    if form.validate_on_submit():
        try:
            accounts.update_account(actor(), account_id, form.to_input())
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            flash(_("Account %(name)s saved.", name=account.name), "success")
            return redirect(url_for(".show", account_id=account_id), 303)
    return render_template("admin/account_form.html", form=form, account=account), 422


@bp.get("/<int:account_id>/delete")
@login_required
def confirm_delete(account_id):
    """A plain confirmation page (htmx's confirm dialog merely shortcuts it)."""
    account = accounts.account_to_edit(actor(), account_id)
    return render_template("admin/account_delete.html", account=account, form=CsrfOnlyForm())


@bp.post("/<int:account_id>/delete")
@login_required
def delete(account_id):
    """Delete an account that has no jobs (the audit log keeps the record)."""
    accounts.delete_account(actor(), account_id)
    flash(_("Account deleted."), "success")
    if is_htmx():
        return "", 200, {"HX-Redirect": url_for(".index")}
    return redirect(url_for(".index"), 303)


# ---- members -------------------------------------------------------------------------------

def _members_fragment(account_id: int, member_form: MemberForm, status: int = 200, message: str = ""):
    account, members = accounts.list_members(actor(), account_id, page_arg(), per_page())
    if not is_htmx():
        if status == 200:
            flash(message, "success")
            return redirect(url_for(".show", account_id=account_id), 303)
        return render_template("admin/account.html", account=account, members=members,
                               member_form=member_form, form=CsrfOnlyForm()), status
    return render_template("admin/_members.html", account=account, members=members,
                           member_form=member_form, form=CsrfOnlyForm(), flash_now=message), status


@bp.post("/<int:account_id>/members")
@login_required
def add_member(account_id):
    """Add a user by username; unknown or duplicate users are field errors."""
    form = MemberForm()
    if form.validate_on_submit():
        try:
            member = accounts.add_member(actor(), account_id, form.username.data, form.role.data, form.gpu_cap.data,
                                         form.files_write.data)
        except ValidationFailed as exc:
            apply_errors(form, exc)
        else:
            return _members_fragment(account_id, MemberForm(formdata=None), 200,
                                     _("%(name)s added.", name=member.user.username))
    else:
        accounts.get_account(actor(), account_id)  # authorization before showing field errors
    return _members_fragment(account_id, form, 422)


@bp.post("/<int:account_id>/members/<int:user_id>")
@login_required
def update_member(account_id, user_id):
    """Change a member's role or GPU cap."""
    form = MemberUpdateForm()
    accounts.get_member(actor(), account_id, user_id)  # authorization before field errors
    if form.validate_on_submit():
        member = accounts.update_member(actor(), account_id, user_id, form.role.data, form.gpu_cap.data,
                                       form.files_write.data)
        return _members_fragment(account_id, MemberForm(formdata=None), 200,
                                 _("%(name)s saved.", name=member.user.username))
    raise ValidationFailed({k: "; ".join(map(str, v)) for k, v in form.errors.items()})


@bp.get("/<int:account_id>/members/<int:user_id>/remove")
@login_required
def confirm_remove_member(account_id, user_id):
    member = accounts.get_member(actor(), account_id, user_id)
    return render_template("admin/member_remove.html", member=member, form=CsrfOnlyForm())


@bp.post("/<int:account_id>/members/<int:user_id>/remove")
@login_required
def remove_member(account_id, user_id):
    """Remove a member from the account."""
    member = accounts.get_member(actor(), account_id, user_id)
    name = member.user.username
    accounts.remove_member(actor(), account_id, user_id)
    return _members_fragment(account_id, MemberForm(formdata=None), 200, _("%(name)s removed.", name=name))
