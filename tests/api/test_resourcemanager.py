"""Cloud Resource Manager v1 over HTTP: projects.get, the project's IAM policy (with its
last-owner guard) and testIamPermissions, and the org policy for the lifetime constraint.

Tests that leave the project policy and org policies as they found them (refusals, and grants
to a caller of their own) share one server (``shared``); the others take per-test fixtures.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from typing import Any

import pytest

from tests.conftest import Api, service_account_token
from tests.conftest import SharedServer as Server

PROJECT = "tokensmith-local"
PROJECT_PATH = f"/v1/projects/{PROJECT}"
OWNER = "user:owner@tokensmith.local"
CONCURRENT = (
    "There were concurrent policy changes. Please retry the whole read-modify-write with "
    "exponential backoff."
)
LIFETIME = "constraints/iam.allowServiceAccountCredentialLifetimeExtension"


def error_of(response: Any, code: int, status: str) -> dict[str, Any]:
    assert response.status_code == code, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert (error["code"], error["status"]) == (code, status)
    return dict(error)


def get_policy(api: Api, version: int | None = None) -> Any:
    body = {} if version is None else {"options": {"requestedPolicyVersion": version}}
    return api.post(f"{PROJECT_PATH}:getIamPolicy", json=body)


def set_policy(api: Api, policy: dict[str, Any], **extra: Any) -> Any:
    return api.post(f"{PROJECT_PATH}:setIamPolicy", json={"policy": policy, **extra})


_NUMBERS = itertools.count()


@pytest.fixture
def robot(shared: Server) -> tuple[str, Api]:
    """A service account of the project (member string, API client) with no roles."""
    owner, http, clock = shared.owner, shared.http, shared.clock
    account_id = f"rm-robot-{next(_NUMBERS)}"
    account = owner.post(f"{PROJECT_PATH}/serviceAccounts", json={"accountId": account_id}).json()
    key = owner.post(f"/v1/projects/-/serviceAccounts/{account['email']}/keys", json={}).json()
    key_file = json.loads(base64.b64decode(key["privateKeyData"]))
    return f"serviceAccount:{account['email']}", Api(
        http, service_account_token(http, key_file, clock)
    )


def grant(owner: Api, role: str, member: str, condition: dict[str, str] | None = None) -> Any:
    policy = get_policy(owner, 3).json()
    binding: dict[str, Any] = {"role": role, "members": [member]}
    if condition is not None:
        binding["condition"] = condition
        policy["version"] = 3
    policy["bindings"].append(binding)
    response = set_policy(owner, policy)
    assert response.status_code == 200, response.text
    return response.json()


# projects.get ---------------------------------------------------------------------------------


def test_get_project(shared: Server) -> None:
    """projects.get returns the project's id, 12-digit number, state and creation time."""
    owner, services = shared.owner, shared.services
    response = owner.get(PROJECT_PATH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["projectId"] == PROJECT
    assert re.fullmatch(r"[1-9][0-9]{11}", body["projectNumber"])
    assert body["projectNumber"] == services.project.project_number
    assert body["lifecycleState"] == "ACTIVE"
    assert body["name"] == PROJECT
    assert body["createTime"].startswith("2027-01-15T08:00:00")
    assert body["createTime"].endswith("Z")


def test_get_unknown_project_is_denied(shared: Server) -> None:
    """A project that does not exist is 403 with Google's generic text, never 404."""
    owner = shared.owner
    error = error_of(owner.get("/v1/projects/no-such-project"), 403, "PERMISSION_DENIED")
    assert error["message"] == "The caller does not have permission"
    assert error["details"][0]["metadata"] == {"permission": "resourcemanager.projects.get"}


def test_get_project_needs_permission(shared: Server, robot: tuple[str, Api]) -> None:
    """Without a role the caller is denied; roles/browser allows projects.get."""
    owner = shared.owner
    member, api = robot
    denied = api.get(PROJECT_PATH)
    error_of(denied, 403, "PERMISSION_DENIED")
    assert denied.json() == api.get("/v1/projects/no-such-project").json()
    grant(owner, "roles/browser", member)
    assert api.get(PROJECT_PATH).status_code == 200


def test_unauthenticated_project_get(anonymous: Api) -> None:
    """projects.get without a token is 401."""
    error_of(anonymous.get(PROJECT_PATH), 401, "UNAUTHENTICATED")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"{PROJECT_PATH}:undelete"),
        ("POST", PROJECT_PATH),
        ("GET", f"{PROJECT_PATH}:getIamPolicy"),
    ],
)
def test_unknown_project_methods_are_not_found(shared: Server, method: str, path: str) -> None:
    """Unknown verbs, POST on the project and GET on a verb are 404 in Google's shape."""
    owner = shared.owner
    error_of(owner.request(method, path, json={}), 404, "NOT_FOUND")


