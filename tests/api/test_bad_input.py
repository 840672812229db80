"""Hostile and malformed requests: every one gets a clear 4xx in Google's error shape (never a
500), and a rejected write leaves the store exactly as it was.

One server serves the whole module (``shared``): each request here is refused, so no test can
leave anything behind for the next one — which is exactly what ``unchanged`` verifies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import START, Api, owner_token
from tokensmith.api.app import create_app
from tokensmith.clock import FixedClock
from tokensmith.config import Settings
from tokensmith.main import Services, build

PROJECT = "tokensmith-local"
ACCOUNTS = f"/v1/projects/{PROJECT}/serviceAccounts"
VICTIM = f"victim-account@{PROJECT}.iam.gserviceaccount.com"
VICTIM_PATH = f"{ACCOUNTS}/{VICTIM}"


class Shared:
    def __init__(self, services: Services, owner: Api, key_id: str) -> None:
        self.services = services
        self.owner = owner
        self.key_id = key_id

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a write could change: accounts, keys, policies, granted audit records."""
        store = self.services.store
        accounts = tuple(store.list_service_accounts(PROJECT, after="", limit=1000))
        keys = tuple(k for a in accounts for k in store.list_keys(a.unique_id))
        resources = [f"projects/{PROJECT}"] + [
            f"projects/{PROJECT}/serviceAccounts/{a.unique_id}" for a in accounts
        ]
        policies = tuple(store.get_policy(r) for r in resources)
        granted = len(store.query_audit(outcome="granted", limit=100_000))
        return accounts, keys, policies, granted

    @contextlib.contextmanager
    def unchanged(self) -> Iterator[None]:
        before = self.snapshot()
        yield
        assert self.snapshot() == before


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    data_dir = Path(tmp_path_factory.mktemp("bad-input")) / "data"
    services = build(
        Settings(data_dir=data_dir, port=18080, max_body_bytes=4096), FixedClock(START)
    )
    try:
        with TestClient(
            create_app(services), base_url="http://127.0.0.1:18080", raise_server_exceptions=False
        ) as client:
            owner = Api(client, owner_token(client, services))
            created = owner.post(ACCOUNTS, json={"accountId": "victim-account"})
            assert created.status_code == 200, created.text
            key = owner.post(f"{VICTIM_PATH}/keys", json={})
            assert key.status_code == 200, key.text
            policy = owner.post(
                f"{VICTIM_PATH}:setIamPolicy",
                json={
                    "policy": {"bindings": [{"role": "roles/viewer", "members": ["user:a@x.io"]}]}
                },
            )
            assert policy.status_code == 200, policy.text
            yield Shared(services, owner, key.json()["name"].rsplit("/", 1)[1])
    finally:
        services.close()


def google_error(response: Any, code: int, status: str) -> str:
    """Check Google's error envelope and return the message."""
    assert response.status_code == code, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) <= {"code", "message", "status", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["status"] == status
    message = body["error"]["message"]
    assert isinstance(message, str)
    assert message
    return str(message)


JSON_WRITES = [
    ("POST", ACCOUNTS),
    ("PATCH", VICTIM_PATH),
    ("POST", f"{VICTIM_PATH}:setIamPolicy"),
    ("POST", f"/v1/projects/{PROJECT}:setIamPolicy"),
    ("POST", f"{VICTIM_PATH}/keys"),
    ("POST", f"{VICTIM_PATH}:disable"),
]


# bodies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), JSON_WRITES)
@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b'{"accountId": }',
        b"{'accountId': 'single-quotes'}",
        b'{"a": NaN}',
        b'{"a": 1e999999}',
        b"\xff\xfe{}",
        b"[" * 1500 + b"]" * 1500,
    ],
    ids=["truncated", "no-value", "single-quotes", "nan", "inf", "not-utf8", "deep"],
)
def test_malformed_json_is_invalid_argument(
    shared: Shared, method: str, path: str, content: bytes
) -> None:
    """A body that is not valid JSON is 400 "Invalid JSON payload received." and changes nothing."""
    with shared.unchanged():
        response = shared.owner.request(
            method, path, content=content, headers={"Content-Type": "application/json"}
        )
        message = google_error(response, 400, "INVALID_ARGUMENT")
    assert message.startswith("Invalid JSON payload received.")


@pytest.mark.parametrize(("method", "path"), JSON_WRITES)
@pytest.mark.parametrize(
    "content", [b"[]", b'[{"accountId": "abcdef"}]', b'"text"', b"42", b"null"]
)
def test_json_that_is_not_an_object_is_invalid(
    shared: Shared, method: str, path: str, content: bytes
) -> None:
    """A JSON array, string, number or null as the body is 400 and changes nothing."""
    with shared.unchanged():
        response = shared.owner.request(
            method, path, content=content, headers={"Content-Type": "application/json"}
        )
        message = google_error(response, 400, "INVALID_ARGUMENT")
    assert "JSON object" in message


