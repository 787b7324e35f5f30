"""Locust users for bench/load.py: researchers who sign in, browse the lists and job pages the way
the browser does (htmx polls with HX-Request, the job status poll with its version, 204 when
unchanged), submit batch jobs with the form's CSRF token and submission key, and stop their
long-running ones. Run by bench/load.py (which starts the portal, the syncer, kubesim and MariaDB
on loopback); on its own:

    CRATER_LOAD_USERS=users.json CRATER_LOAD_LOG=submissions.jsonl \\
        locust -f bench/locustfile.py --headless -u 30 -r 10 -t 1m --host http://127.0.0.1:8000

Every submission is written to CRATER_LOAD_LOG (its key, answer and job id). A submission whose
answer never arrived (a worker killed mid-request) is sent again with the same key, as a
browser's resubmission would be: the portal must make one job of it.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
import random
import re
import threading
import time

from locust import HttpUser, between, events, task

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
KEY = re.compile(r'name="idempotency_key" type="hidden" value="([^"]+)"')
STATUS = re.compile(r'hx-get="(/jobs/\d+/status\?v=\d+)"')
JOB_ID = re.compile(r"/jobs/(\d+)$")
ROW_IDS = re.compile(r'<tr id="job-(\d+)"')

_people = json.loads(Path(os.environ["CRATER_LOAD_USERS"]).read_text()) if os.environ.get("CRATER_LOAD_USERS") else []
_next = itertools.cycle(_people) if _people else None
_lock = threading.Lock()
_log = open(os.environ["CRATER_LOAD_LOG"], "a") if os.environ.get("CRATER_LOAD_LOG") else None  # noqa: SIM115  (open while locust runs)
_failures = open(os.environ["CRATER_LOAD_FAILURES"], "a") if os.environ.get("CRATER_LOAD_FAILURES") else None  # noqa: SIM115


def record(**entry) -> None:
    if _log is not None:
        with _lock:
            _log.write(json.dumps(entry) + "\n")
            _log.flush()


@events.request.add_listener
def _failed(request_type, name, response_time, response_length, exception=None, response=None, **_kw):
    """Every failed request with its time, so the harness can tell crash windows from the rest."""
    if exception is not None and _failures is not None:
        with _lock:
            _failures.write(json.dumps({"t": time.time(), "name": f"{request_type} {name}",
                                        "status": getattr(response, "status_code", 0), "error": str(exception)[:200]}) + "\n")
            _failures.flush()


@events.quitting.add_listener
def _close(environment, **_kw):
    for f in (_log, _failures):
        if f is not None:
            f.close()


class Researcher(HttpUser):
    wait_time = between(1, 4)

    def on_start(self):
        with _lock:
            self.person = next(_next)
        self.own: list[int] = []
        self.long_running: list[int] = []
        self.sign_in()

    def sign_in(self):
        page = self.client.get("/login", name="/login")
        token = CSRF.search(page.text)
        if token is None:
            return
        self.client.post("/login", name="POST /login", data={
            "csrf_token": token.group(1), "username": self.person["username"], "password": self.person["password"]})

    def poll(self, url: str, name: str, times: int = 2):
        for _ in range(times):
            self._sleep(2)
            self.client.get(url, name=name, headers={"HX-Request": "true"})

    def _sleep(self, seconds: float):
        import gevent
        gevent.sleep(seconds)

    @task(3)
    def home(self):
        self.client.get("/", name="/")

    @task(5)
    def job_list(self):
        page = self.client.get("/jobs", name="/jobs")
        ids = ROW_IDS.findall(page.text)
        if ids and not self.own:
            self.own = [int(i) for i in ids[:5]]
        self.poll("/jobs?scope=mine&page=1", "/jobs (htmx poll)", times=random.randint(1, 3))

    @task(1)
    def filtered_jobs(self):
        if self.person.get("manager"):  # a lab manager looks at the lab's jobs
            self.client.get(f"/jobs?scope=account&page={random.randint(1, 3)}", name="/jobs?scope=account")
        else:
            self.client.get(f"/jobs?state={random.choice(['active', 'Succeeded', 'Queued'])}", name="/jobs?state=…")

    @task(4)
    def job_page(self):
        if not self.own:
            return self.job_list()
        job_id = random.choice(self.own[-10:])
        page = self.client.get(f"/jobs/{job_id}", name="/jobs/[id]")
        status = STATUS.search(page.text)
        if status:
            self.poll(status.group(1).replace("&amp;", "&"), "/jobs/[id]/status (htmx poll)", times=random.randint(1, 4))

    @task(2)
    def submit(self):
        form = self.client.get("/jobs/new/batch", name="/jobs/new/batch")
        token, key = CSRF.search(form.text), KEY.search(form.text)
        if not (token and key):
            return
        long_running = random.random() < 0.3
        data = {"csrf_token": token.group(1), "idempotency_key": key.group(1), "display_name": f"load-{key.group(1)[:6]}",
                "account_id": str(self.person["account_id"]), "image": "pytorch/pytorch:2.4",
                "command": "sleep infinity" if long_running else "python train.py", "command_mode": "shell",
                "gpus": "0", "cpu": "1", "memory_gib": "2", "time_limit_hours": "24", "notify": "y",
                "when_full": "queue"}
        for attempt in range(3):  # an answer that never came: the same submission again
            with self.client.post("/jobs/new/batch", data=data, name="POST /jobs/new/batch", catch_response=True) as r:
                found = JOB_ID.search(r.url or "")
                record(key=key.group(1), attempt=attempt, status=r.status_code, job=int(found.group(1)) if found else None,
                       user=self.person["username"])
                if r.status_code == 200 and found:
                    job_id = int(found.group(1))
                    self.own.append(job_id)
                    if long_running:
                        self.long_running.append(job_id)
                    return
                if r.status_code not in (0, 502, 503, 504):
                    r.failure(f"submission answered {r.status_code}")
                    return
            self._sleep(1)

    @task(2)
    def stop_one(self):
        if not self.long_running:
            return
        job_id = self.long_running.pop(0)
        page = self.client.get(f"/jobs/{job_id}", name="/jobs/[id]")
        token = CSRF.search(page.text)
        if token:
            self.client.post(f"/jobs/{job_id}/stop", data={"csrf_token": token.group(1)}, name="POST /jobs/[id]/stop")

    @task(1)
    def nodes(self):
        self.client.get("/nodes", name="/nodes")

    @task(1)
    def queues(self):
        self.client.get("/queues", name="/queues")
