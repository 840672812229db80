"""IAM policies on service accounts over HTTP (getIamPolicy, setIamPolicy, testIamPermissions),
and their enforcement: who may call what, conditions, scopes, and the audit trail of denials.

Most tests share one server (``shared``) and work on a target account and a caller (``robot``)
of their own; a test that moves the clock takes the per-test fixtures.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import Api, owner_token, service_account_token
from tests.conftest import SharedServer as Server
from tokensmith.clock import FixedClock, to_datetime

PROJECT = "tokensmith-local"
ACCOUNTS = f"/v1/projects/{PROJECT}/serviceAccounts"
CONCURRENT = (
    "There were concurrent policy changes. Please retry the whole read-modify-write with "
    "exponential backoff."
)
IAM_SCOPE = "https://www.googleapis.com/auth/iam"


def error_of(response: Any, code: int, status: str) -> dict[str, Any]:
    assert response.status_code == code, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert (error["code"], error["status"]) == (code, status)
    return dict(error)


def create(owner: Api, account_id: str) -> dict[str, Any]:
    response = owner.post(ACCOUNTS, json={"accountId": account_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


def account_path(account: dict[str, Any]) -> str:
    return f"{ACCOUNTS}/{account['email']}"


def get_policy(api: Api, resource: str, version: int | None = None) -> Any:
    body = {} if version is None else {"options": {"requestedPolicyVersion": version}}
    return api.post(f"{resource}:getIamPolicy", json=body)


def set_policy(api: Api, resource: str, policy: dict[str, Any], **extra: Any) -> Any:
    return api.post(f"{resource}:setIamPolicy", json={"policy": policy, **extra})


def add_binding(owner: Api, resource: str, binding: dict[str, Any]) -> dict[str, Any]:
    """Read-modify-write one binding into a resource's policy, as gcloud does."""
    policy = get_policy(owner, resource, 3).json()
    policy["bindings"] = [*policy.get("bindings", []), binding]
    if "condition" in binding:
        policy["version"] = 3
    response = set_policy(owner, resource, policy)
    assert response.status_code == 200, response.text
    return dict(response.json())


class Robot:
    """A service account that calls the API with a token from its own key file."""

    def __init__(self, owner: Api, http: TestClient, clock: FixedClock, account_id: str) -> None:
        self.account = create(owner, account_id)
        self.email: str = self.account["email"]
        self.member = f"serviceAccount:{self.email}"
        key = owner.post(f"{account_path(self.account)}/keys", json={})
        assert key.status_code == 200, key.text
        self.key_file = json.loads(base64.b64decode(key.json()["privateKeyData"]))
        self.api = Api(http, service_account_token(http, self.key_file, clock))


_NUMBERS = itertools.count()


@pytest.fixture
def robot(shared: Server) -> Robot:
    """A caller of this test's own, without any role."""
    return Robot(shared.owner, shared.http, shared.clock, f"robot-{next(_NUMBERS)}")


@pytest.fixture
def target(shared: Server) -> dict[str, Any]:
    """An account of this test's own, without a policy."""
    return create(shared.owner, f"target-{next(_NUMBERS)}")


def sibling(owner: Api, account: dict[str, Any]) -> dict[str, Any]:
    """A second account next to ``account``, for tests that need two."""
    return create(owner, account["email"].split("@")[0] + "-b")


# getIamPolicy ---------------------------------------------------------------------------------


def test_empty_policy_has_well_known_etag(shared: Server, target: dict[str, Any]) -> None:
    """A service account without a policy reads as version 1 with etag ACAB and no bindings."""
    owner = shared.owner
    response = get_policy(owner, account_path(target))
    assert response.status_code == 200, response.text
    assert response.json() == {"version": 1, "etag": "ACAB"}


def test_get_policy_by_unique_id_and_any_project(shared: Server, target: dict[str, Any]) -> None:
    """The policy is the same whichever name form addresses the account."""
    owner = shared.owner
    add_binding(
        owner, account_path(target), {"role": "roles/viewer", "members": ["user:a@example.com"]}
    )
    expected = get_policy(owner, account_path(target)).json()
    for name in (target["uniqueId"], target["email"]):
        assert get_policy(owner, f"/v1/projects/-/serviceAccounts/{name}").json() == expected


