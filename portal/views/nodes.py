"""/nodes: the GPU node dashboards (every signed-in user) and node administration (admins).
Pages and polled fragments read the database (the syncer keeps nodes, placements and GPU devices
current); only an admin's action calls the cluster. Chart data lives in views/charts.py."""
from __future__ import annotations

from collections import OrderedDict
from threading import Lock

from ..services.scheduling import pages as queue_pages
from ..services.scheduling.state import QueueSettings
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import ngettext
from markupsafe import Markup
from flask_login import login_required

from .. import vocabulary
from ..models import NodeState
from ..services import maintenance, nodes
from ..services.errors import Conflict, NotFound, ValidationFailed
from .context import actor, cluster, htmx_target, page_arg, stale_notice
from .forms import CsrfOnlyForm
from .templating import format_datetime

bp = Blueprint("nodes", __name__)
NODES_PER_PAGE = 50


class _Rendered:
    """The nodes table as HTML per (language, view, filters, page, version of what it shows): a new
    version is a new key, so nothing is ever invalidated or served stale. Bounded; safe to lose."""

    def __init__(self, size: int = 256):
        self.size, self.items, self.lock = size, OrderedDict(), Lock()

    def get(self, key):
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key, value):
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


def _rendered() -> _Rendered:
    return current_app.extensions.setdefault("crater_nodes_rendered", _Rendered())



def sort_words() -> dict[str, str]:
    return {"name": _("name"), "free": _("most free GPUs"), "used": _("most GPUs in use"), "util": _("GPU utilisation"),
            "jobs": _("most jobs"), "model": _("GPU model")}




def _row_words() -> dict:
    """The words every row of the nodes table uses, translated once per request."""
    return {"states": vocabulary.node_state_words(), "reserved_for": _("reserved for"), "other_pods": _("other pods"),
            "no_metrics": _("no metrics"), "labels": _("labels"), "show_labels": _("show them"), "manage": _("Manage"),
            "drain": _("Drain")}


def _filters() -> nodes.NodeFilter:
    args = request.args
    state = args.get("state", "")
    sort = args.get("sort", "name")
    min_free = args.get("free", 0, type=int) or 0
    return nodes.NodeFilter(model=args.get("model", "")[:128], state=state if state in NodeState.ALL else "",
                            min_free=min(max(0, min_free), 4096), sort=sort if sort in nodes.SORTS else "name",
                            gpu_only=args.get("gpu", "") == "1")


def _list(admin: bool):
    f = _filters()
    version = nodes.nodes_version()
    if htmx_target() == "nodes-live" and request.args.get("v") == version:
        return "", 204  # nothing on the page changed since the last poll
    args = {"model": f.model, "state": f.state, "free": f.min_free or "", "sort": f.sort, "gpu": "1" if f.gpu_only else ""}
    stale = stale_notice()
    summary = nodes.model_summary()
    key = (str(get_locale()), admin, tuple(args.items()), page_arg(), version, stale and stale["age"])
    live = _rendered().get(key)
    if live is None:  # what the live part shows depends on nothing else: rendered once per change
        page = nodes.list_nodes(f, page_arg(), NODES_PER_PAGE)
        live = _rendered().put(key, Markup(render_template(
            "nodes/_live.html", page=page, f=f, args=args, summary=summary, version=version, admin=admin, W=_row_words(),
            stale=stale, endpoint="nodes.admin_index" if admin else "nodes.index",
            metrics=bool(current_app.config["PROMETHEUS_URL"]))))
    if htmx_target() in ("nodes-live", "nodes-table"):
        return live
    models = [s["model"] for s in summary if s["model"]]
    shares, accounts_sharing = queue_pages.sharing_table(QueueSettings.from_config(current_app.config))
    return render_template("nodes/index.html", models=models, sorts=sort_words(), f=f, admin=admin, live=live,
                           endpoint="nodes.admin_index" if admin else "nodes.index", shares=shares,
                           accounts_sharing=accounts_sharing)


@bp.get("/nodes")
@login_required
def index():
    """Per GPU model, then every node; filters, sorting, pages; polls every 5 s (204 when unchanged)."""
    return _list(admin=False)


@bp.get("/admin/nodes")
@login_required
def admin_index():
    actor().require_admin()
    return _list(admin=True)


def _show(name: str, status: int = 200, **extra):
    detail = nodes.node_detail(actor(), name, current_app.config["SHOW_JOB_NAMES"])
    context = dict(d=detail, node=detail.node, form=CsrfOnlyForm(), stale=stale_notice(),
                   metrics=bool(current_app.config["PROMETHEUS_URL"]), accounts=[], drain=None, errors={},
                   scheduled=maintenance.scheduled_on(detail.node.name) if actor().is_admin else None)
    if actor().is_admin:
        context["accounts"] = nodes.account_choices()
    context.update(extra)
    return render_template("nodes/show.html", **context), status


@bp.get("/nodes/<name>")
@login_required
def show(name):
    """The node's GPUs and who holds them, the pods on it, conditions, taints, capacity."""
    if request.args.get("part") == "labels":  # the nodes table's labels, on demand
        return render_template("nodes/_labels.html", node=nodes.get_node(name))
    if htmx_target() == "node-live":
        detail = nodes.node_detail(actor(), name, current_app.config["SHOW_JOB_NAMES"])
        return render_template("nodes/_node_live.html", d=detail, node=detail.node,
                               metrics=bool(current_app.config["PROMETHEUS_URL"]))
    return _show(name)


# ---- administration ---------------------------------------------------------------------------

