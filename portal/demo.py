"""`crater demo`: the portal on its embedded default, ready to click through.

Starts a local OpenID Connect provider (oidc-provider-mock) as the "university SSO" and kubesim
with its demo cluster (2 x 8 A100, 2 x 4 RTX 4090, 2 CPU-only nodes) as the cluster, migrates the
SQLite database under instance/, seeds demo users, accounts and images (idempotent), runs the
syncer in-process and serves the portal with Flask's threaded server. Development only: never run
this in production.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import click

DEMO_USERS = [
    # username, display name, email, groups
    ("alice", "Alice Wang 王爱丽", "alice@example.edu", []),
    ("bob", "Bob Li 李博", "bob@example.edu", []),
    ("carol", "Carol Zhang 张卡罗", "carol@example.edu", []),
    ("dora", "Dora Admin", "dora@example.edu", ["crater-admins"]),
]
DEMO_ACCOUNTS = [
    # name, display name, GPUs, per model, CPU, memory GiB, jobs, members {username: role}
    ("vision-lab", "视觉实验室 Vision Lab", 16, {"NVIDIA-A100-SXM4-80GB": 8}, 256, 2048, 20,
     {"alice": "manager", "bob": "member"}),
    ("nlp-lab", "自然语言处理 NLP Lab", 8, {}, 128, 1024, 10, {"carol": "manager", "bob": "member"}),
]


DEMO_IMAGES = [
    ("quay.io/jupyter/pytorch-notebook:cuda12-python-3.11", "JupyterLab with PyTorch and CUDA 12", "jupyter"),
    ("pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime", "PyTorch 2.4, CUDA 12.1", "batch,distributed"),
    ("nvcr.io/nvidia/pytorch:24.08-py3", "NVIDIA NGC PyTorch 24.08", "jupyter,batch,distributed"),
]


def ensure_instance_folder(app_or_path) -> None:
    path = getattr(app_or_path, "instance_path", app_or_path)
    Path(path).mkdir(parents=True, exist_ok=True)


def run_demo(host: str, port: int) -> None:
    import warnings

    from werkzeug.serving import run_simple

    with warnings.catch_warnings():  # it imports Authlib modules that Authlib deprecates
        warnings.simplefilter("ignore")
        from oidc_provider_mock import run_server_in_thread
        from oidc_provider_mock._storage import User as MockUser

    from . import create_app

    from kubesim import KubeSim

    from .cluster.setup import cluster_for
    from .sync.syncer import SyncSettings, Syncer

    mock_users = [MockUser(sub=u, claims={"preferred_username": u, "name": n, "email": e, "groups": g})
                  for u, n, e, g in DEMO_USERS]
    import os
    instance = Path(os.environ.get("CRATER_DEMO_INSTANCE") or Path(__file__).resolve().parent.parent / "instance")
    ensure_instance_folder(instance)
    scale = float(os.environ.get("CRATER_DEMO_TIME_SCALE", "1"))  # tests run the demo faster
    with run_server_in_thread(port=port + 1, user_claims=mock_users) as sso, \
            KubeSim(time_scale=scale, ingress_port=port + 2) as sim:
        issuer = f"http://localhost:{sso.server_port}"
        kubeconfig = sim.write_kubeconfig(instance / "kubesim-kubeconfig")
        prometheus = _start_prometheus(f"127.0.0.1:{sim.port}", instance)
        metrics = {"PROMETHEUS_URL": prometheus.url, "PROMETHEUS_STEP": 5.0} if prometheus else {}
        app = create_app({**metrics,
            "SECRET_KEY": _demo_secret(instance),
            "OIDC_ISSUER": issuer, "OIDC_CLIENT_SECRET": "demo", "OIDC_ADMIN_GROUP": "crater-admins",
            "OIDC_PROVIDER_NAME": "Demo SSO", "KUBECONFIG": str(kubeconfig),
            "SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(instance / "crater.sqlite3"),
            # Notebooks behind the portal's sign-in: kubesim's ingress stand-in asks the portal.
            "INGRESS_URL": f"http://localhost:{sim.ingress_port}",
            "INGRESS_AUTH_URL": f"http://127.0.0.1:{port}/auth/ingress", "PUBLIC_URL": f"http://localhost:{port}",
        })
        with app.app_context():
            from flask_migrate import upgrade
            upgrade()
            admin_password = _seed(issuer, instance)
        syncer = Syncer(app, cluster_for(app), settings=SyncSettings(lease_seconds=6, reconcile_seconds=5)).start()
        url = f"http://localhost:{port}/"
        click.echo(f"""
  Crater demo is running:  {url}

  Sign in with "Demo SSO" and pick a user:
    alice  manager of vision-lab      bob    member of vision-lab and nlp-lab
    carol  manager of nlp-lab         dora   administrator (SSO group crater-admins)
  or with the local form:  admin / {admin_password}

  The cluster is kubesim's demo cluster at {sim.url} (kubeconfig: {kubeconfig}):
  2 nodes x 8 A100, 2 x 4 RTX 4090, 2 CPU-only. A batch job runs 30 s unless its pod says otherwise.
  Its ingress stand-in serves notebooks at http://localhost:{sim.ingress_port}/ behind the portal's sign-in;
  a running job's Terminal runs a shell on this machine (kubesim's exec: a development tool).
  Press Ctrl+C to stop. Data lives in {instance / "crater.sqlite3"}.
