"""Crater's own commands on the Flask app (so `flask --app app sync` works as `crater sync` does):

  crater create-admin NAME    create a local admin or reset its password (prompt or stdin)
  crater sync                 run the syncer (cluster state -> database)
"""
from __future__ import annotations

import sys

import click
from flask import Flask
from flask.cli import with_appcontext


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
    app.cli.add_command(sync)
