"""Column types shared by the models (portable between SQLite and MySQL)."""
import json
from datetime import datetime, UTC

from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator


MAX_ID = 2**31 - 1  # ids are 32-bit INTs: a larger number names nothing


def utcnow() -> datetime:
    """Naive UTC now: both SQLite and MySQL DATETIME store no zone, so the DB holds UTC throughout."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


class JSONText(TypeDecorator):
    """JSON kept in a TEXT column: same type on SQLite and MariaDB (whose JSON is LONGTEXT anyway)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)

    def process_result_value(self, value, dialect):
        return None if value is None else json.loads(value)