@pytest.mark.parametrize("version", [2, 4, -1])
def test_get_policy_with_invalid_version(
    shared: Server, target: dict[str, Any], version: int
) -> None:
    """requestedPolicyVersion other than 0, 1 or 3 is 400."""
    owner = shared.owner
    error = error_of(get_policy(owner, account_path(target), version), 400, "INVALID_ARGUMENT")
    assert "requestedPolicyVersion" in error["message"]


def test_get_policy_version_from_query_string(shared: Server, target: dict[str, Any]) -> None:
    """options.requestedPolicyVersion is also read from the query string."""
    owner = shared.owner
    _conditional(owner, target)
    response = owner.post(
        f"{account_path(target)}:getIamPolicy", params={"options.requestedPolicyVersion": "3"}
    )
    assert response.json()["version"] == 3
    bad = owner.post(
        f"{account_path(target)}:getIamPolicy", params={"options.requestedPolicyVersion": "x"}
    )
    error_of(bad, 400, "INVALID_ARGUMENT")


# setIamPolicy ---------------------------------------------------------------------------------


def test_set_policy_round_trips(shared: Server, target: dict[str, Any]) -> None:
    """setIamPolicy returns the stored policy with a new etag, and getIamPolicy agrees."""
    owner = shared.owner
    policy = {
        "bindings": [
            {"role": "roles/iam.serviceAccountUser", "members": ["user:dev@example.com"]},
            {
                "role": "roles/iam.serviceAccountTokenCreator",
                "members": [
                    "serviceAccount:ci@other-project.iam.gserviceaccount.com",
                    "group:g@x.io",
                ],
            },
        ]
    }
    response = set_policy(owner, account_path(target), policy)
    assert response.status_code == 200, response.text
    stored = response.json()
    assert stored["version"] == 1
    assert stored["bindings"] == policy["bindings"]
    assert stored["etag"] not in ("", "ACAB")
    assert get_policy(owner, account_path(target)).json() == stored


def test_set_policy_with_current_etag_succeeds(shared: Server, target: dict[str, Any]) -> None:
    """A read-modify-write carrying the etag just read succeeds and moves the etag."""
    owner = shared.owner
    first = add_binding(
        owner, account_path(target), {"role": "roles/viewer", "members": ["user:a@example.com"]}
    )
    first["bindings"].append({"role": "roles/editor", "members": ["user:b@example.com"]})
    response = set_policy(owner, account_path(target), first)
    assert response.status_code == 200, response.text
    assert response.json()["etag"] != first["etag"]


def test_set_policy_with_stale_etag_is_aborted(shared: Server, target: dict[str, Any]) -> None:
    """A stale etag is 409 ABORTED with Google's exact text, and the policy is unchanged."""
    owner = shared.owner
    path = account_path(target)
    stale = get_policy(owner, path).json()
    current = add_binding(owner, path, {"role": "roles/viewer", "members": ["user:a@example.com"]})
    stale["bindings"] = [{"role": "roles/editor", "members": ["user:mallory@example.com"]}]
    error = error_of(set_policy(owner, path, stale), 409, "ABORTED")
    assert error["message"] == CONCURRENT
    assert get_policy(owner, path).json() == current


def test_set_policy_with_made_up_etag_is_aborted(shared: Server, target: dict[str, Any]) -> None:
    """An etag that never existed is ABORTED too."""
    owner = shared.owner
    policy = {"etag": "BwWWja0YfJA=", "bindings": []}
    assert error_of(set_policy(owner, account_path(target), policy), 409, "ABORTED")["message"] == (
        CONCURRENT
    )


def test_set_policy_without_etag_overwrites(shared: Server, target: dict[str, Any]) -> None:
    """An omitted etag is a blind overwrite."""
    owner = shared.owner
    path = account_path(target)
    add_binding(owner, path, {"role": "roles/viewer", "members": ["user:a@example.com"]})
    replacement = [{"role": "roles/editor", "members": ["user:b@example.com"]}]
    response = set_policy(owner, path, {"bindings": replacement})
    assert response.status_code == 200, response.text
    assert get_policy(owner, path).json()["bindings"] == replacement


def test_set_policy_merges_and_drops_bindings(shared: Server, target: dict[str, Any]) -> None:
    """Bindings with the same role are merged (no duplicate members); empty ones are dropped."""
    owner = shared.owner
    response = set_policy(
        owner,
        account_path(target),
        {
            "bindings": [
                {"role": "roles/viewer", "members": ["user:a@example.com"]},
                {"role": "roles/editor", "members": []},
                {"role": "roles/viewer", "members": ["user:b@example.com", "user:a@example.com"]},
            ]
        },
    )
    assert response.json()["bindings"] == [
        {"role": "roles/viewer", "members": ["user:a@example.com", "user:b@example.com"]}
    ]


