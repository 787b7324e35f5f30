"""/queues: the accounts' queues. Every member sees how long their accounts' queues are; the
account's managers and admins open one and see its order, what each job waits for, its estimated
start, and the members' recent usage that decides the order. Reads the DB only."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template, request
from flask_login import login_required

from ..models import utcnow
from ..services.scheduling import pages as queue_pages
from ..services.scheduling.state import QueueSettings
from .context import actor, htmx_target, page_arg, per_page

bp = Blueprint("queue", __name__)


@bp.get("/queues")
@login_required
def index():
    page = queue_pages.queue_accounts(actor(), page_arg(), per_page(), QueueSettings.from_config(current_app.config))
    return render_template("queue/index.html", page=page, endpoint="queue.index", args={})


@bp.get("/queues/<int:account_id>")
@login_required
def show(account_id):
    page = queue_pages.queue_page(actor(), account_id, utcnow(), QueueSettings.from_config(current_app.config),
                                  page_arg(), per_page())
    template = "queue/_table.html" if htmx_target() == "queue-table" or request.args.get("part") == "table" else "queue/show.html"
    return render_template(template, q=page, now=utcnow())
