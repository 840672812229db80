"""The one error hierarchy of tokensmith, named after google.rpc status codes.

Services raise these; the HTTP edge (``tokensmith.api.errors``) is the only place that turns
them into wire formats: Google's ``{"error": {code, message, status, details}}`` envelope on
the REST APIs, RFC 6749 ``{"error", "error_description"}`` on ``/token``, plain text on the
metadata server. Nothing here knows about HTTP beyond the status number each code maps to.

    TokensmithError
    ├── InvalidArgument       400 INVALID_ARGUMENT
    ├── FailedPrecondition    400 FAILED_PRECONDITION
    ├── Unauthenticated       401 UNAUTHENTICATED
    ├── PermissionDenied      403 PERMISSION_DENIED   (carries the permission for ErrorInfo)
    ├── NotFound              404 NOT_FOUND
    ├── AlreadyExists         409 ALREADY_EXISTS
    ├── Aborted               409 ABORTED
    ├── ResourceExhausted     429 RESOURCE_EXHAUSTED
    ├── Unavailable           503 UNAVAILABLE          (retryable; never used for a denial)
    └── Internal              500 INTERNAL

    OAuthError                RFC 6749 token-endpoint error (error code + description)

Source: https://github.com/googleapis/googleapis/blob/master/google/rpc/code.proto
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "Aborted",
    "AlreadyExists",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OAuthError",
    "PermissionDenied",
    "ResourceExhausted",
    "TokensmithError",
    "Unauthenticated",
    "Unavailable",
]


class TokensmithError(Exception):
    """Base of every error a caller may see; ``message`` is safe to show to the caller."""

    status: ClassVar[str] = "UNKNOWN"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: tuple[Mapping[str, Any], ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidArgument(TokensmithError):
    status = "INVALID_ARGUMENT"
    http_status = 400


class FailedPrecondition(TokensmithError):
    status = "FAILED_PRECONDITION"
    http_status = 400


class Unauthenticated(TokensmithError):
    status = "UNAUTHENTICATED"
    http_status = 401


class PermissionDenied(TokensmithError):
    """Denied, or the resource does not exist where Google hides the difference.

    ``permission`` goes into the ``google.rpc.ErrorInfo`` detail that gcloud and Node render.
    """

    status = "PERMISSION_DENIED"
    http_status = 403

    def __init__(self, message: str, *, permission: str | None = None) -> None:
        details: tuple[Mapping[str, Any], ...] = ()
        if permission is not None:
            details = (
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED",
                    "domain": "iam.googleapis.com",
                    "metadata": {"permission": permission},
                },
            )
        super().__init__(message, details=details)
        self.permission = permission


class NotFound(TokensmithError):
    status = "NOT_FOUND"
    http_status = 404


class AlreadyExists(TokensmithError):
    status = "ALREADY_EXISTS"
    http_status = 409


class Aborted(TokensmithError):
    status = "ABORTED"
    http_status = 409


class ResourceExhausted(TokensmithError):
    status = "RESOURCE_EXHAUSTED"
    http_status = 429


class Unavailable(TokensmithError):
    status = "UNAVAILABLE"
    http_status = 503


class Internal(TokensmithError):
    status = "INTERNAL"
    http_status = 500


class OAuthError(Exception):
    """An RFC 6749 §5.2 error from the token endpoint (``invalid_grant``, ``invalid_scope``, …)."""

    def __init__(self, error: str, description: str, *, http_status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.http_status = http_status