def test_set_empty_policy_clears_bindings(shared: Server, target: dict[str, Any]) -> None:
    """Setting a policy without bindings removes every binding."""
    owner = shared.owner
    path = account_path(target)
    add_binding(owner, path, {"role": "roles/viewer", "members": ["user:a@example.com"]})
    response = set_policy(owner, path, {})
    assert response.status_code == 200, response.text
    assert "bindings" not in response.json()


CONDITION = {
    "title": "until launch",
    "description": "temporary",
    "expression": 'request.time < timestamp("2030-01-01T00:00:00Z")',
}


def _conditional(owner: Api, target: dict[str, Any]) -> dict[str, Any]:
    response = set_policy(
        owner,
        account_path(target),
        {
            "version": 3,
            "bindings": [
                {"role": "roles/viewer", "members": ["user:a@example.com"]},
                {
                    "role": "roles/iam.serviceAccountUser",
                    "members": ["user:b@example.com"],
                    "condition": CONDITION,
                },
            ],
        },
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_conditional_policy_reads_back_at_version_3(shared: Server, target: dict[str, Any]) -> None:
    """A version 3 policy with a condition is stored and read back with its condition."""
    owner = shared.owner
    stored = _conditional(owner, target)
    assert stored["version"] == 3
    assert stored["bindings"][1]["condition"] == CONDITION
    assert get_policy(owner, account_path(target), 3).json() == stored


@pytest.mark.parametrize("version", [None, 0, 1])
def test_conditional_policy_read_at_version_1_renames_roles(
    shared: Server, target: dict[str, Any], version: int | None
) -> None:
    """Below version 3, conditional bindings lose their condition and get a _withcond_ role."""
    owner = shared.owner
    stored = _conditional(owner, target)
    response = get_policy(owner, account_path(target), version)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 1
    assert body["etag"] == stored["etag"]
    assert body["bindings"][0] == {"role": "roles/viewer", "members": ["user:a@example.com"]}
    renamed = body["bindings"][1]
    assert set(renamed) == {"role", "members"}
    assert re.fullmatch(r"roles/iam\.serviceAccountUser_withcond_[0-9a-f]+", renamed["role"])
    assert renamed["members"] == ["user:b@example.com"]


def test_downgraded_policy_cannot_be_written_back(shared: Server, target: dict[str, Any]) -> None:
    """Writing back a version-1 read of a conditional policy fails: _withcond_ roles don't exist."""
    owner = shared.owner
    _conditional(owner, target)
    downgraded = get_policy(owner, account_path(target), 1).json()
    error = error_of(set_policy(owner, account_path(target), downgraded), 400, "INVALID_ARGUMENT")
    assert "_withcond_" in error["message"]
    assert get_policy(owner, account_path(target), 3).json()["version"] == 3


@pytest.mark.parametrize("version", [None, 1, 0])
def test_condition_without_version_3_is_invalid(
    shared: Server, target: dict[str, Any], version: int | None
) -> None:
    """A conditional binding in a policy that is not version 3 is 400."""
    owner = shared.owner
    policy: dict[str, Any] = {
        "bindings": [{"role": "roles/viewer", "members": ["user:a@x.io"], "condition": CONDITION}]
    }
    if version is not None:
        policy["version"] = version
    error = error_of(set_policy(owner, account_path(target), policy), 400, "INVALID_ARGUMENT")
    assert "version" in error["message"]
    assert get_policy(owner, account_path(target)).json() == {"version": 1, "etag": "ACAB"}


@pytest.mark.parametrize(
    "expression",
    [
        'request.auth.claims.email == "x"',  # attribute outside the supported subset
        "resource.name.startsWith(",  # syntax error
        "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', [])",
        "1 + 1",  # not a boolean
        "",
    ],
)
def test_unsupported_condition_is_rejected(
    shared: Server, target: dict[str, Any], expression: str
) -> None:
    """A condition the server cannot evaluate is 400, never stored and ignored."""
    owner = shared.owner
    policy = {
        "version": 3,
        "bindings": [
            {
                "role": "roles/viewer",
                "members": ["user:a@x.io"],
                "condition": {"title": "t", "expression": expression},
            }
        ],
    }
    error_of(set_policy(owner, account_path(target), policy), 400, "INVALID_ARGUMENT")
    assert get_policy(owner, account_path(target), 3).json() == {"version": 1, "etag": "ACAB"}


@pytest.mark.parametrize("role", ["roles/nope", "roles/owner_withcond_abc", "projects/p/roles/x"])
def test_unknown_role_is_invalid(shared: Server, target: dict[str, Any], role: str) -> None:
    """A role outside the catalogue is 400 with Google's text."""
    owner = shared.owner
    policy = {"bindings": [{"role": role, "members": ["user:a@example.com"]}]}
    error = error_of(set_policy(owner, account_path(target), policy), 400, "INVALID_ARGUMENT")
    assert error["message"] == f"Role ({role}) does not exist in the resource's hierarchy."


@pytest.mark.parametrize(
    "member",
    [
        "alice@example.com",  # no type prefix
        "user:",  # no email
        "user:not-an-email",
        "serviceAccount:a@b",
        "robot:a@example.com",
        "domain:",
        "deleted:user:a@example.com",  # deleted members need ?uid=
        "allusers",
    ],
)
def test_bad_member_is_invalid(shared: Server, target: dict[str, Any], member: str) -> None:
    """A member that is not a valid principal is 400."""
    owner = shared.owner
    policy = {"bindings": [{"role": "roles/viewer", "members": [member]}]}
    error = error_of(set_policy(owner, account_path(target), policy), 400, "INVALID_ARGUMENT")
    assert "member" in error["message"].lower()


@pytest.mark.parametrize(
    "member",
    [
        "allUsers",
        "allAuthenticatedUsers",
        "group:admins@example.com",
        "domain:example.com",
        "deleted:user:gone@example.com?uid=123456789",
        "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/subject/s",
        "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/*",
        "serviceAccount:tokensmith-local.svc.id.goog[default/builder]",
    ],
)
def test_google_member_forms_are_accepted(
    shared: Server, target: dict[str, Any], member: str
) -> None:
    """Every member form Google documents for allow policies is accepted and stored as sent."""
    owner = shared.owner
    policy = {"bindings": [{"role": "roles/iam.workloadIdentityUser", "members": [member]}]}
    response = set_policy(owner, account_path(target), policy)
    assert response.status_code == 200, response.text
    assert response.json()["bindings"][0]["members"] == [member]


@pytest.mark.parametrize(
    ("policy", "needle"),
    [
        ({"bindings": {"role": "roles/viewer"}}, "bindings"),
        ({"bindings": [{"members": ["user:a@x.io"]}]}, "role"),
        ({"bindings": [{"role": "roles/viewer", "members": "user:a@x.io"}]}, "members"),
        ({"bindings": [{"role": "roles/viewer", "members": ["user:a@x.io"], "x": 1}]}, '"x"'),
        ({"version": 2}, "version"),
        ({"version": "3"}, "version"),
        ({"etag": 5}, "etag"),
        ({"rules": []}, '"rules"'),
    ],
)
def test_malformed_policy_is_invalid(
    shared: Server, target: dict[str, Any], policy: dict[str, Any], needle: str
) -> None:
    """A policy of the wrong shape is 400 naming what is wrong."""
    owner = shared.owner
    error = error_of(set_policy(owner, account_path(target), policy), 400, "INVALID_ARGUMENT")
    assert needle in error["message"]


def test_set_policy_without_policy_is_invalid(shared: Server, target: dict[str, Any]) -> None:
    """setIamPolicy without a policy object is 400."""
    owner = shared.owner
    response = owner.post(f"{account_path(target)}:setIamPolicy", json={})
    assert "policy" in error_of(response, 400, "INVALID_ARGUMENT")["message"]


def test_update_mask_audit_configs_keeps_bindings(shared: Server, target: dict[str, Any]) -> None:
    """updateMask "auditConfigs" changes the audit configs and leaves the bindings alone."""
    owner = shared.owner
    path = account_path(target)
    before = add_binding(owner, path, {"role": "roles/viewer", "members": ["user:a@x.io"]})
    audit = [{"service": "allServices", "auditLogConfigs": [{"logType": "DATA_READ"}]}]
    response = set_policy(
        owner, path, {"auditConfigs": audit, "bindings": []}, updateMask="auditConfigs"
    )
    assert response.status_code == 200, response.text
    assert response.json()["bindings"] == before["bindings"]
    assert response.json()["auditConfigs"] == audit


def test_default_update_mask_keeps_audit_configs(shared: Server, target: dict[str, Any]) -> None:
    """Without updateMask (bindings, etag) the stored auditConfigs survive a bindings change."""
    owner = shared.owner
    path = account_path(target)
    audit = [{"service": "allServices", "auditLogConfigs": [{"logType": "ADMIN_READ"}]}]
    set_policy(owner, path, {"auditConfigs": audit}, updateMask="auditConfigs")
    response = set_policy(
        owner, path, {"bindings": [{"role": "roles/viewer", "members": ["user:a@x.io"]}]}
    )
    assert response.json()["auditConfigs"] == audit


@pytest.mark.parametrize("mask", ["bindings,members", "policy.bindings", 7])
def test_bad_update_mask_is_invalid(shared: Server, target: dict[str, Any], mask: object) -> None:
    """An updateMask naming fields outside the policy is 400."""
    owner = shared.owner
    response = set_policy(owner, account_path(target), {}, updateMask=mask)
    assert "updateMask" in error_of(response, 400, "INVALID_ARGUMENT")["message"]


def test_set_policy_is_audited(shared: Server, target: dict[str, Any]) -> None:
    """A policy change is recorded with the caller, the resource and the new etag."""
    owner, services = shared.owner, shared.services
    stored = add_binding(
        owner, account_path(target), {"role": "roles/viewer", "members": ["user:a@x.io"]}
    )
    records = [
        r
        for r in services.store.query_audit(
            resource=f"projects/{PROJECT}/serviceAccounts/{target['email']}"
        )
        if r.method == "SetIamPolicy"
    ]
    assert len(records) == 1
    assert records[0].principal == "user:owner@tokensmith.local"
    assert records[0].detail["etag"] == stored["etag"]


# testIamPermissions ---------------------------------------------------------------------------


def test_test_permissions_returns_subset_held(
    shared: Server, robot: Robot, target: dict[str, Any]
) -> None:
    """testIamPermissions answers exactly the asked permissions the caller holds."""
    owner = shared.owner
    add_binding(
        owner,
        account_path(target),
        {"role": "roles/iam.serviceAccountTokenCreator", "members": [robot.member]},
    )
    asked = [
        "iam.serviceAccounts.getAccessToken",
        "iam.serviceAccounts.delete",
        "iam.serviceAccounts.signJwt",
    ]
    response = robot.api.post(
        f"{account_path(target)}:testIamPermissions", json={"permissions": asked}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "permissions": ["iam.serviceAccounts.getAccessToken", "iam.serviceAccounts.signJwt"]
    }


def test_test_permissions_needs_no_permission_of_its_own(
    shared: Server, robot: Robot, target: dict[str, Any]
) -> None:
    """A caller holding only getOpenIdToken (not get) can still test its permissions."""
    owner = shared.owner
    add_binding(
        owner,
        account_path(target),
        {"role": "roles/iam.serviceAccountOpenIdTokenCreator", "members": [robot.member]},
    )
    response = robot.api.post(
        f"{account_path(target)}:testIamPermissions",
        json={"permissions": ["iam.serviceAccounts.getOpenIdToken", "iam.serviceAccounts.get"]},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"permissions": ["iam.serviceAccounts.getOpenIdToken"]}


def test_test_permissions_holding_none_is_empty(robot: Robot, target: dict[str, Any]) -> None:
    """A caller without any binding gets ``{}`` — and the same for a missing account."""
    body = {"permissions": ["iam.serviceAccounts.get"]}
    held = robot.api.post(f"{account_path(target)}:testIamPermissions", json=body)
    assert (held.status_code, held.json()) == (200, {})
    missing = robot.api.post(
        f"{ACCOUNTS}/ghost-account@{PROJECT}.iam.gserviceaccount.com:testIamPermissions",
        json=body,
    )
    assert (missing.status_code, missing.json()) == (200, {})


def test_test_permissions_on_missing_account_for_lister_is_not_found(shared: Server) -> None:
    """A caller who can list the project learns that the account is missing (404)."""
    owner = shared.owner
    response = owner.post(
        f"{ACCOUNTS}/ghost-account@{PROJECT}.iam.gserviceaccount.com:testIamPermissions",
        json={"permissions": ["iam.serviceAccounts.get"]},
    )
    error_of(response, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("permissions", "needle"),
    [
        (["iam.serviceAccounts.*"], "wildcard"),
        (["*"], "wildcard"),
        (["resourcemanager.projects.get"], "not valid for this resource"),
        (["iam.serviceAccounts.create"], "not valid for this resource"),
        (["storage.objects.get"], "not valid for this resource"),
        ("iam.serviceAccounts.get", "list"),
        ([1], "list"),
    ],
)
def test_test_permissions_rejects_bad_permissions(
    shared: Server, target: dict[str, Any], permissions: object, needle: str
) -> None:
    """Wildcards, permissions that don't apply to a service account, or a non-list are 400."""
    owner = shared.owner
    response = owner.post(
        f"{account_path(target)}:testIamPermissions", json={"permissions": permissions}
    )
    assert needle in error_of(response, 400, "INVALID_ARGUMENT")["message"]


def test_test_permissions_owner_lacks_token_creation(
    shared: Server, target: dict[str, Any]
) -> None:
    """The project owner holds admin permissions but not getAccessToken (basic roles don't)."""
    owner = shared.owner
    response = owner.post(
        f"{account_path(target)}:testIamPermissions",
        json={"permissions": ["iam.serviceAccounts.getAccessToken", "iam.serviceAccounts.delete"]},
    )
    assert response.json() == {"permissions": ["iam.serviceAccounts.delete"]}


# enforcement ----------------------------------------------------------------------------------

GET_DENIED = "Permission 'iam.serviceAccounts.get' denied on resource (or it may not exist)."
ERROR_INFO = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "IAM_PERMISSION_DENIED",
    "domain": "iam.googleapis.com",
    "metadata": {"permission": "iam.serviceAccounts.get"},
}