# the project's IAM policy ---------------------------------------------------------------------


def test_bootstrap_policy_makes_the_owner_owner(owner: Api) -> None:
    """The bootstrapped project policy grants roles/owner to the owner user."""
    response = get_policy(owner)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 1
    assert body["etag"]
    assert body["bindings"] == [{"role": "roles/owner", "members": [OWNER]}]


def test_set_project_policy_round_trips(shared: Server) -> None:
    """A read-modify-write of the project policy is stored and read back."""
    owner = shared.owner
    stored = grant(owner, "roles/viewer", "user:auditor@example.com")
    assert {"role": "roles/viewer", "members": ["user:auditor@example.com"]} in stored["bindings"]
    assert get_policy(owner).json() == stored


def test_stale_project_etag_is_aborted(shared: Server) -> None:
    """A stale etag on the project policy is 409 ABORTED with Google's text."""
    owner = shared.owner
    stale = get_policy(owner).json()
    current = grant(owner, "roles/viewer", "user:auditor@example.com")
    stale["bindings"].append({"role": "roles/editor", "members": ["user:x@example.com"]})
    assert error_of(set_policy(owner, stale), 409, "ABORTED")["message"] == CONCURRENT
    assert get_policy(owner).json() == current


@pytest.mark.parametrize(
    "bindings",
    [
        [],
        [{"role": "roles/editor", "members": [OWNER]}],
        [{"role": "roles/owner", "members": ["group:admins@example.com"]}],
        [{"role": "roles/owner", "members": ["domain:example.com"]}],
    ],
)
def test_project_cannot_lose_its_last_owner(shared: Server, bindings: list[Any]) -> None:
    """A project policy without an unconditional user/serviceAccount owner is refused."""
    owner = shared.owner
    before = get_policy(owner).json()
    error = error_of(set_policy(owner, {"bindings": bindings}), 400, "FAILED_PRECONDITION")
    assert "roles/owner" in error["message"]
    assert get_policy(owner).json() == before


def test_conditional_owner_does_not_count(shared: Server) -> None:
    """An owner binding that carries a condition does not keep the project administrable."""
    owner = shared.owner
    policy = {
        "version": 3,
        "bindings": [
            {
                "role": "roles/owner",
                "members": [OWNER],
                "condition": {"title": "t", "expression": "request.time.getHours() < 12"},
            }
        ],
    }
    error_of(set_policy(owner, policy), 400, "FAILED_PRECONDITION")


def test_ownership_can_move_to_another_principal(owner: Api) -> None:
    """Replacing the owner by a service account owner is allowed; the old owner then loses it."""
    new_owner = f"serviceAccount:admin@{PROJECT}.iam.gserviceaccount.com"
    response = set_policy(owner, {"bindings": [{"role": "roles/owner", "members": [new_owner]}]})
    assert response.status_code == 200, response.text
    error_of(get_policy(owner), 403, "PERMISSION_DENIED")


