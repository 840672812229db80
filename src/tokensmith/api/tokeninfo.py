"""``/tokeninfo`` (oauth2.googleapis.com, and the ``/oauth2/v1|v3/tokeninfo`` aliases).

GET or POST; the token comes as ``access_token`` or ``id_token`` (query or form), or as a
bearer header with an empty body (what Node's ``getTokenInfo`` sends).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokensmith.api.errors import json_response
from tokensmith.api.http import form_body
from tokensmith.errors import OAuthError

__all__ = ["routes"]


async def tokeninfo(request: Request) -> Response:
    params = dict(request.query_params)
    if request.method == "POST":
        params.update(await form_body(request))
    info = request.app.state.services.tokeninfo
    if params.get("id_token"):
        return json_response(info.id_token(params["id_token"]))
    token = params.get("access_token", "")
    if not token:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else ""
    if not token:
        raise OAuthError("invalid_request", "Missing access_token or id_token parameter.")
    return json_response(info.access_token(token))


routes = [
    Route(path, tokeninfo, methods=["GET", "POST"])
    for path in ("/tokeninfo", "/oauth2/v1/tokeninfo", "/oauth2/v3/tokeninfo")
]