def test_account_without_roles_is_denied(robot: Robot, target: dict[str, Any]) -> None:
    """A service account without roles gets 403 with Google's text and an ErrorInfo detail."""
    response = robot.api.get(account_path(target))
    error = error_of(response, 403, "PERMISSION_DENIED")
    assert error == {
        "code": 403,
        "message": GET_DENIED,
        "status": "PERMISSION_DENIED",
        "details": [ERROR_INFO],
    }


def test_missing_account_is_denied_the_same_way(robot: Robot, target: dict[str, Any]) -> None:
    """A missing account gives the very same 403 body as an existing one (no existence leak)."""
    existing = robot.api.get(account_path(target))
    missing = robot.api.get(f"{ACCOUNTS}/ghost-account@{PROJECT}.iam.gserviceaccount.com")
    by_id = robot.api.get(f"{ACCOUNTS}/123456789012345678901")
    assert existing.status_code == missing.status_code == by_id.status_code == 403
    assert existing.json() == missing.json() == by_id.json()


def test_project_grant_applies_to_every_account(
    shared: Server, robot: Robot, target: dict[str, Any]
) -> None:
    """roles/iam.serviceAccountViewer on the project allows get and list on every account."""
    owner = shared.owner
    other = sibling(owner, target)
    add_binding(
        owner,
        f"/v1/projects/{PROJECT}",
        {"role": "roles/iam.serviceAccountViewer", "members": [robot.member]},
    )
    for account in (target, other, robot.account):
        response = robot.api.get(account_path(account))
        assert response.status_code == 200, response.text
        assert response.json()["uniqueId"] == account["uniqueId"]
    listed = robot.api.get(ACCOUNTS)
    assert listed.status_code == 200, listed.text
    assert listed.json()["accounts"]
    error_of(robot.api.delete(account_path(target)), 403, "PERMISSION_DENIED")


