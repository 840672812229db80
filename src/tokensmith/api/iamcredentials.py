"""IAM Service Account Credentials API v1 (iamcredentials.googleapis.com).

``POST /v1/projects/-/serviceAccounts/{EMAIL_OR_UNIQUE_ID}:generateAccessToken |
:generateIdToken | :signBlob | :signJwt``, also under a path prefix (gcloud's
``api_endpoint_overrides/iamcredentials`` may carry one) and with ``?alt=json`` (ignored, the
answer is JSON anyway). https://cloud.google.com/iam/docs/reference/credentials/rest
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokensmith.api.auditing import audited
from tokensmith.api.errors import json_response
from tokensmith.api.http import caller, json_body
from tokensmith.api.iam import split_verb
from tokensmith.errors import NotFound

__all__ = ["VERBS", "routes"]

_METHODS = {
    "generateAccessToken": "generate_access_token",
    "generateIdToken": "generate_id_token",
    "signBlob": "sign_blob",
    "signJwt": "sign_jwt",
}


def _verb(method: str) -> Callable[[Request, str], Awaitable[Response]]:
    async def handle(request: Request, name: str) -> Response:
        who = caller(request)
        body = await json_body(request)
        services = request.app.state.services
        handler = getattr(services.credentials, _METHODS[method])
        return json_response(await audited(services, lambda: handler(who, name, body)))

    handle.__name__ = method
    return handle


VERBS = {m: _verb(m) for m in _METHODS}


async def prefixed(request: Request) -> Response:
    """The same methods under a client-configured path prefix (``/prefix/v1/...``)."""
    account, verb = split_verb(request.path_params["account"])
    handler = VERBS.get(verb)
    if handler is None:
        raise NotFound(f"The requested URL {request.url.path} was not found.")
    name = f"projects/{request.path_params['project']}/serviceAccounts/{account}"
    return await handler(request, name)


routes = [
    Route(
        "/{prefix:path}/v1/projects/{project}/serviceAccounts/{account}",
        prefixed,
        methods=["POST"],
    ),
]
