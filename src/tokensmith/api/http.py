"""Request helpers shared by the API modules: bodies, forms, callers and paging parameters.

Bodies are read with a size cap before parsing; JSON must be an object; a non-JSON content type
on a JSON API is refused. Error texts follow Google's ("Invalid JSON payload received. …").
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import orjson
from starlette.requests import Request

from tokensmith.errors import InvalidArgument, TokensmithError
from tokensmith.services.authn import CLOUD_PLATFORM, IAM_SCOPE, Caller, require_scope

__all__ = ["API_SCOPES", "PayloadTooLarge", "caller", "form_body", "json_body", "read_body"]

API_SCOPES = frozenset({CLOUD_PLATFORM, IAM_SCOPE})


class PayloadTooLarge(TokensmithError):
    status = "INVALID_ARGUMENT"
    http_status = 413


async def read_body(request: Request) -> bytes:
    limit: int = request.app.state.services.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request payload size exceeds the limit: {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request payload size exceeds the limit: {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; an empty body is ``{}``."""
    raw = await read_body(request)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not raw.strip():
        return {}
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise InvalidArgument(
            f"Invalid JSON payload received. Content-Type {content_type!r} is not supported; "
            "send application/json."
        )
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"Invalid JSON payload received. {exc.msg}.") from None
    if not isinstance(value, dict):
        raise InvalidArgument(
            "Invalid JSON payload received. The request body must be a JSON object."
        )
    return value


async def form_body(request: Request) -> dict[str, str]:
    """A form-encoded body (``application/x-www-form-urlencoded``), last value wins."""
    raw = await read_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument("The request body is not UTF-8.") from None
    return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))


def caller(request: Request, scopes: frozenset[str] = API_SCOPES) -> Caller:
    services = request.app.state.services
    who: Caller = services.authn.authenticate(request.headers.get("authorization"))
    require_scope(who, scopes)
    return who
