"""The `crater` command: Flask's CLI plus Crater's own commands.

  crater db upgrade           apply migrations (Flask-Migrate)
  crater create-admin NAME    create a local admin or reset its password (prompt or stdin)
  crater demo                 run the portal on SQLite with demo users and a local SSO provider
  crater sync                 run the syncer (cluster state -> database)
"""
from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import Flask
from flask.cli import FlaskGroup, with_appcontext

from . import create_app


def _ensure_instance_folder(app_or_path) -> None:
    path = getattr(app_or_path, "instance_path", app_or_path)
    Path(path).mkdir(parents=True, exist_ok=True)


def _make_app():
    app = create_app()
    _ensure_instance_folder(app)  # SQLite's default file lives there
    return app


@click.group(cls=FlaskGroup, create_app=_make_app, add_version_option=False, load_dotenv=False)
def cli():
    """Crater, the portal of the lab's GPU cluster."""


@click.command("create-admin")
@click.argument("username")
@with_appcontext
def create_admin(username):
    """Create a local administrator USERNAME (or reset its password). The password is read from
    the prompt, or from the first line of standard input when it is not a terminal."""
    from .services import users
    from .services.errors import DomainError

    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        user, created = users.create_local_admin(username, password)
    except DomainError as exc:
        errors = getattr(exc, "errors", None) or {"": str(exc)}
        for field, message in errors.items():
            click.echo(f"error: {field + ': ' if field else ''}{message}", err=True)
        sys.exit(2)
    click.echo(f"{'Created' if created else 'Updated'} local administrator {user.username}.")


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def demo(host, port):
    """Run the portal for a try-out: SQLite under instance/, demo users and accounts, and a local
    OpenID Connect provider standing in for the university SSO. Development only."""
    from .demo import run_demo

    run_demo(host, port)


@click.command("sync")
@with_appcontext
def sync():
    """Run the syncer: watch the cluster and keep job states in the database current. Several
    replicas may run; one holds the lease and works. Stops on SIGTERM or Ctrl+C (exit 0); exits 1
    when one of its loops cannot be kept running, so that Kubernetes restarts it."""
    import signal
    import threading

    from flask import current_app

    from .cluster.client import ClusterError
    from .cluster.setup import connect
    from .sync.syncer import Syncer

    from . import logs
    app = current_app._get_current_object()
    logs.configure(app.config["LOG_FORMAT"])
    try:
        cluster = connect(app.config)
    except ClusterError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    syncer = Syncer(app, cluster).start()
    click.echo(f"syncer {syncer.identity} started (namespace {app.config['JOB_NAMESPACE']})")
    if app.config["SYNC_METRICS_PORT"]:
        from .sync import telemetry
        telemetry.serve(syncer, app.config["SYNC_METRICS_PORT"], app.config["SYNC_METRICS_ADDR"])
        click.echo(f"metrics on {app.config['SYNC_METRICS_ADDR']}:{app.config['SYNC_METRICS_PORT']}/metrics")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(1.0) and syncer.healthy():
        pass
    syncer.stop()
    if syncer.failed or not done.is_set():
        click.echo(f"error: the syncer's loop {syncer.failed or '?'} stopped; exiting so that it is restarted", err=True)
        sys.exit(1)


def register(app: Flask) -> None:
    app.cli.add_command(create_admin)
    app.cli.add_command(demo)
    app.cli.add_command(sync)
