"""The `crater` command: Flask's CLI over the portal's app (its commands: portal/commands.py)
plus the demo, which builds apps of its own.

  crater db upgrade           apply migrations (Flask-Migrate)
  crater create-admin NAME    create a local admin or reset its password (prompt or stdin)
  crater demo                 run the portal on SQLite with demo users and a local SSO provider
  crater sync                 run the syncer (cluster state -> database)
"""
from __future__ import annotations

import click
from flask.cli import FlaskGroup

from . import create_app
from .demo import ensure_instance_folder, run_demo


def _make_app():
    app = create_app()
    ensure_instance_folder(app)  # SQLite's default file lives there
    return app


@click.group(cls=FlaskGroup, create_app=_make_app, add_version_option=False, load_dotenv=False)
def cli():
    """Crater, the portal of the lab's GPU cluster."""


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def demo(host, port):
    """Run the portal for a try-out: SQLite under instance/, demo users and accounts, and a local
    OpenID Connect provider standing in for the university SSO. Development only."""
    run_demo(host, port)


cli.add_command(demo)
