"""Every page type, rendered in Simplified Chinese for an administrator and for a member, with jobs
in every state (queued with a blocker, running with warnings and requests for more time, ended
in every way), nodes cordoned and reserved, notices of every kind, a maintenance: no English word
is left in the text a reader sees (text, titles, placeholders, labels) outside a short allow list
of product names, units and codes, and the data the pages show (names, images, models). Code
(`code`, `pre`, `kbd`, `samp`) is not prose and is skipped."""
import pytest

from worlds import english_words, every_kind_of_page, page_urls

@pytest.fixture
def world(app, make):
    return every_kind_of_page(app, make)


PAGES_OF_USER = {"notifications.index", "notifications.settings", "tokens.index", "files.index", "files.browse",
                 "datasets.index", "images.index", "home.index", "jobs.index", "queue.index"}


def test_every_page_type_in_chinese_has_no_english_left(app, new_client, world):
    admin, member = new_client().login(world["admin"]), new_client().login(world["user"])
    found, seen = {}, 0
    for endpoint, url in page_urls(app, world):
        for who, client in (("admin", admin), ("member", member)):
            if who == "member" and endpoint not in PAGES_OF_USER:
                continue
            response = client.get(url, headers={"Accept-Language": "en"})
            if response.status_code != 200 or response.mimetype != "text/html":
                response.close()
                continue
            seen += 1
            words = english_words(response.get_data(as_text=True))
            if words:
                found[f"{who} {url}"] = sorted(words)
    # the running job's polled status
    for url in (f"/jobs/{world['job']}/status",):
        response = admin.get(url, headers={"HX-Request": "true"} if url.endswith("/status") else {})
        assert response.status_code == 200, url
        seen += 1
        words = english_words(response.get_data(as_text=True))
        if words:
            found[f"admin {url}"] = sorted(words)
    assert seen > 40
    assert found == {}, "\n".join(f"{k}: {v}" for k, v in found.items())