def test_account_grant_applies_to_that_account_only(
    shared: Server, robot: Robot, target: dict[str, Any]
) -> None:
    """A role granted on one account's policy allows nothing on another account."""
    owner = shared.owner
    other = sibling(owner, target)
    add_binding(
        owner,
        account_path(target),
        {"role": "roles/iam.serviceAccountViewer", "members": [robot.member]},
    )
    assert robot.api.get(account_path(target)).status_code == 200
    error_of(robot.api.get(account_path(other)), 403, "PERMISSION_DENIED")
    error_of(robot.api.get(ACCOUNTS), 403, "PERMISSION_DENIED")


def test_missing_account_stays_denied_with_account_level_grant(
    shared: Server, robot: Robot, target: dict[str, Any]
) -> None:
    """Without list on the project, a missing account is 403 even for a grantee elsewhere."""
    owner = shared.owner
    add_binding(
        owner,
        account_path(target),
        {"role": "roles/iam.serviceAccountViewer", "members": [robot.member]},
    )
    response = robot.api.get(f"{ACCOUNTS}/ghost-account@{PROJECT}.iam.gserviceaccount.com")
    assert error_of(response, 403, "PERMISSION_DENIED")["message"] == GET_DENIED


def test_grant_to_other_member_does_not_apply(
    shared: Server, robot: Robot, target: dict[str, Any]
) -> None:
    """A binding for a different member, or a user with the same email, grants nothing."""
    owner = shared.owner
    add_binding(
        owner,
        account_path(target),
        {
            "role": "roles/iam.serviceAccountViewer",
            "members": [f"user:{robot.email}", "serviceAccount:someone@x.iam.gserviceaccount.com"],
        },
    )
    error_of(robot.api.get(account_path(target)), 403, "PERMISSION_DENIED")


