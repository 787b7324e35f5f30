"""A small per-app, per-process cache of values that may be a few seconds old (the syncer's
heartbeat, a user's account list for a filter). Safe to lose; nothing in it is a secret or the
basis of an authorization decision. CRATER_SHORT_CACHE_SECONDS=0 turns it off."""
from __future__ import annotations

import time
from typing import TypeVar
from collections.abc import Callable, Hashable

from flask import current_app

T = TypeVar("T")
EXTENSION = "crater_short_cache"
MAX_ENTRIES = 10_000


def short_cached(key: Hashable, compute: Callable[[], T]) -> T:
    seconds = current_app.config.get("SHORT_CACHE_SECONDS", 0)
    if seconds <= 0:
        return compute()
    store: dict = current_app.extensions.setdefault(EXTENSION, {})
    now = time.monotonic()
    hit = store.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    value = compute()
    if len(store) >= MAX_ENTRIES:
        store.clear()
    store[key] = (now + seconds, value)
    return value