@pytest.mark.parametrize(("method", "path"), JSON_WRITES)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_wrong_content_type_is_invalid(
    shared: Shared, method: str, path: str, content_type: str
) -> None:
    """A non-JSON content type on a JSON API is 400 naming it, and changes nothing."""
    with shared.unchanged():
        response = shared.owner.request(
            method,
            path,
            content=b'{"accountId": "sneaky-one"}',
            headers={"Content-Type": content_type},
        )
        message = google_error(response, 400, "INVALID_ARGUMENT")
    assert content_type in message


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/merge-patch+json"]
)
def test_json_content_type_variants_are_accepted(shared: Shared, content_type: str) -> None:
    """application/json with parameters and +json types are read as JSON."""
    response = shared.owner.post(
        f"{VICTIM_PATH}:getIamPolicy", content=b"{}", headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("method", "path"), JSON_WRITES)
def test_oversized_body_is_refused(shared: Shared, method: str, path: str) -> None:
    """A body over max_body_bytes is 413 in Google's shape, and changes nothing."""
    limit = shared.services.settings.max_body_bytes
    padding = "x" * limit
    with shared.unchanged():
        response = shared.owner.request(
            method,
            path,
            content=f'{{"accountId": "big-body", "pad": "{padding}"}}'.encode(),
            headers={"Content-Type": "application/json"},
        )
        message = google_error(response, 413, "INVALID_ARGUMENT")
    assert str(limit) in message


def test_oversized_streamed_body_is_refused(shared: Shared) -> None:
    """A chunked body without Content-Length is cut off at the limit too."""
    limit = shared.services.settings.max_body_bytes
    chunks = [b'{"accountId": "streamed", "pad": "'] + [b"x" * 1024] * (limit // 1024 + 2) + [b'"}']
    with shared.unchanged():
        response = shared.owner.post(
            ACCOUNTS, content=iter(chunks), headers={"Content-Type": "application/json"}
        )
        google_error(response, 413, "INVALID_ARGUMENT")


def test_body_just_under_the_limit_is_read(shared: Shared) -> None:
    """A body right at the limit is parsed (and here refused only for its unknown field)."""
    limit = shared.services.settings.max_body_bytes
    prefix = b'{"accountId": "at-limit", "pad": "'
    content = prefix + b"x" * (limit - len(prefix) - 2) + b'"}'
    assert len(content) == limit
    with shared.unchanged():
        response = shared.owner.post(
            ACCOUNTS, content=content, headers={"Content-Type": "application/json"}
        )
        assert '"pad"' in google_error(response, 400, "INVALID_ARGUMENT")


# fields of the wrong type ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "needle"),
    [
        ("POST", ACCOUNTS, {"accountId": "typed-one", "serviceAccount": "x"}, "serviceAccount"),
        (
            "POST",
            ACCOUNTS,
            {"accountId": "typed-one", "serviceAccount": {"description": 5}},
            "description",
        ),
        (
            "PATCH",
            VICTIM_PATH,
            {"serviceAccount": [], "updateMask": "displayName"},
            "serviceAccount",
        ),
        ("PATCH", VICTIM_PATH, {"serviceAccount": {}, "updateMask": ["displayName"]}, "updateMask"),
        ("POST", f"{VICTIM_PATH}:setIamPolicy", {"policy": []}, "policy"),
        ("POST", f"{VICTIM_PATH}:setIamPolicy", {"policy": {"bindings": [5]}}, "bindings[0]"),
        ("POST", f"{VICTIM_PATH}:setIamPolicy", {"policy": {}, "updateMask": 3}, "updateMask"),
        (
            "POST",
            f"{VICTIM_PATH}:setIamPolicy",
            {"policy": {"bindings": [{"role": 7, "members": []}]}},
            "role",
        ),
        (
            "POST",
            f"{VICTIM_PATH}:setIamPolicy",
            {
                "policy": {
                    "version": 3,
                    "bindings": [
                        {"role": "roles/viewer", "members": ["user:a@x.io"], "condition": "true"}
                    ],
                }
            },
            "condition",
        ),
        (
            "POST",
            f"{VICTIM_PATH}:setIamPolicy",
            {
                "policy": {
                    "version": 3,
                    "bindings": [
                        {
                            "role": "roles/viewer",
                            "members": ["user:a@x.io"],
                            "condition": {"expression": "true", "title": None},
                        }
                    ],
                }
            },
            "title",
        ),
        ("POST", f"{VICTIM_PATH}:setIamPolicy", {"policy": {"auditConfigs": {}}}, "auditConfigs"),
        ("POST", f"{VICTIM_PATH}:getIamPolicy", {"options": 3}, "options"),
        (
            "POST",
            f"{VICTIM_PATH}:getIamPolicy",
            {"options": {"requestedPolicyVersion": None}},
            "requestedPolicyVersion",
        ),
        (
            "POST",
            f"{VICTIM_PATH}:getIamPolicy",
            {"options": {"requestedPolicyVersion": "x"}},
            "requestedPolicyVersion",
        ),
        ("POST", f"{VICTIM_PATH}:testIamPermissions", {"permissions": {}}, "permissions"),
        ("POST", f"{VICTIM_PATH}/keys", {"privateKeyType": 1}, "privateKeyType"),
    ],
)
def test_fields_of_the_wrong_type_are_invalid(
    shared: Shared, method: str, path: str, body: dict[str, Any], needle: str
) -> None:
    """A field of the wrong JSON type is 400 naming the field, and changes nothing."""
    with shared.unchanged():
        message = google_error(
            shared.owner.request(method, path, json=body), 400, "INVALID_ARGUMENT"
        )
    assert needle in message