def test_project_policy_with_conditions(owner: Api) -> None:
    """A conditional project binding needs version 3 and reads back renamed at version 1."""
    condition = {"title": "mornings", "expression": "request.time.getHours() < 12"}
    stored = grant(owner, "roles/viewer", "user:early@example.com", condition)
    assert stored["version"] == 3
    downgraded = get_policy(owner, 1).json()
    roles = [b["role"] for b in downgraded["bindings"]]
    assert roles[0] == "roles/owner"
    assert re.fullmatch(r"roles/viewer_withcond_[0-9a-f]+", roles[1])
    assert all("condition" not in b for b in downgraded["bindings"])


def test_project_policy_needs_permission(robot: tuple[str, Api]) -> None:
    """get/setIamPolicy on the project without a role is 403 naming the permission."""
    _, api = robot
    error = error_of(get_policy(api), 403, "PERMISSION_DENIED")
    assert error["message"] == "The caller does not have permission"
    assert error["details"][0]["metadata"] == {
        "permission": "resourcemanager.projects.getIamPolicy"
    }
    error = error_of(set_policy(api, {}), 403, "PERMISSION_DENIED")
    assert error["details"][0]["metadata"] == {
        "permission": "resourcemanager.projects.setIamPolicy"
    }


def test_project_iam_admin_can_grant(shared: Server, robot: tuple[str, Api]) -> None:
    """roles/resourcemanager.projectIamAdmin lets its holder change the project policy."""
    owner = shared.owner
    member, api = robot
    grant(owner, "roles/resourcemanager.projectIamAdmin", member)
    policy = get_policy(api).json()
    policy["bindings"].append({"role": "roles/viewer", "members": ["user:new@example.com"]})
    assert set_policy(api, policy).status_code == 200


def test_project_policy_rejects_bad_input(shared: Server) -> None:
    """Unknown roles and bad members are 400 on the project policy too."""
    owner = shared.owner
    before = get_policy(owner).json()
    policy = dict(before)
    policy["bindings"] = [*before["bindings"], {"role": "roles/nope", "members": [OWNER]}]
    error_of(set_policy(owner, policy), 400, "INVALID_ARGUMENT")
    policy["bindings"] = [*before["bindings"], {"role": "roles/viewer", "members": ["bob"]}]
    error_of(set_policy(owner, policy), 400, "INVALID_ARGUMENT")
    assert get_policy(owner).json() == before


# testIamPermissions on the project ------------------------------------------------------------