def _act(name: str, work, done: str):
    """Run one admin action; on a refused input or a cluster that cannot do it now, the node page
    again with the message (422 / 409), else back to the node page."""
    form = CsrfOnlyForm()
    if not form.validate_on_submit():
        return _show(name, 400, errors={"form": _("This form has expired or did not come from this site.")})
    try:
        work()
    except ValidationFailed as exc:
        flash(str(exc), "error")
        return _show(name, 422, errors=exc.errors)
    except Conflict as exc:
        flash(exc.message, "error")
        return _show(name, 409)
    flash(done, "success")
    return redirect(url_for(".show", name=name), 303)


def _reason() -> str:
    return request.form.get("reason", "")[:2000]


@bp.post("/nodes/<name>/cordon")
@login_required
def cordon(name):
    return _act(name, lambda: nodes.cordon(actor(), cluster(), name, _reason()),
                _("Node %(name)s is cordoned: no new jobs start on it.", name=name))


@bp.post("/nodes/<name>/uncordon")
@login_required
def uncordon(name):
    return _act(name, lambda: nodes.uncordon(actor(), cluster(), name, _reason()),
                _("Node %(name)s takes new jobs again.", name=name))


@bp.post("/nodes/<name>/reserve")
@login_required
def reserve(name):
    account_id = request.form.get("account", type=int)
    return _act(name, lambda: nodes.reserve(actor(), cluster(), name, account_id, _reason()),
                _("Node %(name)s is reserved.", name=name))


@bp.post("/nodes/<name>/release")
@login_required
def release(name):
    return _act(name, lambda: nodes.release(actor(), cluster(), name, _reason()),
                _("Node %(name)s is open to every account again.", name=name))


@bp.post("/nodes/<name>/labels")
@login_required
def set_label(name):
    key, value = request.form.get("key", "")[:400], request.form.get("value", "")[:400]
    return _act(name, lambda: nodes.set_label(actor(), cluster(), name, key, value),
                _("Label %(key)s set.", key=key.strip()))


@bp.post("/nodes/<name>/labels/remove")
@login_required
def remove_label(name):
    key = request.form.get("key", "")[:400]
    return _act(name, lambda: nodes.remove_label(actor(), cluster(), name, key),
                _("Label %(key)s removed.", key=key.strip()))


@bp.get("/nodes/<name>/drain")
@login_required
def drain_preview(name):
    """What a drain would do: the jobs it would stop, with owners and accounts."""
    return _drain_page(nodes.drain_preview(actor(), name), CsrfOnlyForm())


@bp.post("/nodes/<name>/drain")
@login_required
def drain(name):
    preview = nodes.drain_preview(actor(), name)
    node, form = preview.node, CsrfOnlyForm()
    job_ids = [int(v) for v in request.form.getlist("job") if v.isdigit() and len(v) < 12]
    if form.validate_on_submit():
        try:
            grace = maintenance.grace_minutes(request.form.get("grace", "")[:20])
            if grace:
                scheduled = maintenance.schedule_drain(actor(), cluster(), node.name, job_ids, _reason(), grace)
            else:
                result = nodes.drain(actor(), cluster(), node.name, job_ids, _reason())
        except ValidationFailed as exc:
            return _drain_page(nodes.drain_preview(actor(), name), form, exc.errors), 422
        except Conflict as exc:
            flash(exc.message, "error")
            return _drain_page(nodes.drain_preview(actor(), name), form), 409
        if grace:
            flash(ngettext("Node %(name)s is cordoned; %(num)s job stops at %(when)s UTC and its owner was warned.",
                           "Node %(name)s is cordoned; %(num)s jobs stop at %(when)s UTC and their owners were warned.",
                           len(scheduled.job_ids), name=node.name, when=format_datetime(scheduled.stop_at)), "success")
            return redirect(url_for(".show", name=node.name), 303)
        flash(ngettext("Node %(name)s drained: %(num)s job stopped.", "Node %(name)s drained: %(num)s jobs stopped.",
                       len(result.stopped), name=node.name), "success")
        if result.failed:
            flash(ngettext("%(num)s job could not be stopped now; try the drain again.",
                           "%(num)s jobs could not be stopped now; try the drain again.", len(result.failed)), "error")
        if result.new_since_preview:
            flash(ngettext("%(num)s job came onto the node after the preview and was left running; review it.",
                           "%(num)s jobs came onto the node after the preview and were left running; review them.",
                           len(result.new_since_preview)), "warn")
        return redirect(url_for(".show", name=node.name), 303)
    return _drain_page(preview, form, {"form": _("This form has expired or did not come from this site.")}), 400


@bp.post("/nodes/<name>/drains/<int:drain_id>/cancel")
@login_required
def cancel_drain(name, drain_id):
    """Cancel a drain with a grace period before it stops the jobs; the node stays cordoned."""
    return _act(name, lambda: maintenance.cancel_drain(actor(), drain_id, name),
                _("The drain of %(name)s is cancelled: its jobs go on. The node stays cordoned until you uncordon it.",
                  name=name))


def _drain_page(preview, form, errors: dict | None = None):
    """The drain preview: the jobs a drain would stop now, with owners and accounts."""
    return render_template("nodes/drain.html", node=preview.node, jobs=preview.jobs, others=preview.others, form=form,
                           errors=errors or {}, scheduled=maintenance.scheduled_on(preview.node.name),
                           grace=request.form.get("grace", "0")[:20], max_grace=maintenance.MAX_GRACE_MINUTES)


__all__ = ["bp", "NotFound"]