@pytest.mark.parametrize(
    "member",
    [
        "user:alice",
        "user:alice@",
        "user:@example.com",
        "user:alice@example..com",
        "user:alice@exa mple.com",
        "user:alice@example.com\n",
        "serviceAccount:robot",
        "group:",
        "user:" + "a" * 250 + "@example.com",
        "user:al\u00efce@example.com",
    ],
)
def test_bad_member_emails_are_invalid(shared: Shared, member: str) -> None:
    """Members whose email is malformed are 400, and the policy is unchanged."""
    policy = {"bindings": [{"role": "roles/viewer", "members": ["user:ok@example.com", member]}]}
    with shared.unchanged():
        message = google_error(
            shared.owner.post(f"{VICTIM_PATH}:setIamPolicy", json={"policy": policy}),
            400,
            "INVALID_ARGUMENT",
        )
    assert "member" in message.lower()


# resource names and paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"{ACCOUNTS}/not-an-email",
        f"{ACCOUNTS}/user@",
        f"{ACCOUNTS}/@example.com",
        f"{ACCOUNTS}/{'1' * 31}",
        f"{ACCOUNTS}/a%20b@example.com",
        f"{ACCOUNTS}/%00",
        f"{ACCOUNTS}/caf%C3%A9@example.com",
        f"{ACCOUNTS}/",
        "/v1/projects/-/serviceAccounts/x" + "y" * 5000 + "@example.com",
    ],
)
def test_bad_account_names_are_invalid(shared: Shared, path: str) -> None:
    """A service account name that is neither an email nor a unique id is 400."""
    message = google_error(shared.owner.get(path), 400, "INVALID_ARGUMENT")
    assert "service account name" in message
    assert len(message) < 1000


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", f"{ACCOUNTS}/not-an-email"),
        ("PATCH", f"{ACCOUNTS}/not-an-email"),
        ("POST", f"{ACCOUNTS}/not-an-email:disable"),
        ("POST", f"{ACCOUNTS}/not-an-email:setIamPolicy"),
        ("POST", f"{ACCOUNTS}/not-an-email/keys"),
        ("DELETE", f"{VICTIM_PATH}/keys/"),
    ],
)
def test_writes_to_bad_names_change_nothing(shared: Shared, method: str, path: str) -> None:
    """Writes addressed to malformed names are 400 and change nothing."""
    with shared.unchanged():
        google_error(shared.owner.request(method, path, json={}), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    ("method", "path", "code", "status"),
    [
        ("GET", "/v1/nothing-here", 404, "NOT_FOUND"),
        ("GET", "/v2/projects/tokensmith-local", 404, "NOT_FOUND"),
        ("GET", f"{VICTIM_PATH}/keys/abc/extra", 404, "NOT_FOUND"),
        ("GET", f"{VICTIM_PATH}/secrets", 404, "NOT_FOUND"),
        ("POST", f"{VICTIM_PATH}/keys:list", 404, "NOT_FOUND"),
        ("POST", f"{VICTIM_PATH}:frobnicate", 404, "NOT_FOUND"),
        ("PUT", VICTIM_PATH, 405, "INVALID_ARGUMENT"),
        ("DELETE", ACCOUNTS, 405, "INVALID_ARGUMENT"),
    ],
)
def test_unknown_paths_and_methods_are_google_errors(
    shared: Shared, method: str, path: str, code: int, status: str
) -> None:
    """Unknown paths are 404 and unrouted methods 405, always in Google's shape."""
    with shared.unchanged():
        google_error(shared.owner.request(method, path), code, status)


@pytest.mark.parametrize(
    "params",
    [
        {"pageSize": "1" * 40},
        {"pageSize": "\u0661"},  # a non-ASCII digit
        {"pageToken": "=" * 10},
        {"pageToken": "\u00e9"},
    ],
)
def test_hostile_query_parameters_are_invalid(shared: Shared, params: dict[str, str]) -> None:
    """Out-of-range or non-ASCII page sizes and forged page tokens are 400, never 500."""
    message = google_error(shared.owner.get(ACCOUNTS, params=params), 400, "INVALID_ARGUMENT")
    assert next(iter(params)) in message


def test_refused_writes_leave_no_granted_audit(shared: Shared) -> None:
    """After all the refusals above, the victim account still has exactly one key and policy."""
    response = shared.owner.get(f"{VICTIM_PATH}/keys")
    assert [k["name"].rsplit("/", 1)[1] for k in response.json()["keys"]] == [shared.key_id]
    policy = shared.owner.post(f"{VICTIM_PATH}:getIamPolicy", json={}).json()
    assert policy["bindings"] == [{"role": "roles/viewer", "members": ["user:a@x.io"]}]
