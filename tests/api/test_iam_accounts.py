"""IAM API v1 ``projects.serviceAccounts`` over HTTP: create, get, list, patch, delete, undelete,
disable and enable, with Google's JSON and status codes for every error.

Most tests share one server (``shared``) and work on accounts of their own, which nothing else
in the module touches; tests that move the clock or need the project to themselves take the
per-test fixtures.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import Api, owner_token, service_account_token
from tests.conftest import SharedServer as Server
from tokensmith.clock import FixedClock
from tokensmith.main import Services

PROJECT = "tokensmith-local"
ACCOUNTS = f"/v1/projects/{PROJECT}/serviceAccounts"
DAY = 86400.0


def email_of(account_id: str) -> str:
    return f"{account_id}@{PROJECT}.iam.gserviceaccount.com"


def create(owner: Api, account_id: str, **details: Any) -> dict[str, Any]:
    response = owner.post(ACCOUNTS, json={"accountId": account_id, "serviceAccount": details})
    assert response.status_code == 200, response.text
    return dict(response.json())


def error_of(response: Any, code: int, status: str) -> dict[str, Any]:
    """The ``error`` object of a Google-shaped error response, after checking code and status."""
    assert response.status_code == code, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert error["status"] == status
    assert isinstance(error["message"], str)
    assert error["message"]
    return dict(error)


def key_file_for(owner: Api, email: str) -> dict[str, Any]:
    response = owner.post(f"/v1/projects/-/serviceAccounts/{email}/keys", json={})
    assert response.status_code == 200, response.text
    return dict(json.loads(base64.b64decode(response.json()["privateKeyData"])))


# create -------------------------------------------------------------------------------------


def test_create_returns_google_shaped_account(shared: Server) -> None:
    """create answers the account with its email, 21-digit uniqueId and matching oauth2ClientId."""
    owner = shared.owner
    response = owner.post(
        ACCOUNTS,
        json={
            "accountId": "deployer",
            "serviceAccount": {"displayName": "Deployer", "description": "ships builds"},
        },
    )
    assert response.status_code == 200, response.text
    account = response.json()
    assert account["email"] == "deployer@tokensmith-local.iam.gserviceaccount.com"
    assert account["name"] == f"projects/{PROJECT}/serviceAccounts/{account['email']}"
    assert account["projectId"] == PROJECT
    assert re.fullmatch(r"1[0-9]{20}", account["uniqueId"])
    assert account["oauth2ClientId"] == account["uniqueId"]
    assert account["displayName"] == "Deployer"
    assert account["description"] == "ships builds"
    assert "disabled" not in account


def test_create_gives_each_account_its_own_unique_id(shared: Server) -> None:
    """Two accounts never share a uniqueId."""
    owner = shared.owner
    assert create(owner, "first-one")["uniqueId"] != create(owner, "second-one")["uniqueId"]


@pytest.mark.parametrize(
    "account_id",
    [
        "abcdef",  # 6 characters, the minimum
        "a" * 30,  # 30 characters, the maximum
        "a-b-c-9",
        "build3r-x",
    ],
)
def test_create_accepts_valid_account_ids(shared: Server, account_id: str) -> None:
    """accountIds of 6-30 characters matching [a-z]([-a-z0-9]*[a-z0-9]) are accepted."""
    owner = shared.owner
    assert create(owner, account_id)["email"] == email_of(account_id)


@pytest.mark.parametrize(
    "account_id",
    [
        "abcde",  # too short
        "a" * 31,  # too long
        "1abcdef",  # starts with a digit
        "-abcdef",  # starts with a hyphen
        "abcdef-",  # ends with a hyphen
        "abcdef\n",  # a trailing newline must not slip past the pattern
        "Abcdef",  # upper case
        "abc_def",  # underscore
        "abc.def",
        "abc def",
        "",
        None,
        12345678,
        ["abcdef"],
    ],
)
def test_create_rejects_bad_account_ids(shared: Server, account_id: object) -> None:
    """A bad accountId is 400 INVALID_ARGUMENT whose message names accountId."""
    owner = shared.owner
    response = owner.post(ACCOUNTS, json={"accountId": account_id})
    error = error_of(response, 400, "INVALID_ARGUMENT")
    assert "accountId" in error["message"]


def test_create_without_account_id_is_invalid(shared: Server) -> None:
    """A create body without accountId is 400 naming accountId."""
    owner = shared.owner
    error = error_of(owner.post(ACCOUNTS, json={}), 400, "INVALID_ARGUMENT")
    assert "accountId" in error["message"]


def test_create_duplicate_is_already_exists(shared: Server) -> None:
    """Creating an accountId twice is 409 ALREADY_EXISTS with Google's text."""
    owner = shared.owner
    create(owner, "twin-account")
    response = owner.post(ACCOUNTS, json={"accountId": "twin-account"})
    error = error_of(response, 409, "ALREADY_EXISTS")
    assert error["message"] == (
        f"Service account twin-account already exists within project projects/{PROJECT}."
    )


