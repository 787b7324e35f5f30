"""craterctl as a user runs it: a subprocess against a live portal (a real HTTP server on loopback,
kubesim and the syncer behind it). Sign in with a token (kept mode 0600), submit a YAML spec,
follow its log to the end, list, get, stop, and submit the spec a job page shows unchanged. Errors
come with clear words and their exit codes."""
import html
import json
import os
import re
import stat
import subprocess
import sys

import pytest
import yaml

from conftest import Factory
from kubesim_fixtures import wait_for
from process_stack import csrf_of, signed_in
from test_browser import serving

TOKEN = re.compile(r"crater_pat_[0-9a-f]{12}_[A-Za-z0-9_-]{40}")


@pytest.fixture
def portal(tmp_path, fresh_sim):
    from portal.cluster.setup import cluster_for
    from portal.sync.syncer import SyncSettings, Syncer

    sim = fresh_sim(time_scale=10)[0]
    with serving(tmp_path, KUBECONFIG=str(sim.write_kubeconfig(tmp_path / "kc"))) as (app, base):
        syncer = Syncer(app, cluster_for(app), settings=SyncSettings(lease_seconds=3, watch_timeout=5)).start()
        make = Factory(app)
        alice = make.user("alice", password="alice-password-1")
        make.account("vision-lab", gpu_quota=8, members={alice: "member"})
        yield app, base, alice
        syncer.stop()


def ctl(tmp_path, *args, stdin: str | None = None, env: dict | None = None, timeout: float = 90):
    environment = {k: v for k, v in os.environ.items() if k not in ("CRATER_TOKEN", "CRATER_URL")}
    environment.update({"XDG_CONFIG_HOME": str(tmp_path / "config"), **(env or {})})
    return subprocess.run([sys.executable, "-m", "craterctl", *args], input=stdin, capture_output=True, text=True,
                          env=environment, timeout=timeout)


def token_from_settings(base: str) -> str:
    """Sign in with the form and create a token on the settings page, as a person would."""
    s = signed_in(base, "alice", "alice-password-1")
    made = s.post(base + "/settings/tokens", data={"csrf_token": csrf_of(s, base + "/settings/tokens"), "name": "terminal",
                                                   "scope": "write", "expires_days": "30"}, timeout=10)
    assert made.status_code == 201
    return TOKEN.search(made.text).group(0), s


