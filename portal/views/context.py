"""What every view needs from the request: the acting user, page numbers, htmx (a fragment or the
whole page), and the cluster handle for what a user just asked for."""
from __future__ import annotations

from flask import current_app, request
from flask_login import current_user

from ..cluster.setup import LazyCluster
from ..services import job_queries
from ..services.context import Actor


def actor() -> Actor:
    return Actor(current_user._get_current_object(), request.remote_addr or "")


def page_arg() -> int:
    return request.args.get("page", 1, type=int) or 1


def per_page() -> int:
    return current_app.config["PAGE_SIZE"]


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def htmx_target() -> str:
    return request.headers.get("HX-Target", "") if is_htmx() else ""


def fragment_or_page(target: str, fragment: str, page: str) -> str:
    """The template to render: the fragment when htmx asks to swap `target`, else the whole page."""
    return fragment if htmx_target() == target else page


def cluster() -> LazyCluster:
    """The cluster, connected on first use (only for what a user just asked for)."""
    return LazyCluster(current_app._get_current_object())


def stale_notice() -> dict | None:
    """{"age": seconds or None} when the syncer's data is too old to trust (None: fresh)."""
    age = job_queries.sync_age()
    return {"age": age} if age is None or age > current_app.config["SYNC_STALE_SECONDS"] else None
