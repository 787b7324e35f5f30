"""Domain errors raised by services; `portal.views.errors` maps them to HTTP statuses."""
from __future__ import annotations


class DomainError(Exception):
    status = 400

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message


class BadRequest(DomainError):
    """Input that cannot mean anything (a hostile path, an unknown action)."""

    status = 400


class NotFound(DomainError):
    status = 404


class Forbidden(DomainError):
    status = 403


class Conflict(DomainError):
    """The request is valid but the object's state does not allow it now."""

    status = 409


class ValidationFailed(DomainError):
    """Input that passed parsing but breaks a rule; `errors` maps field names to messages."""

    status = 422

    def __init__(self, errors: dict[str, str], message: str = ""):
        super().__init__(message)
        self.errors = errors

    def __str__(self) -> str:
        return str(self.message) or "; ".join(str(v) for v in self.errors.values())


class AuthenticationFailed(DomainError):
    status = 401
