"""Schemathesis (property-based, from the OpenAPI description the portal serves) against the live
API: a real HTTP server on loopback with kubesim behind it, called with a read-and-write token.
Every generated request, valid or not, gets no 5xx, a documented status and content type, and a
body that matches the description; with all of schemathesis's checks and phases, a request the
description allows is accepted and one it forbids is refused, so the description states every
limit the service enforces."""
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from conftest import Factory, base_config, migrate_fresh
from kubesim.sim import KubeSim
from portal import create_app


@pytest.fixture(scope="module")
def live_api(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schemathesis")
    url = f"sqlite:///{folder}/api.sqlite3"
    migrate_fresh(url)
    sim = KubeSim(time_scale=20, tick=0.05).start()
    app = create_app(base_config(url, TESTING=False, KUBECONFIG=str(sim.write_kubeconfig(folder / "kc")),
                                 RATE_LIMIT_API="100000 per minute", RATE_LIMIT_SUBMIT="100000 per minute"))
    make = Factory(app)
    alice = make.user("alice")
    lab = make.account("vision-lab", gpu_quota=8, members={alice: "member"})
    for n in range(5):
        make.job(alice, lab, display_name=f"seen-{n}", last_log="hello\n")
    make.node("a100-0")
    make.template(alice, lab, shared=True)
    make.image()
    _token_id, token = make.api_token(alice, "schemathesis")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", token
    server.shutdown()
    sim.stop()


def test_schemathesis_with_every_check_and_phase_passes(live_api):
    """`schemathesis run` itself (its CLI, as a user would run it) with --checks all and the
    examples, coverage, fuzzing and stateful phases. tests/schemathesis_hooks.py keeps generated
    bodies to the few rules across fields that JSON Schema cannot state (the description says
    them in words)."""
    base, token = live_api
    tests = Path(__file__).resolve().parent
    cli = Path(sys.executable).parent / "schemathesis"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([str(cli), "run", f"{base}/api/v1/openapi.json", "--checks", "all",
                             "--phases", "examples,coverage,fuzzing,stateful", "-H", f"Authorization: Bearer {token}",
                             "--max-examples", "30", "--seed", "20261202", "--no-color", "--request-timeout", "30"],
                            cwd=tests, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    tested = re.search(r"Tested: (\d+)", output)
    assert tested and int(tested.group(1)) >= 14, output[-2000:]