def test_create_rejects_unknown_top_level_field(shared: Server) -> None:
    """An unknown field in the create body is 400 naming the field."""
    owner = shared.owner
    response = owner.post(ACCOUNTS, json={"accountId": "field-test", "colour": "blue"})
    error = error_of(response, 400, "INVALID_ARGUMENT")
    assert '"colour"' in error["message"]
    assert owner.get(f"{ACCOUNTS}/{email_of('field-test')}").status_code == 404


def test_create_rejects_unknown_service_account_field(shared: Server) -> None:
    """An unknown field inside serviceAccount is 400 naming the field."""
    owner = shared.owner
    response = owner.post(
        ACCOUNTS, json={"accountId": "field-test", "serviceAccount": {"displayNam": "x"}}
    )
    error = error_of(response, 400, "INVALID_ARGUMENT")
    assert '"displayNam"' in error["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("displayName", "x" * 101), ("description", "x" * 257), ("displayName", 7)],
)
def test_create_rejects_bad_text_fields(shared: Server, field: str, value: object) -> None:
    """displayName over 100 bytes, description over 256 bytes or non-strings are 400."""
    owner = shared.owner
    response = owner.post(
        ACCOUNTS, json={"accountId": "text-test", "serviceAccount": {field: value}}
    )
    error = error_of(response, 400, "INVALID_ARGUMENT")
    assert field in error["message"]


def test_create_in_unknown_project_is_denied(shared: Server) -> None:
    """Creating in a project that does not exist looks like a denial (403), not a 404."""
    owner = shared.owner
    response = owner.post(
        "/v1/projects/no-such-project/serviceAccounts", json={"accountId": "abcdef"}
    )
    error = error_of(response, 403, "PERMISSION_DENIED")
    assert error["message"] == (
        "Permission 'iam.serviceAccounts.create' denied on resource (or it may not exist)."
    )


# get ----------------------------------------------------------------------------------------


def test_get_by_email_unique_id_and_any_project(shared: Server) -> None:
    """get finds an account by email, by uniqueId, and through projects/-/."""
    owner = shared.owner
    account = create(owner, "lookup-me", displayName="L")
    for path in (
        f"{ACCOUNTS}/{account['email']}",
        f"{ACCOUNTS}/{account['uniqueId']}",
        f"/v1/projects/-/serviceAccounts/{account['email']}",
        f"/v1/projects/-/serviceAccounts/{account['uniqueId']}",
    ):
        response = owner.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.json() == account


def test_get_with_url_encoded_email(shared: Server) -> None:
    """An email with its @ percent-encoded (%40) in the path is found."""
    owner = shared.owner
    account = create(owner, "encoded-at")
    response = owner.get(f"{ACCOUNTS}/encoded-at%40{PROJECT}.iam.gserviceaccount.com")
    assert response.status_code == 200, response.text
    assert response.json()["uniqueId"] == account["uniqueId"]


def test_get_is_case_insensitive_on_email(shared: Server) -> None:
    """An email written in upper case names the same account."""
    owner = shared.owner
    account = create(owner, "mixed-case")
    response = owner.get(f"{ACCOUNTS}/{account['email'].upper()}")
    assert response.status_code == 200, response.text
    assert response.json()["uniqueId"] == account["uniqueId"]


def test_get_missing_account_in_explicit_project_is_not_found(shared: Server) -> None:
    """A caller allowed to list the project learns a missing account is missing: 404."""
    owner = shared.owner
    response = owner.get(f"{ACCOUNTS}/{email_of('ghost-account')}")
    error_of(response, 404, "NOT_FOUND")


def test_get_missing_account_in_any_project_is_denied(shared: Server) -> None:
    """Through projects/-/ a missing account is the opaque 403, even for the owner."""
    owner = shared.owner
    response = owner.get(f"/v1/projects/-/serviceAccounts/{email_of('ghost-account')}")
    error = error_of(response, 403, "PERMISSION_DENIED")
    assert error["message"] == (
        "Permission 'iam.serviceAccounts.get' denied on resource (or it may not exist)."
    )


