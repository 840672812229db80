"""IAM API v1 (iam.googleapis.com): service accounts, their keys and their IAM policies.

https://cloud.google.com/iam/docs/reference/rest — paths, verbs and JSON field names live here,
the rules in ``services.accounts`` and ``services.iam``. Custom methods (``name:verb``) share one
route per resource; ``ACCOUNT_VERBS`` is the table other surfaces (the IAM Credentials API)
extend with their own verbs on the same resource name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokensmith.api.errors import json_response
from tokensmith.api.http import caller, json_body
from tokensmith.errors import InvalidArgument, NotFound

__all__ = ["ACCOUNT_VERBS", "policy_version", "routes", "split_verb"]

Handler = Callable[[Request, str], Awaitable[Response]]


def split_verb(segment: str) -> tuple[str, str]:
    """``"sa@p.iam.gserviceaccount.com:getIamPolicy"`` → (name, verb); emails hold no colon."""
    name, sep, verb = segment.rpartition(":")
    return (name, verb) if sep else (segment, "")


def policy_version(body: dict[str, Any], request: Request) -> int:
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidArgument("options must be a JSON object.")
    raw = options.get(
        "requestedPolicyVersion", request.query_params.get("options.requestedPolicyVersion", 1)
    )
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise InvalidArgument("options.requestedPolicyVersion must be an integer.") from None


def _services(request: Request) -> Any:
    return request.app.state.services


async def create_account(request: Request) -> Response:
    who = caller(request)
    body = await json_body(request)
    project = request.path_params["project"]
    return json_response(_services(request).accounts.create(who.principal, project, body))


async def list_accounts(request: Request) -> Response:
    who = caller(request)
    q = request.query_params
    return json_response(
        _services(request).accounts.list_accounts(
            who.principal, request.path_params["project"], q.get("pageSize"), q.get("pageToken")
        )
    )


# custom verbs on projects/{p}/serviceAccounts/{account}


async def _undelete(request: Request, name: str) -> Response:
    who = caller(request)
    await json_body(request)
    return json_response(_services(request).accounts.undelete(who.principal, name))


async def _disable(request: Request, name: str) -> Response:
    who = caller(request)
    await json_body(request)
    return json_response(_services(request).accounts.set_disabled(who.principal, name, True))


async def _enable(request: Request, name: str) -> Response:
    who = caller(request)
    await json_body(request)
    return json_response(_services(request).accounts.set_disabled(who.principal, name, False))


async def _get_policy(request: Request, name: str) -> Response:
    who = caller(request)
    body = await json_body(request)
    services = _services(request)
    target = services.accounts.resolve(
        who.principal, name, "iam.serviceAccounts.getIamPolicy", method="GetIamPolicy"
    )
    return json_response(
        services.iam.get_policy(who.principal, target, policy_version(body, request))
    )


async def _set_policy(request: Request, name: str) -> Response:
    who = caller(request)
    body = await json_body(request)
    services = _services(request)
    target = services.accounts.resolve(
        who.principal, name, "iam.serviceAccounts.setIamPolicy", method="SetIamPolicy"
    )
    return json_response(
        services.iam.set_policy(who.principal, target, body.get("policy"), body.get("updateMask"))
    )


async def _test_permissions(request: Request, name: str) -> Response:
    who = caller(request)
    body = await json_body(request)
    granted = _services(request).accounts.test_permissions(
        who.principal, name, body.get("permissions", [])
    )
    return json_response({"permissions": granted} if granted else {})


ACCOUNT_VERBS: dict[str, Handler] = {
    "undelete": _undelete,
    "disable": _disable,
    "enable": _enable,
    "getIamPolicy": _get_policy,
    "setIamPolicy": _set_policy,
    "testIamPermissions": _test_permissions,
}


async def account_resource(request: Request) -> Response:
    """Everything under ``projects/{p}/serviceAccounts/{rest}``, dispatched on shape and verb."""
    project = request.path_params["project"]
    parts = request.path_params["rest"].split("/")
    account, verb = split_verb(parts[0])
    name = f"projects/{project}/serviceAccounts/{account}"
    if len(parts) == 1:
        if verb:
            handler = ACCOUNT_VERBS.get(verb)
            if handler is None or request.method != "POST":
                raise NotFound(f"Method {verb!r} not found on a service account.")
            return await handler(request, name)
        return await _account(request, name)
    if parts[1] != "keys" or len(parts) > 3 or verb:
        raise NotFound(f"Not found: {request.url.path}")
    if len(parts) == 2:
        return await _keys(request, name)
    key_id, key_verb = split_verb(parts[2])
    return await _key(request, f"{name}/keys/{key_id}", key_verb)


async def _account(request: Request, name: str) -> Response:
    who = caller(request)
    accounts = _services(request).accounts
    if request.method == "GET":
        return json_response(accounts.get(who.principal, name))
    if request.method == "PATCH":
        return json_response(accounts.patch(who.principal, name, await json_body(request)))
    if request.method == "DELETE":
        return json_response(accounts.delete(who.principal, name))
    raise NotFound(f"Method {request.method} not supported on a service account.")


async def _keys(request: Request, name: str) -> Response:
    who = caller(request)
    accounts = _services(request).accounts
    if request.method == "GET":
        return json_response(
            accounts.list_keys(who.principal, name, request.query_params.getlist("keyTypes"))
        )
    if request.method == "POST":
        return json_response(accounts.create_key(who.principal, name, await json_body(request)))
    raise NotFound(f"Method {request.method} not supported on keys.")


async def _key(request: Request, key_name: str, verb: str) -> Response:
    who = caller(request)
    accounts = _services(request).accounts
    if verb in ("disable", "enable") and request.method == "POST":
        await json_body(request)
        return json_response(accounts.set_key_disabled(who.principal, key_name, verb == "disable"))
    if verb:
        raise NotFound(f"Method {verb!r} not found on a key.")
    if request.method == "GET":
        return json_response(
            accounts.get_key(who.principal, key_name, request.query_params.get("publicKeyType", ""))
        )
    if request.method == "DELETE":
        return json_response(accounts.delete_key(who.principal, key_name))
    raise NotFound(f"Method {request.method} not supported on a key.")


routes = [
    Route("/v1/projects/{project}/serviceAccounts", create_account, methods=["POST"]),
    Route("/v1/projects/{project}/serviceAccounts", list_accounts, methods=["GET"]),
    Route(
        "/v1/projects/{project}/serviceAccounts/{rest:path}",
        account_resource,
        methods=["GET", "POST", "PATCH", "DELETE"],
    ),
]
