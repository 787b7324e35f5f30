"""WebDAV locks (LOCK/UNLOCK), kept in the database so every web worker and replica sees them."""
from __future__ import annotations

from sqlalchemy import Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class DavLock(db.Model):
    __tablename__ = "dav_locks"

    token: Mapped[str] = mapped_column(String(100), primary_key=True)
    root: Mapped[str] = mapped_column(String(1024))  # the locked path, "/users/alice/a.txt"
    data: Mapped[str] = mapped_column(Text)  # WsgiDAV's lock dictionary as JSON (its owner XML base64)
    expire: Mapped[float] = mapped_column(Float)  # epoch seconds