def test_get_account_under_wrong_project_is_not_found(shared: Server) -> None:
    """An account named under a project it does not belong to is not that project's account."""
    owner = shared.owner
    account = create(owner, "right-project")
    response = owner.get(f"/v1/projects/other-project/serviceAccounts/{account['email']}")
    error_of(response, 403, "PERMISSION_DENIED")


@pytest.mark.parametrize("key", ["not-an-email", "a@b", "12ab34"])
def test_get_with_malformed_account_name_is_invalid(shared: Server, key: str) -> None:
    """A name whose last segment is neither an email nor a unique id is 400."""
    owner = shared.owner
    error = error_of(owner.get(f"{ACCOUNTS}/{key}"), 400, "INVALID_ARGUMENT")
    assert "Invalid service account name" in error["message"]


def test_unknown_custom_method_is_not_found(shared: Server) -> None:
    """An unknown ``:verb`` on an account is 404 in Google's shape."""
    owner = shared.owner
    account = create(owner, "verb-target")
    error_of(owner.post(f"{ACCOUNTS}/{account['email']}:explode", json={}), 404, "NOT_FOUND")


# list ---------------------------------------------------------------------------------------


def listed(owner: Api) -> set[str]:
    """The emails of every live account in the project (the bootstrap creates one)."""
    emails: set[str] = set()
    token = ""
    while True:
        response = owner.get(ACCOUNTS, params={"pageSize": "100", "pageToken": token})
        assert response.status_code == 200, response.text
        emails.update(a["email"] for a in response.json().get("accounts", []))
        token = response.json().get("nextPageToken", "")
        if not token:
            return emails


