"""Crater portal: the application factory.

create_app(): configuration -> extensions -> blueprints -> error handlers. No I/O here: no
migrations, no network; the database and the cluster are first touched by a request or a command.
"""
from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from .config import ConfigError, check_config, load_config
from .models.types import MAX_ID


class IdConverter(IntegerConverter):
    """`<int:...>` in every route: a number beyond a database id's size (a 32-bit INT) becomes 0,
    an id nothing has, so it is a 404 like any unknown id, never an overflow in the database
    driver. (A bound on the converter itself would make werkzeug answer 405 for other methods.)"""

    def to_python(self, value: str) -> int:
        number = super().to_python(value)
        return number if number <= MAX_ID else 0


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    from .views.files import FilesRequest
    app.request_class = FilesRequest  # uploads under /files stream to the shared storage
    app.url_map.converters["int"] = IdConverter
    cfg = load_config(overrides=config, instance_path=app.instance_path)
    problems = check_config(cfg)
    if problems:
        raise ConfigError("Crater refuses to start:\n  - " + "\n  - ".join(problems))
    app.config.update(cfg)
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from .views.dav import MOUNT, DavApp
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {MOUNT: DavApp(app)})  # WebDAV beside the pages
    if app.config["PROXY_COUNT"]:
        n = app.config["PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n)

    from . import i18n, logs, security, telemetry
    from .auth import session as auth_session
    from .auth import oidc
    from .extensions import babel, csrf, db, limiter, login_manager, migrate

    db.init_app(app)

    @app.teardown_appcontext
    def close_session(_exc):
        """Before Flask-SQLAlchemy's own teardown (teardowns run last-registered first): ending the
        session rolls back, which raises on a connection the database has just dropped (a restart);
        the answer is already made, so drop that session instead of turning it into a 500."""
        try:
            db.session.remove()
        except Exception:  # noqa: BLE001  the pool has invalidated the dead connection
            db.session.registry.clear()
    migrate.init_app(app, db, directory=str(app.root_path + "/../migrations"))
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    oidc.init_app(app)
    babel.init_app(app, locale_selector=i18n.select_locale)
    auth_session.init_app(app)
    security.init_app(app)
    i18n.init_app(app)
    logs.init_app(app)
    telemetry.init_app(app)

    from .auth.views import bp as auth_bp
    from .views import (admin_accounts, admin_audit, admin_users, charts, datasets, errors, fair_use, files, health, images, home, maintenance, ingress_auth, jobs,
                        nodes, notifications, queue, templating, terminal, tokens, usage)

    app.register_blueprint(auth_bp)
    app.register_blueprint(home.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(admin_users.bp)
    app.register_blueprint(admin_accounts.bp)
    app.register_blueprint(admin_audit.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(nodes.bp)
    app.register_blueprint(charts.bp)
    app.register_blueprint(usage.bp)
    app.register_blueprint(fair_use.bp)
    app.register_blueprint(notifications.bp)
    app.register_blueprint(queue.bp)
    app.register_blueprint(tokens.bp)
    app.register_blueprint(terminal.bp)
    app.register_blueprint(ingress_auth.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(datasets.bp)
    app.register_blueprint(images.bp)
    app.register_blueprint(maintenance.bp)
    from . import api
    api.init_app(app)
    errors.init_app(app)
    templating.init_app(app)

    from . import commands
    commands.register(app)
    return app
