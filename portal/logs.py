"""Logs people can search: one line per request (method, route, status, duration, user id, request
id) from the web process, the same format for the syncer's lines, plain text or JSON lines
(CRATER_LOG_FORMAT=json). Every request carries a request id: the caller's X-Request-ID when it is
a sane token, else a fresh one; it is returned in the X-Request-ID header and shown on error pages.

What is never logged: query strings (they may carry tokens), form bodies (passwords), cookies and
sessions. A request line names the route's rule (`/jobs/<int:job_id>`) next to the path without its
query, and the user by id only."""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

from flask import Flask, g, request, session

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
log = logging.getLogger("crater.request")
FIELDS = ("method", "route", "path", "status", "duration_ms", "user_id", "request_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the request's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for name in FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
    converter = time.gmtime


def configure(fmt: str = "text", level: int = logging.INFO) -> None:
    """Send the portal's loggers ("crater.*") to stderr in `fmt` (text | json), once per process."""
    logger = logging.getLogger("crater")
    if any(getattr(h, "crater", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.crater = True
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def init_app(app: Flask) -> None:
    @app.before_request
    def start() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        g.request_started = time.perf_counter()

    @app.after_request
    def finish(response):
        request_id = g.get("request_id") or uuid.uuid4().hex
        response.headers["X-Request-ID"] = request_id
        started = g.get("request_started")
        duration = round((time.perf_counter() - started) * 1000, 1) if started else 0.0
        user_id = session.get("_user_id") if request.endpoint != "static" else None
        rule = request.url_rule.rule if request.url_rule is not None else "-"
        fields = {"method": request.method, "route": rule, "path": request.path[:300], "status": response.status_code,
                  "duration_ms": duration, "user_id": int(user_id) if str(user_id or "").isdigit() else None,
                  "request_id": request_id}
        log.info("%s %s %s %.1fms user=%s rid=%s", fields["method"], fields["path"], fields["status"], duration,
                 fields["user_id"] if fields["user_id"] is not None else "-", request_id, extra=fields)
        return response