def test_list_pages_through_every_account(shared: Server) -> None:
    """list with pageSize returns pages whose nextPageToken round-trips to the next page."""
    owner = shared.owner
    existing = listed(owner)
    created = {create(owner, f"paged-{i:02d}")["email"] for i in range(5)}
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        params = {"pageSize": "2"}
        if token:
            params["pageToken"] = token
        response = owner.get(ACCOUNTS, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        assert 1 <= len(body["accounts"]) <= 2
        seen.extend(a["email"] for a in body["accounts"])
        token = body.get("nextPageToken", "")
        if not token:
            break
    assert sorted(seen) == sorted(existing | created)  # each account exactly once
    assert pages == (len(seen) + 1) // 2


def test_list_default_page_holds_every_account(owner: Api) -> None:
    """Without pageSize a few accounts come back in one page without nextPageToken."""
    existing = listed(owner)
    a = create(owner, "alpha-account")
    b = create(owner, "bravo-account")
    body = owner.get(ACCOUNTS).json()
    assert {x["email"] for x in body["accounts"]} == existing | {a["email"], b["email"]}
    assert "nextPageToken" not in body


def test_list_of_empty_project_is_empty_object(owner: Api) -> None:
    """A project without live accounts lists as ``{}`` (proto3 JSON omits empty lists)."""
    for email in listed(owner):
        assert owner.delete(f"{ACCOUNTS}/{email}").status_code == 200
    response = owner.get(ACCOUNTS)
    assert response.status_code == 200
    assert response.json() == {}


@pytest.mark.parametrize("token", ["not-a-token!!", "YWJj", "%%%"])
def test_list_with_bad_page_token_is_invalid(shared: Server, token: str) -> None:
    """A pageToken this server did not issue is 400 INVALID_ARGUMENT."""
    owner = shared.owner
    response = owner.get(ACCOUNTS, params={"pageToken": token})
    error = error_of(response, 400, "INVALID_ARGUMENT")
    assert "pageToken" in error["message"]


@pytest.mark.parametrize("size", ["ten", "-1", "1.5"])
def test_list_with_bad_page_size_is_invalid(shared: Server, size: str) -> None:
    """A pageSize that is not a non-negative integer is 400 naming pageSize."""
    owner = shared.owner
    error = error_of(owner.get(ACCOUNTS, params={"pageSize": size}), 400, "INVALID_ARGUMENT")
    assert "pageSize" in error["message"]


def test_list_omits_deleted_accounts(shared: Server) -> None:
    """A deleted account no longer appears in list."""
    owner = shared.owner
    existing = listed(owner)
    keep = create(owner, "keep-account")
    gone = create(owner, "gone-account")
    assert owner.delete(f"{ACCOUNTS}/{gone['email']}").status_code == 200
    assert listed(owner) == existing | {keep["email"]}


# patch --------------------------------------------------------------------------------------


def test_patch_updates_only_masked_fields(shared: Server) -> None:
    """patch changes the fields named in updateMask and leaves the others."""
    owner = shared.owner
    account = create(owner, "patch-me", displayName="Old", description="keep me")
    response = owner.patch(
        f"{ACCOUNTS}/{account['email']}",
        json={
            "serviceAccount": {"displayName": "New", "description": "ignored"},
            "updateMask": "displayName",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["displayName"] == "New"
    assert response.json()["description"] == "keep me"
    fetched = owner.get(f"{ACCOUNTS}/{account['email']}").json()
    assert (fetched["displayName"], fetched["description"]) == ("New", "keep me")


def test_patch_both_fields(shared: Server) -> None:
    """An updateMask naming displayName and description changes both."""
    owner = shared.owner
    account = create(owner, "patch-both", displayName="Old", description="old")
    response = owner.patch(
        f"{ACCOUNTS}/{account['uniqueId']}",
        json={
            "serviceAccount": {"displayName": "N", "description": "d"},
            "updateMask": "displayName,description",
        },
    )
    assert response.status_code == 200, response.text
    assert (response.json()["displayName"], response.json()["description"]) == ("N", "d")
    assert response.json()["etag"] != account["etag"]  # every write moves the etag
    assert response.json()["uniqueId"] == account["uniqueId"]


def test_patch_without_update_mask_is_invalid(shared: Server) -> None:
    """patch without updateMask is 400 naming updateMask, and changes nothing."""
    owner = shared.owner
    account = create(owner, "patch-nomask", displayName="Old")
    response = owner.patch(
        f"{ACCOUNTS}/{account['email']}", json={"serviceAccount": {"displayName": "New"}}
    )
    error = error_of(response, 400, "INVALID_ARGUMENT")
    assert "updateMask" in error["message"]
    assert owner.get(f"{ACCOUNTS}/{account['email']}").json()["displayName"] == "Old"


@pytest.mark.parametrize(
    ("mask", "account_id"),
    [
        ("email", "patch-email"),
        ("displayName,uniqueId", "patch-unique"),
        ("disabled", "patch-flag"),
    ],
)
def test_patch_of_other_fields_is_invalid(shared: Server, mask: str, account_id: str) -> None:
    """An updateMask naming anything but displayName/description is 400, changing nothing."""
    owner = shared.owner
    account = create(owner, account_id)
    response = owner.patch(
        f"{ACCOUNTS}/{account['email']}",
        json={"serviceAccount": {"displayName": "x"}, "updateMask": mask},
    )
    error = error_of(response, 400, "INVALID_ARGUMENT")
    assert "updateMask" in error["message"]
    assert owner.get(f"{ACCOUNTS}/{account['email']}").json() == account


def test_patch_with_unknown_field_is_invalid(shared: Server) -> None:
    """An unknown field in the patch body is 400 naming the field."""
    owner = shared.owner
    account = create(owner, "patch-unknown")
    response = owner.patch(
        f"{ACCOUNTS}/{account['email']}",
        json={"serviceAccount": {"nickname": "x"}, "updateMask": "displayName"},
    )
    assert '"nickname"' in error_of(response, 400, "INVALID_ARGUMENT")["message"]


def test_patch_without_service_account_is_invalid(shared: Server) -> None:
    """A patch body without the serviceAccount object is 400."""
    owner = shared.owner
    account = create(owner, "patch-empty")
    response = owner.patch(f"{ACCOUNTS}/{account['email']}", json={"updateMask": "displayName"})
    assert "serviceAccount" in error_of(response, 400, "INVALID_ARGUMENT")["message"]


# delete and undelete ------------------------------------------------------------------------


def test_delete_then_get_is_not_found_in_explicit_project(shared: Server) -> None:
    """After delete, get by email or uniqueId in the account's project is 404."""
    owner = shared.owner
    account = create(owner, "delete-me")
    response = owner.delete(f"{ACCOUNTS}/{account['email']}")
    assert response.status_code == 200
    assert response.json() == {}
    error_of(owner.get(f"{ACCOUNTS}/{account['email']}"), 404, "NOT_FOUND")
    error_of(owner.get(f"{ACCOUNTS}/{account['uniqueId']}"), 404, "NOT_FOUND")


def test_delete_then_get_through_any_project_is_denied(shared: Server) -> None:
    """After delete, get through projects/-/ is the opaque 403."""
    owner = shared.owner
    account = create(owner, "delete-dash")
    assert owner.delete(f"{ACCOUNTS}/{account['email']}").status_code == 200
    error_of(
        owner.get(f"/v1/projects/-/serviceAccounts/{account['email']}"), 403, "PERMISSION_DENIED"
    )


def test_delete_twice_is_not_found(shared: Server) -> None:
    """Deleting an already deleted account is 404 for a caller who can list the project."""
    owner = shared.owner
    account = create(owner, "delete-twice")
    assert owner.delete(f"{ACCOUNTS}/{account['email']}").status_code == 200
    error_of(owner.delete(f"{ACCOUNTS}/{account['email']}"), 404, "NOT_FOUND")


def test_undelete_restores_same_unique_id(shared: Server) -> None:
    """undelete by uniqueId within 30 days restores the account with the same uniqueId."""
    owner = shared.owner
    account = create(owner, "phoenix-account", displayName="P")
    assert owner.delete(f"{ACCOUNTS}/{account['email']}").status_code == 200
    response = owner.post(f"/v1/projects/-/serviceAccounts/{account['uniqueId']}:undelete")
    assert response.status_code == 200, response.text
    assert response.json() == {"restoredAccount": account}
    assert owner.get(f"{ACCOUNTS}/{account['email']}").json()["uniqueId"] == account["uniqueId"]


def test_undelete_just_inside_thirty_days(
    owner: Api, http: TestClient, services: Services, clock: FixedClock
) -> None:
    """An account deleted 29 days ago can still be undeleted."""
    account = create(owner, "late-phoenix")
    owner.delete(f"{ACCOUNTS}/{account['email']}")
    clock.advance(29 * DAY)
    fresh = Api(http, owner_token(http, services))  # the fixture's token has expired
    response = fresh.post(f"/v1/projects/-/serviceAccounts/{account['uniqueId']}:undelete")
    assert response.status_code == 200, response.text


def test_undelete_after_thirty_days_fails(
    owner: Api, http: TestClient, services: Services, clock: FixedClock
) -> None:
    """An account deleted more than 30 days ago cannot be undeleted."""
    account = create(owner, "dead-phoenix")
    owner.delete(f"{ACCOUNTS}/{account['email']}")
    clock.advance(30 * DAY + 1)
    fresh = Api(http, owner_token(http, services))  # the fixture's token has expired
    response = fresh.post(f"/v1/projects/-/serviceAccounts/{account['uniqueId']}:undelete")
    error = error_of(response, 404, "NOT_FOUND")
    assert "30 days" in error["message"]
    error_of(fresh.get(f"{ACCOUNTS}/{account['email']}"), 404, "NOT_FOUND")


def test_undelete_when_email_reused_is_failed_precondition(shared: Server) -> None:
    """undelete fails with FAILED_PRECONDITION when a new account now holds the email."""
    owner = shared.owner
    old = create(owner, "reused-email")
    owner.delete(f"{ACCOUNTS}/{old['email']}")
    new = create(owner, "reused-email")
    assert new["uniqueId"] != old["uniqueId"]
    response = owner.post(f"/v1/projects/-/serviceAccounts/{old['uniqueId']}:undelete")
    error_of(response, 400, "FAILED_PRECONDITION")
    assert owner.get(f"{ACCOUNTS}/{old['email']}").json()["uniqueId"] == new["uniqueId"]


def test_undelete_by_email_is_invalid(shared: Server) -> None:
    """undelete needs the uniqueId; an email is 400."""
    owner = shared.owner
    account = create(owner, "undelete-email")
    owner.delete(f"{ACCOUNTS}/{account['email']}")
    response = owner.post(f"/v1/projects/-/serviceAccounts/{account['email']}:undelete")
    assert "unique id" in error_of(response, 400, "INVALID_ARGUMENT")["message"]


def test_undelete_of_live_account_returns_it(shared: Server) -> None:
    """undelete of an account that is not deleted returns it unchanged."""
    owner = shared.owner
    account = create(owner, "alive-account")
    response = owner.post(f"{ACCOUNTS}/{account['uniqueId']}:undelete")
    assert response.status_code == 200, response.text
    assert response.json() == {"restoredAccount": account}


def test_undelete_of_unknown_unique_id(shared: Server) -> None:
    """undelete of a uniqueId that never existed is 404 in the project, 403 through -."""
    owner = shared.owner
    error_of(owner.post(f"{ACCOUNTS}/123456789012345678901:undelete"), 404, "NOT_FOUND")
    error_of(
        owner.post("/v1/projects/-/serviceAccounts/123456789012345678901:undelete"),
        403,
        "PERMISSION_DENIED",
    )


def test_recreated_account_gets_new_unique_id(shared: Server) -> None:
    """Deleting and recreating an accountId yields a new uniqueId (Google semantics)."""
    owner = shared.owner
    old = create(owner, "recreate-me")
    owner.delete(f"{ACCOUNTS}/{old['email']}")
    assert create(owner, "recreate-me")["uniqueId"] != old["uniqueId"]


# disable and enable -------------------------------------------------------------------------


def test_disable_and_enable_toggle_the_flag(shared: Server) -> None:
    """disable sets ``disabled: true`` on the account; enable clears it."""
    owner = shared.owner
    account = create(owner, "toggle-me")
    response = owner.post(f"{ACCOUNTS}/{account['email']}:disable", json={})
    assert response.status_code == 200
    assert response.json() == {}
    assert owner.get(f"{ACCOUNTS}/{account['email']}").json()["disabled"] is True
    assert owner.post(f"{ACCOUNTS}/{account['email']}:enable").status_code == 200
    assert "disabled" not in owner.get(f"{ACCOUNTS}/{account['email']}").json()


def test_disabled_account_tokens_are_rejected_until_enabled(shared: Server) -> None:
    """A disabled account's access tokens get 401; after enable the same token works again."""
    owner, http, clock = shared.owner, shared.http, shared.clock
    account = create(owner, "sleepy-account")
    token = service_account_token(http, key_file_for(owner, account["email"]), clock)
    caller = Api(http, token)
    own = f"{ACCOUNTS}/{account['email']}"
    # Without any role the account is denied (403): proof that the token authenticates.
    error_of(caller.get(own), 403, "PERMISSION_DENIED")
    assert owner.post(f"{own}:disable").status_code == 200
    error_of(caller.get(own), 401, "UNAUTHENTICATED")
    assert owner.post(f"{own}:enable").status_code == 200
    error_of(caller.get(own), 403, "PERMISSION_DENIED")


def test_disabled_account_cannot_get_new_tokens(shared: Server) -> None:
    """The jwt-bearer grant refuses a disabled account with invalid_grant."""
    owner, http, clock = shared.owner, shared.http, shared.clock
    account = create(owner, "disabled-grant")
    key_file = key_file_for(owner, account["email"])
    owner.post(f"{ACCOUNTS}/{account['email']}:disable")
    with pytest.raises(AssertionError, match="Robot is disabled"):
        service_account_token(http, key_file, clock)


def test_deleted_account_tokens_are_rejected(shared: Server) -> None:
    """A deleted account's access tokens get 401, and stay rejected after a recreate."""
    owner, http, clock = shared.owner, shared.http, shared.clock
    account = create(owner, "doomed-account")
    caller = Api(http, service_account_token(http, key_file_for(owner, account["email"]), clock))
    owner.delete(f"{ACCOUNTS}/{account['email']}")
    error_of(caller.get(ACCOUNTS), 401, "UNAUTHENTICATED")
    create(owner, "doomed-account")
    error_of(caller.get(ACCOUNTS), 401, "UNAUTHENTICATED")


def test_custom_method_with_get_is_not_found(shared: Server) -> None:
    """Custom methods are POST only; GET on ``:disable`` is 404."""
    owner = shared.owner
    account = create(owner, "get-verb")
    error_of(owner.get(f"{ACCOUNTS}/{account['email']}:disable"), 404, "NOT_FOUND")
    assert "disabled" not in owner.get(f"{ACCOUNTS}/{account['email']}").json()


def test_changes_are_audited(shared: Server) -> None:
    """Creating and deleting an account leaves granted audit records naming it."""
    owner, services = shared.owner, shared.services
    account = create(owner, "audited-account")
    owner.delete(f"{ACCOUNTS}/{account['email']}")
    resource = f"projects/{PROJECT}/serviceAccounts/{account['email']}"
    methods = {r.method for r in services.store.query_audit(resource=resource)}
    assert {"CreateServiceAccount", "DeleteServiceAccount"} <= methods