def test_project_test_permissions(shared: Server) -> None:
    """The owner holds project administration but not token minting."""
    owner = shared.owner
    response = owner.post(
        f"{PROJECT_PATH}:testIamPermissions",
        json={
            "permissions": [
                "resourcemanager.projects.get",
                "iam.serviceAccounts.create",
                "iam.serviceAccounts.getAccessToken",
            ]
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "permissions": ["resourcemanager.projects.get", "iam.serviceAccounts.create"]
    }


def test_project_test_permissions_without_roles_is_empty(robot: tuple[str, Api]) -> None:
    """A caller without roles gets ``{}`` (testIamPermissions needs no permission)."""
    _, api = robot
    response = api.post(
        f"{PROJECT_PATH}:testIamPermissions",
        json={"permissions": ["resourcemanager.projects.get"]},
    )
    assert (response.status_code, response.json()) == (200, {})


@pytest.mark.parametrize(
    ("permissions", "needle"),
    [
        (["resourcemanager.projects.*"], "wildcard"),
        (["compute.instances.list"], "not valid for this resource"),
        ([None], "list"),
    ],
)
def test_project_test_permissions_rejects_bad_input(
    shared: Server, permissions: list[Any], needle: str
) -> None:
    """Wildcards and permissions that do not apply to a project are 400."""
    owner = shared.owner
    response = owner.post(f"{PROJECT_PATH}:testIamPermissions", json={"permissions": permissions})
    assert needle in error_of(response, 400, "INVALID_ARGUMENT")["message"]


# org policy -----------------------------------------------------------------------------------


def _org(api: Api, verb: str, body: dict[str, Any]) -> Any:
    return api.post(f"{PROJECT_PATH}:{verb}", json=body)


def test_org_policy_defaults_to_unset(owner: Api) -> None:
    """Before any set, getOrgPolicy and getEffectiveOrgPolicy name only the constraint."""
    for verb in ("getOrgPolicy", "getEffectiveOrgPolicy"):
        response = _org(owner, verb, {"constraint": LIFETIME})
        assert response.status_code == 200, response.text
        assert response.json() == {"constraint": LIFETIME}


def test_org_policy_set_get_and_clear(owner: Api) -> None:
    """setOrgPolicy stores a list policy with an etag; clearOrgPolicy removes it."""
    email = f"long-lived@{PROJECT}.iam.gserviceaccount.com"
    response = _org(
        owner,
        "setOrgPolicy",
        {"policy": {"constraint": LIFETIME, "listPolicy": {"allowedValues": [email]}}},
    )
    assert response.status_code == 200, response.text
    stored = response.json()
    assert stored["constraint"] == LIFETIME
    assert stored["listPolicy"] == {"allowedValues": [email]}
    assert stored["etag"]
    assert _org(owner, "getOrgPolicy", {"constraint": LIFETIME}).json() == stored
    effective = _org(owner, "getEffectiveOrgPolicy", {"constraint": LIFETIME}).json()
    assert effective["listPolicy"] == {"allowedValues": [email]}
    assert _org(owner, "clearOrgPolicy", {"constraint": LIFETIME}).json() == {}
    assert _org(owner, "getOrgPolicy", {"constraint": LIFETIME}).json() == {"constraint": LIFETIME}


def test_org_policy_stale_etag_is_aborted(owner: Api) -> None:
    """setOrgPolicy with an etag that no longer matches is 409 ABORTED."""
    policy = {"constraint": LIFETIME, "listPolicy": {"allValues": "ALLOW"}}
    first = _org(owner, "setOrgPolicy", {"policy": policy}).json()
    _org(owner, "setOrgPolicy", {"policy": {**policy, "etag": first["etag"]}})
    stale = _org(owner, "setOrgPolicy", {"policy": {**policy, "etag": first["etag"]}})
    error_of(stale, 409, "ABORTED")


@pytest.mark.parametrize(
    "policy",
    [
        {"constraint": "constraints/compute.vmExternalIpAccess", "listPolicy": {}},
        {"constraint": LIFETIME, "booleanPolicy": {"enforced": True}},
        {"constraint": LIFETIME, "listPolicy": {"allowedValues": ["not an email"]}},
        {"constraint": LIFETIME, "listPolicy": {"allValues": "SOMETIMES"}},
        {"constraint": LIFETIME, "listPolicy": {"allowed": []}},
        {"listPolicy": {}},
    ],
)
def test_org_policy_rejects_bad_policies(shared: Server, policy: dict[str, Any]) -> None:
    """Unsupported constraints and malformed list policies are 400, and nothing is stored."""
    owner = shared.owner
    error_of(_org(owner, "setOrgPolicy", {"policy": policy}), 400, "INVALID_ARGUMENT")
    assert _org(owner, "getOrgPolicy", {"constraint": LIFETIME}).json() == {"constraint": LIFETIME}


def test_org_policy_needs_permission(robot: tuple[str, Api]) -> None:
    """Org policy methods without orgpolicy permissions are 403."""
    _, api = robot
    error_of(_org(api, "getOrgPolicy", {"constraint": LIFETIME}), 403, "PERMISSION_DENIED")
    body = {"policy": {"constraint": LIFETIME, "listPolicy": {"allValues": "ALLOW"}}}
    error_of(_org(api, "setOrgPolicy", body), 403, "PERMISSION_DENIED")
