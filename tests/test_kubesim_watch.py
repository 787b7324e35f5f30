"""Watches: events after a resourceVersion, resume, timeouts, bookmarks, 410 Gone after the
history is compacted (and relisting), and dropped watches."""
import threading
import time

import pytest
from kubernetes import watch
from kubernetes.client.exceptions import ApiException


def cm(name, **labels):
    return {"metadata": {"name": name, "labels": labels}}


def collect(core, ns, rv, timeout=2, **kw):
    w = watch.Watch()
    return [(e["type"], e["object"].metadata.name) for e in
            w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=timeout, **kw)]


def test_watch_replays_changes_after_a_resource_version(core, ns):
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, cm("a"))
    core.patch_namespaced_config_map("a", ns, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("a", ns)
    assert collect(core, ns, start, timeout=1) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


def test_watch_resumes_from_the_last_seen_version(core, ns):
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    first = core.create_namespaced_config_map(ns, cm("one"))
    core.create_namespaced_config_map(ns, cm("two"))
    assert collect(core, ns, first.metadata.resource_version, timeout=1) == [("ADDED", "two")]
    assert collect(core, ns, start, timeout=1) == [("ADDED", "one"), ("ADDED", "two")]


def test_watch_without_version_starts_with_the_current_state(core, ns):
    core.create_namespaced_config_map(ns, cm("existing"))
    w = watch.Watch()
    events = [(e["type"], e["object"].metadata.name)
              for e in w.stream(core.list_namespaced_config_map, ns, timeout_seconds=1)]
    assert events == [("ADDED", "existing")]


def test_watch_sees_live_changes_with_selectors(core, ns):
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    seen = []

    def watcher():
        w = watch.Watch()
        for e in w.stream(core.list_namespaced_config_map, ns, resource_version=start, label_selector="team=a",
                          timeout_seconds=3):
            seen.append(e["object"].metadata.name)
            if len(seen) == 2:
                w.stop()

    t = threading.Thread(target=watcher)
    t.start()
    time.sleep(0.2)
    core.create_namespaced_config_map(ns, cm("x", team="a"))
    core.create_namespaced_config_map(ns, cm("y", team="b"))
    core.create_namespaced_config_map(ns, cm("z", team="a"))
    t.join(5)
    assert seen == ["x", "z"]


def test_timeout_seconds_ends_the_watch(core, ns):
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    t0 = time.monotonic()
    assert collect(core, ns, start, timeout=1) == []
    assert 0.8 < time.monotonic() - t0 < 3


def test_bookmarks_carry_the_current_version(api_client, core, ns, sim):
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespace({"metadata": {"name": ns + "-other"}})  # moves the global resourceVersion
    resp = core.list_namespaced_config_map(ns, watch=True, resource_version=start, allow_watch_bookmarks=True,
                                           timeout_seconds=1, _preload_content=False)
    import json
    lines = [json.loads(line) for line in resp.read().decode().splitlines() if line]
    bookmarks = [e for e in lines if e["type"] == "BOOKMARK"]
    assert bookmarks and int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) > int(start)


def test_expired_history_gives_410_and_a_relist_recovers(core, ns, sim):
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, cm("before"))
    sim.store.expire_history()
    w = watch.Watch()
    with pytest.raises(ApiException) as err:
        list(w.stream(core.list_namespaced_config_map, ns, resource_version=start, timeout_seconds=1))
    assert err.value.status == 410
    relist = core.list_namespaced_config_map(ns)
    assert [c.metadata.name for c in relist.items] == ["before"]
    core.create_namespaced_config_map(ns, cm("after"))
    assert collect(core, ns, relist.metadata.resource_version, timeout=1) == [("ADDED", "after")]


def test_a_continue_token_from_before_compaction_is_gone(core, ns, sim):
    for n in range(3):
        core.create_namespaced_config_map(ns, cm(f"c{n}"))
    token = core.list_namespaced_config_map(ns, limit=1).metadata._continue
    sim.store.expire_history()
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map(ns, limit=1, _continue=token)
    assert err.value.status == 410


def test_dropping_watches_ends_open_streams(core, ns, sim):
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    # watch.Watch re-issues a closed stream by itself; a raw watch shows the drop.
    resp = core.list_namespaced_config_map(ns, watch=True, resource_version=start, timeout_seconds=30,
                                           _preload_content=False)
    time.sleep(0.2)
    t0 = time.monotonic()
    sim.store.drop_watches()
    resp.read()
    assert time.monotonic() - t0 < 5
