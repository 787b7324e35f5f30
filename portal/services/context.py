"""Who is acting: the signed-in user and the client address, handed to services by the views."""
from __future__ import annotations

from dataclasses import dataclass

from ..models import User
from flask_babel import gettext as _

from .errors import Forbidden


@dataclass(frozen=True)
class Actor:
    user: User | None  # None = the command line / the system
    client_ip: str = ""
    token: str = ""  # the personal access token's name, when the API was called with one (audited)

    @property
    def name(self) -> str:
        return self.user.username if self.user else "system"

    @property
    def is_admin(self) -> bool:
        return self.user is None or self.user.is_admin

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden(_("This needs an administrator."))


SYSTEM = Actor(None, "")