def test_craterctl_end_to_end(portal, tmp_path):
    app, base, _alice = portal
    assert ctl(tmp_path, "ls").returncode == 3  # not signed in yet
    assert "not signed in" in ctl(tmp_path, "ls").stderr
    refused = ctl(tmp_path, "login", base, "--token-stdin", stdin="crater_pat_000000000000_" + "x" * 40 + "\n")
    assert refused.returncode == 3 and "not valid" in refused.stderr
    token, browser = token_from_settings(base)
    login = ctl(tmp_path, "login", base, "--token-stdin", stdin=token + "\n")
    assert login.returncode == 0, login.stderr
    assert "as alice" in login.stdout
    config = tmp_path / "config" / "crater" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and json.loads(config.read_text())["token"] == token
    assert token not in login.stdout + login.stderr

    wait_for(lambda: "NVIDIA-A100" in ctl(tmp_path, "gpus").stdout, timeout=20, what="the node inventory")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "job_type": "batch", "display_name": "sweep-1", "image": "pytorch/pytorch:2.4", "command": "python train.py",
        "gpus": 1, "gpu_model": "NVIDIA-A100-SXM4-80GB", "cpu_milli": 2000, "memory_mib": 4096}))
    submitted = ctl(tmp_path, "submit", "-f", str(tmp_path / "job.yaml"))
    assert submitted.returncode == 0, submitted.stderr
    job_id = int(re.match(r"job (\d+) (Pending|Submitting|Running)", submitted.stdout).group(1))

    followed = ctl(tmp_path, "logs", str(job_id), "-f", timeout=120)  # to the end of the job
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.strip() and f"job {job_id} Succeeded" in followed.stderr

    listed = json.loads(ctl(tmp_path, "ls", "-o", "json").stdout)
    assert [(j["id"], j["state"]) for j in listed] == [(job_id, "Succeeded")]
    assert ctl(tmp_path, "ls", "-o", "ids").stdout.split() == [str(job_id)]
    table = ctl(tmp_path, "ls").stdout
    assert table.splitlines()[0].split()[:4] == ["ID", "NAME", "TYPE", "STATE"] and "sweep-1" in table
    got = yaml.safe_load(ctl(tmp_path, "get", str(job_id), "-o", "yaml").stdout)
    assert got["state"] == "Succeeded" and got["account"] == "vision-lab"
    quota = ctl(tmp_path, "quota")
    assert quota.returncode == 0 and "vision-lab" in quota.stdout

    # The spec the job page shows, saved to a file and submitted again unchanged.
    page = browser.get(f"{base}/jobs/{job_id}", timeout=10).text
    shown = html.unescape(re.search(r'<pre[^>]*id="job-spec"[^>]*>(.*?)</pre>', page, re.S).group(1))
    (tmp_path / "from-page.yaml").write_text(shown)
    again = ctl(tmp_path, "submit", "-f", str(tmp_path / "from-page.yaml"))
    assert again.returncode == 0, again.stderr
    clone_id = int(re.match(r"job (\d+)", again.stdout).group(1))
    from portal.extensions import db
    from portal.models import Job
    with app.app_context():
        assert db.session.get(Job, clone_id).spec == db.session.get(Job, job_id).spec
    stopped = ctl(tmp_path, "stop", str(clone_id))
    assert stopped.returncode == 0 and "Stopped" in stopped.stdout
    assert ctl(tmp_path, "stop", str(clone_id)).returncode == 5  # it has ended: not possible now
    # Beyond vision-lab's 8 guaranteed GPUs, on idle ones: borrowed (may be preempted), said so.
    (tmp_path / "big.yaml").write_text(yaml.safe_dump({**yaml.safe_load((tmp_path / "job.yaml").read_text()), "gpus": 8,
                                                      "display_name": "beyond"}))
    inquota = ctl(tmp_path, "submit", "-f", str(tmp_path / "big.yaml"), "-o", "json")
    beyond = ctl(tmp_path, "submit", "-f", str(tmp_path / "big.yaml"), "--when-full", "borrow")
    assert inquota.returncode == 0 and json.loads(inquota.stdout)["borrowed"] is False
    assert beyond.returncode == 0 and "borrowed" in beyond.stdout, beyond.stdout + beyond.stderr
    for line in (inquota.stdout, beyond.stdout):
        ctl(tmp_path, "stop", str(json.loads(line)["id"] if line.startswith("{") else re.match(r"job (\d+)", line).group(1)))
    assert ctl(tmp_path, "submit", "-f", str(tmp_path / "big.yaml"), "--when-full", "later").returncode == 2
    assert ctl(tmp_path, "spec", str(job_id)).stdout.strip() == yaml.safe_dump(
        yaml.safe_load(shown), allow_unicode=True, sort_keys=False).strip()

    # Errors: clear words, and exit codes a script can tell apart.
    missing = ctl(tmp_path, "get", "999999")
    assert missing.returncode == 4 and "No such job" in missing.stderr
    (tmp_path / "bad.yaml").write_text("image: ''\ngpus: 99\nprivileged: true\n")
    bad = ctl(tmp_path, "submit", "-f", str(tmp_path / "bad.yaml"))
    assert bad.returncode == 6 and "privileged:" in bad.stderr
    assert ctl(tmp_path, "get", "abc").returncode == 2
    assert ctl(tmp_path, "--help").returncode == 0 and "submit" in ctl(tmp_path, "--help").stdout
    env_token = ctl(tmp_path, "ls", "-o", "ids", env={"XDG_CONFIG_HOME": str(tmp_path / "empty"), "CRATER_URL": base,
                                                      "CRATER_TOKEN": token})
    assert env_token.returncode == 0 and str(job_id) in env_token.stdout
    unreachable = ctl(tmp_path, "ls", env={"XDG_CONFIG_HOME": str(tmp_path / "empty"), "CRATER_URL": "http://127.0.0.1:9",
                                           "CRATER_TOKEN": token})
    assert unreachable.returncode == 8 and "cannot reach" in unreachable.stderr