""")
        click.echo(f"  GPU metrics: Prometheus at {prometheus.url}, scraping kubesim every 5 s.\n" if prometheus else
                   "  GPU metrics: off (no prometheus binary here: apt-get install prometheus). Charts say \"no metrics\".\n")
        import signal

        def stop(_signum, _frame):  # `kill` stops the demo as Ctrl+C does: everything it started goes too
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, stop)
        try:
            run_simple(host, port, app, threaded=True, use_reloader=False)
        except KeyboardInterrupt:
            pass
        finally:
            syncer.stop()
            if prometheus:
                prometheus.stop()
            if prometheus:
                prometheus.stop()


def _start_prometheus(target: str, instance: Path):
    """Prometheus scraping kubesim, where the binary exists and starts; None (and the demo runs
    without metrics) otherwise."""
    from .local_prometheus import LocalPrometheus
    prometheus = LocalPrometheus([target], instance / "prometheus", scrape_interval=5.0)
    if not prometheus.available:
        return None
    try:
        return prometheus.start()
    except RuntimeError as exc:
        click.echo(f"  (Prometheus did not start: {exc}; the demo runs without metrics)")
        return None


def _demo_secret(instance: Path) -> str:
    path = instance / "demo-secret-key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _seed(issuer: str, instance: Path) -> str:
    """Demo users (as SSO users of the local provider), accounts and members; returns the local
    admin's password (kept in instance/ so it stays the same across runs)."""
    from sqlalchemy import select

    from .extensions import db
    from .models import AuthSource, User
    from .services import accounts, users
    from .services.context import SYSTEM

    pw_file = instance / "demo-admin-password"
    if not pw_file.exists():
        pw_file.write_text(secrets.token_urlsafe(12))
        pw_file.chmod(0o600)
    password = pw_file.read_text().strip()
    if users.find_by_username("admin") is None:
        users.create_local_admin("admin", password)
    for username, name, email, groups in DEMO_USERS:
        if users.find_by_username(username) is None:
            user = User(username=username, display_name=name, email=email, auth_source=AuthSource.OIDC.value,
                        oidc_issuer=issuer, oidc_subject=username, role="admin" if groups else "user")
            db.session.add(user)
            db.session.flush()
            accounts.join_default_account(user)
            db.session.commit()
    for name, display, gpus, per_model, cpu, mem, jobs, members in DEMO_ACCOUNTS:
        existing = db.session.execute(select(accounts.Account).where(accounts.Account.name == name)).scalar()
        if existing is not None:
            continue
        account = accounts.create_account(SYSTEM, accounts.AccountInput(
            name=name, display_name=display, gpu_quota=gpus, gpu_model_quotas=per_model, cpu_quota=cpu,
            memory_quota_gib=mem, max_jobs=jobs, description="Demo account"))
        for username, role in members.items():
            accounts.add_member(SYSTEM, account.id, username, role, None)
    from .models import Image
    if db.session.execute(select(Image.id)).first() is None:
        db.session.add_all(Image(reference=ref, description=text, job_types=types) for ref, text, types in DEMO_IMAGES)
    # An admin who signs in through SSO later keeps the same row (issuer may differ per port).
    for user in db.session.execute(select(User).where(User.auth_source == AuthSource.OIDC.value)).scalars():
        user.oidc_issuer = issuer
    db.session.commit()
    return password
