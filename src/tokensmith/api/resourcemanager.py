"""Cloud Resource Manager v1 (cloudresourcemanager.googleapis.com), the project subset:
``projects.get``, the project's IAM policy, and its org policies.

https://cloud.google.com/resource-manager/reference/rest/v1/projects
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokensmith.api.errors import json_response
from tokensmith.api.http import caller, json_body
from tokensmith.api.iam import policy_version, split_verb
from tokensmith.clock import to_datetime
from tokensmith.errors import NotFound
from tokensmith.services.iam import Target

__all__ = ["routes"]


def _project_json(record: Any) -> dict[str, Any]:
    return {
        "projectNumber": record.project_number,
        "projectId": record.project_id,
        "lifecycleState": "ACTIVE",
        "name": record.display_name or record.project_id,
        "createTime": to_datetime(record.created_at).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


async def project_resource(request: Request) -> Response:
    who = caller(request)
    services = request.app.state.services
    project_id, verb = split_verb(request.path_params["project"])
    if not verb:
        if request.method != "GET":
            raise NotFound(f"Method {request.method} not supported on a project.")
        record = services.accounts.project(
            who.principal, project_id, "resourcemanager.projects.get"
        )
        services.iam.check(
            who.principal, "resourcemanager.projects.get", Target(record), method="GetProject"
        )
        return json_response(_project_json(record))
    if request.method != "POST":
        raise NotFound(f"Method {verb!r} must be called with POST.")
    body = await json_body(request)
    orgpolicy = services.orgpolicy
    if verb in ("getOrgPolicy", "getEffectiveOrgPolicy", "setOrgPolicy", "clearOrgPolicy"):
        method = {
            "getOrgPolicy": orgpolicy.get,
            "getEffectiveOrgPolicy": orgpolicy.get_effective,
            "setOrgPolicy": orgpolicy.set,
            "clearOrgPolicy": orgpolicy.clear,
        }[verb]
        return json_response(method(who.principal, project_id, body))
    permission = {
        "getIamPolicy": "resourcemanager.projects.getIamPolicy",
        "setIamPolicy": "resourcemanager.projects.setIamPolicy",
        "testIamPermissions": "resourcemanager.projects.get",
    }.get(verb)
    if permission is None:
        raise NotFound(f"Method {verb!r} not found on a project.")
    target = Target(services.accounts.project(who.principal, project_id, permission))
    if verb == "getIamPolicy":
        return json_response(
            services.iam.get_policy(who.principal, target, policy_version(body, request))
        )
    if verb == "setIamPolicy":
        return json_response(
            services.iam.set_policy(
                who.principal, target, body.get("policy"), body.get("updateMask")
            )
        )
    granted = services.iam.test_permissions(who.principal, target, body.get("permissions", []))
    return json_response({"permissions": granted} if granted else {})


routes = [Route("/v1/projects/{project}", project_resource, methods=["GET", "POST"])]
