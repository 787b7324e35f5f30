"""Every page type, rendered in Simplified Chinese for an administrator and for a member, with jobs
in every state (queued with a blocker, running with warnings and requests for more time, ended
in every way), nodes cordoned and reserved, notices of every kind, a maintenance: no English word
is left in the text a reader sees (text, titles, placeholders, labels) outside a short allow list
of product names, units and codes, and the data the pages show (names, images, models). Code
(`code`, `pre`, `kbd`, `samp`) is not prose and is skipped."""
import os
import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest

from routes import fill, rules

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
    from portal.models import (ExtensionRequest, JobWarning, Maintenance, NodeDrain, Notification, Restriction, utcnow)
    from portal.extensions import db
    now = utcnow()
    ids = {"admin": make.user("root", role="admin", language="zh"), "user": make.user("bob", language="zh"),
           "mgr": make.user("alice", language="zh")}
    ids["lab"] = make.account("own-lab", gpu_quota=4, display_name="视觉实验室",
                              members={ids["mgr"]: "manager", ids["user"]: "member"})
    ids["other"] = make.account("other-lab", display_name="语言实验室", members={ids["user"]: "member"})
    run = dict(gpus=2, gpu_model="NVIDIA-A100-SXM4-80GB", started_at=now - timedelta(hours=3), time_limit_seconds=4 * 3600,
               pods=[{"name": "crater-1-0", "node": "a100-0", "phase": "Running", "restarts": 0}])
    ids["job"] = make.job(ids["user"], ids["lab"], state="Running", display_name="训练", **run)
    ids["queued"] = make.job(ids["user"], ids["lab"], state="Queued", display_name="排队", gpus=4,
                             gpu_model="NVIDIA-A100-SXM4-80GB", queue_position=1,
                             queue_blocker={"kind": "gpus", "used": 2, "limit": 4, "ask": 4, "account": "own-lab"})
    for state, reason in (("Succeeded", "Completed"), ("Failed", "Error"), ("Stopped", "StoppedByUser"),
                          ("Stopped", "Evicted"), ("Stopped", "IdleGPU"), ("Stopped", "DeadlineExceeded"), ("Lost", "")):
        make.job(ids["user"], ids["lab"], state=state, reason=reason, display_name="结束", exit_code=1 if state == "Failed" else None,
                 started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=1))
    ids["jupyter"] = make.job(ids["user"], ids["lab"], job_type="jupyter", state="Pending", display_name="笔记本")
    ids["template"] = make.template(ids["user"], ids["lab"], name="模板", shared=True)
    ids["image"] = make.image()
    ids["name"] = make.node("a100-0", unschedulable=True, cordon_reason="维修", reserved_for="own-lab", reserve_reason="截止")
    make.node("cpu-0", gpus=0)
    make.placement("a100-0", ids["job"], gpus=2)
    ids["token_id"] = make.api_token(ids["user"])[0]
    ids["dataset_id"] = make.dataset(ids["user"], "数据", "users/bob")

    def rows(s):
        s.add_all([ExtensionRequest(job_id=ids["job"], user_id=ids["user"], hours=2, reason="多训练", state=st,
                                    decided_by="alice" if st != "pending" else "", note="")
                   for st in ("pending", "granted", "rejected")])
        s.add(JobWarning(job_id=ids["job"], kind="idle_gpu", warned_at=now, act_at=now + timedelta(hours=1)))
        m = Maintenance(message="电源维护", starts_at=now + timedelta(hours=1), ends_at=now + timedelta(hours=3),
                        nodes=["a100-0"], drain_minutes=30, created_by_id=ids["admin"])
        s.add(m)
        s.flush()
        s.add(NodeDrain(node="a100-0", reason="电源", warn_at=now, stop_at=now + timedelta(minutes=30), warned_at=now,
                        job_ids=[ids["job"]], maintenance_id=m.id))
        from portal.services import notify
        for n, kind in enumerate(notify.MAIL_DEFAULTS):
            s.add(Notification(user_id=ids["user"], job_id=ids["job"], kind=kind, dedupe_key=f"k{n}",
                               maintenance_id=m.id if kind == "maintenance" else None))
        r = Restriction(user_id=ids["user"], kind="submit", reason="违规", created_by=ids["admin"])
        s.add(r)
        s.flush()
        ids["restriction_id"] = r.id
        ids["maintenance_id"] = m.id
        s.commit()
    make.query(rows)
    with app.app_context():
        from portal.models import ExtensionRequest as E
        ids["request_id"] = db.session.query(E).filter_by(state="pending").one().id
    return ids


PAGES_OF_USER = {"notifications.index", "notifications.settings", "tokens.index", "files.index", "files.browse",
                 "datasets.index", "images.index", "home.index", "jobs.index", "queue.index"}


def test_every_page_type_in_chinese_has_no_english_left(app, new_client, world):
    admin, member = new_client().login(world["admin"]), new_client().login(world["user"])
    values = {"account_id": world["lab"], "user_id": world["user"], "job_id": world["job"], "job_type": "batch",
              "template_id": world["template"], "image_id": world["image"], "name": world["name"],
              "request_id": world["request_id"], "token_id": world["token_id"], "dataset_id": world["dataset_id"],
              "restriction_id": world["restriction_id"], "maintenance_id": world["maintenance_id"], "path": "users/bob"}
    found, seen = {}, 0
    for _method, rule in rules(app, {"GET"}):
        if any(a not in values for a in rule.arguments) or rule.rule.startswith(("/api/", "/dav", "/auth/ingress")) \
                or rule.rule.endswith(("/follow", "/ws")):  # streams
            continue
        url = fill(rule, values)
        for who, client in (("admin", admin), ("member", member)):
            if who == "member" and rule.endpoint not in PAGES_OF_USER:
                continue
            response = client.get(url, headers={"Accept-Language": "en"})
            if response.status_code != 200 or response.mimetype != "text/html":
                response.close()
                continue
            seen += 1
            words = english_words(response.get_data(as_text=True))
            if words:
                found[f"{who} {url}"] = sorted(words)
    # the queued job's and the running job's pages, and a few filtered lists, too
    for url in (f"/jobs/{world['queued']}", f"/jobs/{world['jupyter']}", "/jobs?scope=all&state=ended",
                "/admin/audit", "/nodes?state=Cordoned", f"/jobs/{world['job']}/status"):
        response = admin.get(url, headers={"HX-Request": "true"} if url.endswith("/status") else {})
        assert response.status_code == 200, url
        seen += 1
        words = english_words(response.get_data(as_text=True))
        if words:
            found[f"admin {url}"] = sorted(words)
    assert seen > 40
    assert found == {}, "\n".join(f"{k}: {v}" for k, v in found.items())