def test_condition_on_time_grants_then_expires(
    owner: Api, http: TestClient, clock: FixedClock
) -> None:
    """A binding with request.time < T allows before T and denies after it."""
    robot = Robot(owner, http, clock, "timed-robot")
    target = create(owner, "timed-target")
    deadline = to_datetime(clock.now() + 600).strftime("%Y-%m-%dT%H:%M:%SZ")
    add_binding(
        owner,
        account_path(target),
        {
            "role": "roles/iam.serviceAccountViewer",
            "members": [robot.member],
            "condition": {
                "title": "ten minutes",
                "expression": f'request.time < timestamp("{deadline}")',
            },
        },
    )
    assert robot.api.get(account_path(target)).status_code == 200
    clock.advance(599)
    assert robot.api.get(account_path(target)).status_code == 200
    clock.advance(1)
    error = error_of(robot.api.get(account_path(target)), 403, "PERMISSION_DENIED")
    assert error["message"] == GET_DENIED


def test_condition_on_resource_name_selects_accounts(
    shared: Server, robot: Robot, target: dict[str, Any]
) -> None:
    """A project binding conditioned on resource.name applies to the matching account only."""
    owner = shared.owner
    other = sibling(owner, target)
    add_binding(
        owner,
        f"/v1/projects/{PROJECT}",
        {
            "role": "roles/iam.serviceAccountViewer",
            "members": [robot.member],
            "condition": {
                "title": "one account",
                "expression": f'resource.name.endsWith("/serviceAccounts/{target["email"]}")',
            },
        },
    )
    assert robot.api.get(account_path(target)).status_code == 200
    error_of(robot.api.get(account_path(other)), 403, "PERMISSION_DENIED")


