"""What every template may use, registered in one place: the vocabulary (states, types, reasons,
what a job waits for, node states, a job's history), the job list's fixed words, and one date
filter (`|dt`, `|dt('date')`, `|dt('short')`, `|dt('seconds')`; times are UTC as stored) and one of
sizes (`|size`)."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError
from flask import Flask

from .. import vocabulary
from .job_rows import list_labels

DATE_FORMATS = {"minutes": "%Y-%m-%d %H:%M", "date": "%Y-%m-%d", "short": "%m-%d %H:%M", "seconds": "%Y-%m-%d %H:%M:%S"}


def format_datetime(value: datetime | None, style: str = "minutes") -> str:
    """A stored time as a page shows it ("—" for none)."""
    if value is None:
        return "—"
    return value.strftime(DATE_FORMATS[style])


def format_size(value: int | None) -> str:
    """Bytes as a page shows them: 0 B, 999 B, 1.5 KiB, 20 MiB, 2.0 GiB."""
    if value is None:
        return "—"
    size, unit = float(value), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            break
        size /= 1024
    return f"{size:.0f} {unit}" if unit == "B" or size >= 100 else f"{size:.1f} {unit}"


def maintenance_banner() -> list:
    """Maintenance planned or under way, for the banner on every page (none when the database is
    away: the error page itself must render)."""
    from ..services import maintenance
    try:
        return maintenance.current()
    except SQLAlchemyError:
        return []


def init_app(app: Flask) -> None:
    app.add_template_filter(format_datetime, "dt")
    app.add_template_filter(format_size, "size")
    for name, value in {
        "JobState": vocabulary.JobState, "JobType": vocabulary.JobType,
        "timedelta": timedelta, "job_labels": list_labels, "job_reason": vocabulary.reason_words,
        "queue_words": vocabulary.waiting_words, "preemption_words": vocabulary.preemption_words,
        "reason_label": vocabulary.reason_label, "node_state_words": vocabulary.node_state_words,
        "history_words": vocabulary.history_words, "state_word": vocabulary.state_word,
        "hours_text": vocabulary.hours_text, "maintenance_words": vocabulary.maintenance_words,
        "drain_words": vocabulary.drain_words, "maintenance_banner": maintenance_banner,
        "never_words": vocabulary.never_words, "target_type_words": vocabulary.target_type_words,
        "phase_word": vocabulary.phase_word, "event_type_word": vocabulary.event_type_word,
        "event_reason_words": vocabulary.event_reason_words,
        "account_description": vocabulary.account_description, "policy_param_words": vocabulary.policy_param_words,
    }.items():
        app.add_template_global(value, name)
