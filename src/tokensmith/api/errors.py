"""The one place errors become HTTP responses.

- REST APIs: Google's envelope ``{"error": {"code", "message", "status", "details"}}``
  (https://cloud.google.com/apis/design/errors);
- the token endpoint: RFC 6749 §5.2 ``{"error", "error_description"}``;
- anything unexpected: a logged 500 ``INTERNAL`` whose body reveals nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tokensmith.errors import Internal, OAuthError, TokensmithError

__all__ = ["JSON_TYPE", "google_error", "json_response", "oauth_error", "unexpected_error"]

log = logging.getLogger("tokensmith.api")

JSON_TYPE = "application/json; charset=UTF-8"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON_TYPE, headers=headers)


def google_error(error: TokensmithError) -> Response:
    body: dict[str, Any] = {
        "code": error.http_status,
        "message": error.message,
        "status": error.status,
    }
    if error.details:
        body["details"] = [dict(d) for d in error.details]
    headers = (
        {"WWW-Authenticate": 'Bearer realm="tokensmith"'} if error.http_status == 401 else None
    )
    return json_response({"error": body}, error.http_status, headers)


def oauth_error(error: OAuthError) -> Response:
    return json_response(
        {"error": error.error, "error_description": error.description}, error.http_status
    )


async def handle_tokensmith_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TokensmithError)
    return google_error(exc)


async def handle_oauth_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    return oauth_error(exc)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return google_error(Internal("Internal error encountered."))
