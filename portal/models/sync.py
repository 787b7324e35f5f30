"""The syncer's heartbeat: which replica holds the lease and when it last wrote, so pages can say
"cluster data is N s old" when the syncer is down or stuck."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class SyncHeartbeat(db.Model):
    __tablename__ = "sync_heartbeat"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    holder: Mapped[str] = mapped_column(String(128), default="")
    beat_at: Mapped[datetime | None] = mapped_column(DateTime)