def test_craterctl_forgives_small_slips(portal, tmp_path):
    """What a new user types: the spec file without -f, a file that is not there, an account by
    name, a state in lower case, the log of a queued job, the last line of an ended one, a
    Chinese job name in a table. One-line messages and exit codes, never a traceback."""
    app, base, alice = portal
    token, _browser = token_from_settings(base)
    assert ctl(tmp_path, "login", base, "--token-stdin", stdin=token + "\n").returncode == 0
    wait_for(lambda: "NVIDIA-A100" in ctl(tmp_path, "gpus").stdout, timeout=20, what="the node inventory")
    spec = {"job_type": "batch", "display_name": "训练-模型 一", "image": "pytorch/pytorch:2.4", "command": "python train.py",
            "gpus": 1, "gpu_model": "NVIDIA-A100-SXM4-80GB", "cpu_milli": 2000, "memory_mib": 4096}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    runs = []

    def run(*args, code=0, **kw):
        done = ctl(tmp_path, *args, **kw)
        runs.append(done)
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        return done

    first = run("submit", str(tmp_path / "job.yaml"))  # as well as -f
    job_id = int(re.match(r"job (\d+)", first.stdout).group(1))
    wait_for(lambda: yaml.safe_load(ctl(tmp_path, "get", str(job_id), "-o", "yaml").stdout)["state"] == "Succeeded",
             timeout=60, what="the job ended")
    assert "cannot read" in run("submit", str(tmp_path / "missing.yaml"), code=2).stderr
    assert "is a folder" in run("submit", str(tmp_path), code=2).stderr
    (tmp_path / "latin1.yaml").write_bytes("display_name: caf\xe9\n".encode("latin-1"))
    assert "not a text file" in run("submit", "-f", str(tmp_path / "latin1.yaml"), code=2).stderr
    (tmp_path / "broken.yaml").write_text("image: [unclosed\n")
    assert "line 2" in run("submit", str(tmp_path / "broken.yaml"), code=6).stderr
    assert "needs a spec file" in run("submit", code=2).stderr
    assert "not both" in run("submit", str(tmp_path / "job.yaml"), "-f", str(tmp_path / "big.yaml"), code=2).stderr

    account = next(a for a in json.loads(run("quota", "-o", "json").stdout) if a["name"] == "vision-lab")
    named = run("ls", "--account", "vision-lab", "-o", "ids").stdout.split()
    assert named == run("ls", "--account", str(account["id"]), "-o", "ids").stdout.split() == [str(job_id)]
    assert "no account named 'nope'" in run("ls", "--account", "nope", code=4).stderr
    by_id = run("submit", str(tmp_path / "job.yaml"), "--account", str(account["id"]), "--name", "by id")
    assert re.match(r"job \d+", by_id.stdout)
    assert str(job_id) in run("ls", "--state", "succeeded", "-o", "ids").stdout.split()
    assert str(job_id) in run("ls", "--state", "SUCCEEDED", "-o", "ids").stdout.split()
    assert "not a job state" in run("ls", "--state", "finished", code=2).stderr

    # The log of an ended job honours --tail and --pod; a queued job's says there is none yet.
    kept = run("logs", str(job_id)).stdout
    assert len(kept.splitlines()) > 1
    assert run("logs", str(job_id), "--tail", "1").stdout.splitlines() == kept.splitlines()[-1:]
    assert "No lines were kept for pod nope" in run("logs", str(job_id), "--pod", "nope").stderr
    big = dict(spec, gpus=8, display_name="whole lab")
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(big, allow_unicode=True))
    for _ in range(2):
        last = run("submit", str(tmp_path / "big.yaml"))
    queued = int(re.match(r"job (\d+) Queued", last.stdout).group(1))
    assert f"Job {queued} is Queued: it has no log yet" in run("logs", str(queued)).stderr

    # A table with Chinese names: every column starts at the same terminal column on every line.
    from craterctl import width
    lines = run("ls").stdout.splitlines()
    starts = {width(line[:line.index(" batch ") + 1]) for line in lines[1:]} | {width(lines[0][:lines[0].index("TYPE")])}
    assert len(starts) == 1, lines

    # An administrator's restriction: craterctl says why in one line and exits non-zero
    from portal.extensions import db
    from portal.models import User
    from portal.services import restrictions
    from portal.services.context import Actor
    root = Factory(app).user("root", role="admin")
    with app.app_context():
        restrictions.restrict(Actor(db.session.get(User, root)), alice, "submit", None, "over the fair share")
    refused = ctl(tmp_path, "submit", str(tmp_path / "job.yaml"))
    assert refused.returncode != 0 and "over the fair share" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert run("ls", "-o", "ids").stdout  # reading still works
    with app.app_context():
        restrictions.restrict(Actor(db.session.get(User, root)), alice, "portal", None, "laptop stolen")
    refused = ctl(tmp_path, "ls")
    assert refused.returncode != 0 and "laptop stolen" in refused.stderr
    runs.append(refused)

    (tmp_path / "config" / "crater" / "config.json").write_text("{not json")
    assert "login" in run("ls", code=3).stderr
    assert not [r for r in runs if "Traceback" in r.stderr]
