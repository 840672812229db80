"""The ASGI application: every surface's routes, and errors rendered in one place."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokensmith.api import discovery, iam, iamcredentials, oauth2, resourcemanager, tokeninfo
from tokensmith.api.errors import (
    google_error,
    handle_oauth_error,
    handle_tokensmith_error,
    json_response,
    unexpected_error,
)
from tokensmith.errors import NotFound, OAuthError, TokensmithError

__all__ = ["create_app"]


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return json_response(
            {
                "error": {
                    "code": 405,
                    "message": f"Method {request.method} not allowed on {request.url.path}.",
                    "status": "INVALID_ARGUMENT",
                }
            },
            405,
        )
    return google_error(NotFound(f"The requested URL {request.url.path} was not found."))


async def _health(_request: Request) -> Response:
    return json_response({"status": "ok"})


def create_app(services: Any) -> Starlette:
    routes = [
        Route("/healthz", _health, methods=["GET"]),
        *discovery.routes,
        *oauth2.routes,
        *tokeninfo.routes,
        *iam.routes,
        *resourcemanager.routes,
        *iamcredentials.routes,
    ]
    # The IAM Credentials API's methods are custom verbs on the IAM API's resource names.
    iam.ACCOUNT_VERBS.update(iamcredentials.VERBS)
    app = Starlette(
        routes=routes,
        exception_handlers={
            TokensmithError: handle_tokensmith_error,
            OAuthError: handle_oauth_error,
            HTTPException: _http_exception,
            Exception: unexpected_error,
        },
    )
    app.state.services = services
    return app
