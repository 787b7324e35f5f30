"""Every page type, rendered in Simplified Chinese for an administrator and for a member, with jobs
in every state (queued with a blocker, running with warnings and requests for more time, ended
in every way), nodes cordoned and reserved, notices of every kind, a maintenance: no English word
is left in the text a reader sees (text, titles, placeholders, labels) outside a short allow list
of product names, units and codes, and the data the pages show (names, images, models). Code
(`code`, `pre`, `kbd`, `samp`) is not prose and is skipped."""
import os
import re
from html.parser import HTMLParser

import pytest

from worlds import every_kind_of_page, page_urls

# Product names, units and codes a Chinese page keeps as they are.
ALLOWED = {
    "Crater", "GPU", "GPUs", "CPU", "JupyterLab", "Jupyter", "TensorBoard", "Kubernetes", "WebDAV", "UTC", "API", "SSO",
    "OIDC", "MiB", "GiB", "TiB", "KiB", "MB", "GB", "ID", "URL", "YAML", "JSON", "CSV", "HTTP", "HTTPS", "rclone", "davfs",
    "Finder", "Windows", "macOS", "Linux", "PyTorch", "NVIDIA", "English", "Excel", "OpenAPI", "craterctl", "kubectl",
    "shm", "dev", "Prometheus", "DCGM", "Docker", "Bearer", "token", "exec", "bash", "sh",
    "SIGTERM", "JavaScript", "WebSocket", "Shell", "shell", "torchrun", "exporter", "CRATER", "CHECKPOINT", "DIR", "BOM", "UTF", "Slurm", "Pod", "pod", "ssh", "nvidia", "smi",
    "xterm", "js", "htmx", "Ctrl", "Cmd", "Enter", "Tab", "Esc", "PVC", "NFS", "IP", "TCP", "ECC", "Python", "pip",
}
# The data of this world (names, images, models, nodes, labels, paths) is shown as it is.
DATA = {
    "root", "bob", "alice", "carol", "own", "lab", "other", "default", "Default", "pytorch", "busybox", "quay", "io",
    "jupyter", "notebook", "tpl", "laptop", "a100", "A100", "SXM4", "80GB", "GeForce", "RTX", "kubernetes", "hostname",
    "example", "edu", "rack", "r1", "r2", "users", "accounts", "public", "data", "bob-data", "crater", "jobs", "com",
    "train", "py", "python", "sweep", "Bob", "Alice", "Carol", "Root", "nvidia.com", "product", "gpu", "lab.example.edu",
}
SKIP = {"script", "style", "code", "pre", "kbd", "samp", "textarea"}
ATTRS = ("title", "placeholder", "aria-label", "alt")
WORD = re.compile(r"[A-Za-z][A-Za-z]+")


class Prose(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth, self.out = 0, []

    def handle_starttag(self, tag, attrs):
        if tag in SKIP:
            self.depth += 1
        for name, value in attrs:
            if name in ATTRS and value and not self.depth:
                self.out.append(value)

    def handle_endtag(self, tag):
        if tag in SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth and data.strip():
            self.out.append(data.strip())


def english_words(html: str) -> set[str]:
    parser = Prose()
    parser.feed(html)
    words = set()
    for text in parser.out:
        # identifiers, paths, references, addresses and times are data, not words
        text = re.sub(r"\S*[/@:#=_.]\S*|\S*\d\S*", " ", text)
        new = {w for w in WORD.findall(text) if w not in ALLOWED and w not in DATA and w.lower() not in DATA}
        if new and os.environ.get("DEBUG_WORDS"):
            print("WORDS", sorted(new), "IN", repr(text[:200]))
        words |= new
    return words


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
