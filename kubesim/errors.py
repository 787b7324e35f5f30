"""Kubernetes Status errors: what a real API server answers when something is wrong."""
from __future__ import annotations


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def _details(resource, name: str | None) -> dict:
    details = {"kind": resource.plural}
    if resource.group:
        details["group"] = resource.group
    if name:
        details["name"] = name
    return details


def not_found(resource, name: str) -> ApiError:
    what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    return ApiError(404, "NotFound", f'{what} "{name}" not found', _details(resource, name))


def already_exists(resource, name: str) -> ApiError:
    what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    return ApiError(409, "AlreadyExists", f'{what} "{name}" already exists', _details(resource, name))


def conflict(resource, name: str, why: str) -> ApiError:
    what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {what} "{name}": {why}',
                    _details(resource, name))


def invalid(resource, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """causes: (reason, message, field), e.g. ("FieldValueRequired", "Required value", "spec.containers")."""
    kind = resource.kind
    summary = ", ".join(f"{field}: {message}" for _r, message, field in causes)
    details = _details(resource, name)
    details["kind"] = kind
    details["causes"] = [{"reason": r, "message": m, "field": f} for r, m, f in causes]
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str = "too old resource version") -> ApiError:
    return ApiError(410, "Expired", message)


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")
