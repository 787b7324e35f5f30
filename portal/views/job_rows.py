"""The job list's rows as HTML, cached per app and process. What a row shows changes only with
the job's version (bumped on every change of its state, reason or pods; names and resources never
change), so (id, version, created_at, language, column set) is the cache key: a changed job gets
a new entry and nothing needs invalidating. A page therefore reads only (id, version, state) per
job and the full columns of the rows it has not rendered yet. Bounded (least recently used go
first) and safe to lose."""
from __future__ import annotations

from collections import OrderedDict
from threading import Lock

from flask import current_app, get_template_attribute, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from markupsafe import Markup


from .. import vocabulary
from ..services.job_queries import list_rows

MAX_ROWS = 20_000
EXTENSION = "crater_job_rows"
_lock = Lock()


_labels_by_locale: dict[str, dict] = {}


def list_labels() -> dict:
    """The job list's fixed words in the request's language, translated once per process."""
    locale = str(get_locale())
    labels = _labels_by_locale.get(locale)
    if labels is None:
        labels = _labels_by_locale[locale] = {
            "states": vocabulary.state_words(), "types": vocabulary.type_words(),
            "sorts": {"newest": _("newest first"), "oldest": _("oldest first"), "name": _("name"), "state": _("state"),
                      "gpus": _("most GPUs")},
            "scopes": {"mine": _("Mine"), "account": _("My accounts"), "all": _("All")},
        }
    return labels


def render_rows(rows, others: bool) -> Markup:
    """The <tr> elements for `rows` (mappings from job_queries.list_jobs)."""
    locale = str(get_locale())
    keys = [(locale, others, r["id"], r["version"], r["created_at"]) for r in rows]
    _cache = current_app.extensions.setdefault(EXTENSION, OrderedDict())
    with _lock:
        found = [_cache.get(k) for k in keys]
        for k, html in zip(keys, found):
            if html is not None:
                _cache.move_to_end(k)
    if any(html is None for html in found):
        macro = get_template_attribute("jobs/_row.html", "row")
        base = url_for("jobs.index")
        fresh = {}
        full = list_rows([r["id"] for r, html in zip(rows, found) if html is None])
        for i, (k, r) in enumerate(zip(keys, rows)):
            if found[i] is None:
                row = full.get(r["id"])
                if row is None:  # gone between the two reads
                    found[i] = ""
                    continue
                found[i] = fresh[k] = str(macro(row, base, others))
        with _lock:
            _cache.update(fresh)
            while len(_cache) > MAX_ROWS:
                _cache.popitem(last=False)
    return Markup("".join(found))
