"""OAuth 2.0 endpoints (oauth2.googleapis.com): ``/token`` and ``/revoke``.

``/token`` is form-encoded (RFC 6749 §4.1.3, RFC 7523); client credentials may also come as
HTTP Basic (``client_secret_basic``). Google's legacy ``/oauth2/v4/token`` path is served too,
since google-auth's compute-engine ID-token flow posts there.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokensmith.api.errors import json_response
from tokensmith.api.http import form_body
from tokensmith.errors import OAuthError, TokensmithError

__all__ = ["routes"]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _basic_credentials(request: Request) -> dict[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return {}
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError(
            "invalid_client", "Malformed HTTP Basic credentials.", http_status=401
        ) from None
    client_id, _, secret = decoded.partition(":")
    return {
        "client_id": urllib.parse.unquote_plus(client_id),
        "client_secret": urllib.parse.unquote_plus(secret),
    }


async def _form(request: Request) -> dict[str, str]:
    """The form body; a body that cannot be read (too large, not UTF-8) is an RFC 6749 error."""
    try:
        return await form_body(request)
    except TokensmithError as exc:
        raise OAuthError("invalid_request", exc.message, http_status=exc.http_status) from None


async def token(request: Request) -> Response:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError(
            "invalid_request",
            "The token endpoint takes application/x-www-form-urlencoded bodies.",
        )
    form = {**_basic_credentials(request), **await _form(request)}
    result = request.app.state.services.oauth.token(form)
    return json_response(result, headers=_NO_STORE)


async def revoke(request: Request) -> Response:
    form = await _form(request) if request.method == "POST" else {}
    value = form.get("token") or request.query_params.get("token", "")
    request.app.state.services.oauth.revoke(value)
    return json_response({})


routes = [
    Route("/token", token, methods=["POST"]),
    Route("/oauth2/v4/token", token, methods=["POST"]),
    Route("/revoke", revoke, methods=["POST", "GET"]),
    Route("/o/oauth2/revoke", revoke, methods=["POST", "GET"]),
]
