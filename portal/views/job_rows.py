"""The job list's rows as HTML, cached per process. A row's HTML depends only on the values shown
and the language, so those are the cache key: a changed job simply gets a new entry, and nothing
ever needs invalidating. The cache is bounded (least recently used go first) and safe to lose."""
from __future__ import annotations

from collections import OrderedDict
from threading import Lock

from flask import get_template_attribute, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from markupsafe import Markup


MAX_ROWS = 20_000
_cache: OrderedDict[tuple, str] = OrderedDict()
_lock = Lock()


def _labels() -> tuple[dict, dict]:
    states = {"Submitting": _("Submitting"), "Pending": _("Pending"), "Running": _("Running"),
              "Succeeded": _("Succeeded"), "Failed": _("Failed"), "Stopped": _("Stopped"), "Lost": _("Lost")}
    types = {"jupyter": _("JupyterLab"), "batch": _("Batch"), "distributed": _("Distributed")}
    return states, types


def render_rows(rows, others: bool) -> Markup:
    """The <tr> elements for `rows` (mappings from job_queries.list_jobs)."""
    locale = str(get_locale())
    keys = [(locale, others, tuple(r.values())) for r in rows]
    with _lock:
        found = [_cache.get(k) for k in keys]
        for k, html in zip(keys, found):
            if html is not None:
                _cache.move_to_end(k)
    if any(html is None for html in found):
        macro = get_template_attribute("jobs/_row.html", "row")
        states, types = _labels()
        base = url_for("jobs.index")
        fresh = {}
        for i, (k, r) in enumerate(zip(keys, rows)):
            if found[i] is None:
                found[i] = fresh[k] = str(macro(r, base, states.get(r["state"], r["state"]),
                                                types.get(r["job_type"], r["job_type"]), others))
        with _lock:
            _cache.update(fresh)
            while len(_cache) > MAX_ROWS:
                _cache.popitem(last=False)
    return Markup("".join(found))