def test_policy_change_takes_effect_for_live_tokens(
    shared: Server, robot: Robot, target: dict[str, Any]
) -> None:
    """Removing a binding denies the next call made with an existing token."""
    owner = shared.owner
    path = account_path(target)
    add_binding(owner, path, {"role": "roles/iam.serviceAccountViewer", "members": [robot.member]})
    assert robot.api.get(path).status_code == 200
    assert set_policy(owner, path, {"bindings": []}).status_code == 200
    error_of(robot.api.get(path), 403, "PERMISSION_DENIED")


def test_recreated_account_does_not_inherit_its_policy(shared: Server) -> None:
    """An account recreated under a deleted one's email starts with an empty policy."""
    owner = shared.owner
    old = create(owner, f"reborn-{next(_NUMBERS)}")
    add_binding(owner, account_path(old), {"role": "roles/viewer", "members": ["user:a@x.io"]})
    assert owner.delete(account_path(old)).status_code == 200
    new = create(owner, old["email"].split("@")[0])
    assert get_policy(owner, account_path(new)).json() == {"version": 1, "etag": "ACAB"}


def test_security_regression_recreated_account_does_not_inherit_project_grants(
    shared: Server, robot: Robot, target: dict[str, Any]
) -> None:
    """A project grant to a deleted account does not pass to a new account with its email."""
    owner, http, clock = shared.owner, shared.http, shared.clock
    add_binding(
        owner,
        f"/v1/projects/{PROJECT}",
        {"role": "roles/iam.serviceAccountViewer", "members": [robot.member]},
    )
    assert robot.api.get(account_path(target)).status_code == 200
    assert owner.delete(account_path(robot.account)).status_code == 200
    reborn = Robot(owner, http, clock, robot.email.split("@")[0])
    assert reborn.account["uniqueId"] != robot.account["uniqueId"]
    error_of(reborn.api.get(account_path(target)), 403, "PERMISSION_DENIED")
    policy = owner.post(f"/v1/projects/{PROJECT}:getIamPolicy", json={}).json()
    members = {m for b in policy["bindings"] for m in b["members"]}
    assert f"deleted:{robot.member}?uid={robot.account['uniqueId']}" in members
    assert robot.member not in members


def test_denials_are_audited(robot: Robot, target: dict[str, Any], shared: Server) -> None:
    """Every denial is in the audit log with the principal, the permission and the resource."""
    services = shared.services
    robot.api.get(account_path(target))
    robot.api.get(f"/v1/projects/-/serviceAccounts/ghost-account@{PROJECT}.iam.gserviceaccount.com")
    robot.api.post(f"{account_path(target)}:getIamPolicy", json={})
    denied = services.store.query_audit(outcome="denied", principal=robot.member)
    seen = {(r.principal, r.permission, r.resource) for r in denied}
    assert seen == {
        (
            robot.member,
            "iam.serviceAccounts.get",
            f"projects/{PROJECT}/serviceAccounts/{target['email']}",
        ),
        (
            robot.member,
            "iam.serviceAccounts.get",
            f"projects/-/serviceAccounts/ghost-account@{PROJECT}.iam.gserviceaccount.com",
        ),
        (
            robot.member,
            "iam.serviceAccounts.getIamPolicy",
            f"projects/{PROJECT}/serviceAccounts/{target['email']}",
        ),
    }


def test_get_policy_needs_get_iam_policy(
    shared: Server, robot: Robot, target: dict[str, Any]
) -> None:
    """getIamPolicy and setIamPolicy are denied without their permissions, with ErrorInfo."""
    owner = shared.owner
    add_binding(
        owner,
        account_path(target),
        {"role": "roles/iam.serviceAccountViewer", "members": [robot.member]},
    )
    error = error_of(get_policy(robot.api, account_path(target)), 403, "PERMISSION_DENIED")
    assert error["details"][0]["metadata"] == {"permission": "iam.serviceAccounts.getIamPolicy"}
    error = error_of(set_policy(robot.api, account_path(target), {}), 403, "PERMISSION_DENIED")
    assert error["details"][0]["metadata"] == {"permission": "iam.serviceAccounts.setIamPolicy"}


def test_account_admin_can_manage_policy(
    shared: Server, robot: Robot, target: dict[str, Any]
) -> None:
    """roles/iam.serviceAccountAdmin on an account lets its holder read and write the policy."""
    owner = shared.owner
    add_binding(
        owner,
        account_path(target),
        {"role": "roles/iam.serviceAccountAdmin", "members": [robot.member]},
    )
    policy = get_policy(robot.api, account_path(target)).json()
    policy["bindings"].append({"role": "roles/viewer", "members": ["user:c@example.com"]})
    response = set_policy(robot.api, account_path(target), policy)
    assert response.status_code == 200, response.text


def test_token_without_api_scope_is_refused(shared: Server, target: dict[str, Any]) -> None:
    """A token without cloud-platform or iam scope gets 403 about insufficient scopes."""
    http, services = shared.http, shared.services
    narrow = Api(http, owner_token(http, services, scope="openid"))
    error = error_of(narrow.get(account_path(target)), 403, "PERMISSION_DENIED")
    assert error["message"] == "Request had insufficient authentication scopes."


def test_token_with_iam_scope_is_enough(shared: Server) -> None:
    """The iam scope alone (what impersonation clients request) is accepted."""
    owner, http, clock = shared.owner, shared.http, shared.clock
    robot = Robot(owner, http, clock, f"iam-scoped-{next(_NUMBERS)}")
    add_binding(
        owner,
        f"/v1/projects/{PROJECT}",
        {"role": "roles/iam.serviceAccountViewer", "members": [robot.member]},
    )
    scoped = Api(http, service_account_token(http, robot.key_file, clock, scope=IAM_SCOPE))
    assert scoped.get(account_path(robot.account)).status_code == 200
    narrow = Api(
        http,
        service_account_token(
            http, robot.key_file, clock, scope="https://www.googleapis.com/auth/userinfo.email"
        ),
    )
    error = error_of(narrow.get(account_path(robot.account)), 403, "PERMISSION_DENIED")
    assert error["message"] == "Request had insufficient authentication scopes."
