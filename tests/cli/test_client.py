"""``tokensmith.client`` without a server: error rendering, the REST client over an
``httpx.MockTransport``, credentials-file problems, and the pure policy edits and retry loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tokensmith.client import (
    AuthorizedUserCredentials,
    Client,
    ClientError,
    load_credentials,
)
from tokensmith.client.errors import error_from_response
from tokensmith.client.orgpolicy import LIFETIME_EXTENSION, allowing
from tokensmith.client.policy import read_modify_write, with_member, without_member
from tokensmith.testing import free_port

BASE = "http://127.0.0.1:9"
DENIED = {
    "error": {
        "code": 403,
        "message": "Permission 'iam.serviceAccounts.get' denied on resource (or it may not exist).",
        "status": "PERMISSION_DENIED",
    }
}

# error rendering ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            httpx.Response(403, json=DENIED),
            "PERMISSION_DENIED (403): Permission 'iam.serviceAccounts.get' denied on resource "
            "(or it may not exist).",
        ),
        (
            httpx.Response(
                400, json={"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            ),
            "invalid_grant (400): Invalid JWT Signature.",
        ),
        (
            httpx.Response(502, text="<html>\n<body>Bad   gateway</body>\n</html>"),
            "HTTP_502 (502): <html> <body>Bad gateway</body> </html>",
        ),
        (
            httpx.Response(409, json={"error": {"code": 409, "message": "line one\nline two"}}),
            "HTTP_409 (409): line one line two",
        ),
    ],
)
def test_error_responses_become_one_line(response: httpx.Response, expected: str) -> None:
    """Google's envelope, RFC 6749 errors and non-JSON bodies all read as one line."""
    assert str(error_from_response(response)) == expected


# the REST client ----------------------------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def owner_credentials() -> AuthorizedUserCredentials:
    return AuthorizedUserCredentials("client", "secret", "refresh", f"{BASE}/token")


class FakeServer:
    """A token endpoint handing out tok-1, tok-2, … and an API answering with ``api``."""

    def __init__(self, api: Handler) -> None:
        self.api = api
        self.tokens_issued = 0
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.path == "/token":
            self.tokens_issued += 1
            return httpx.Response(
                200, json={"access_token": f"tok-{self.tokens_issued}", "expires_in": 3600}
            )
        return self.api(request)

    def client(self) -> Client:
        return Client(BASE, owner_credentials(), transport=httpx.MockTransport(self))


def test_client_sends_bearer_token_and_returns_json() -> None:
    """A call carries the credentials' token and returns the response's JSON object."""
    server = FakeServer(lambda r: httpx.Response(200, json={"path": r.url.path}))
    with server.client() as client:
        assert client.get("/v1/projects/p/serviceAccounts") == {
            "path": "/v1/projects/p/serviceAccounts"
        }
        assert client.get("/again") == {"path": "/again"}
    api_calls = [r for r in server.seen if r.url.path != "/token"]
    assert [r.headers["authorization"] for r in api_calls] == ["Bearer tok-1", "Bearer tok-1"]
    assert server.tokens_issued == 1


def test_client_raises_google_errors_as_client_error() -> None:
    """A Google error response raises ClientError with its status, code and message."""
    server = FakeServer(lambda r: httpx.Response(403, json=DENIED))
    with server.client() as client, pytest.raises(ClientError) as caught:
        client.get("/v1/projects/p/serviceAccounts/x@p.iam.gserviceaccount.com")
    assert (caught.value.status, caught.value.code) == ("PERMISSION_DENIED", 403)
    assert str(caught.value).startswith("PERMISSION_DENIED (403): Permission ")


def test_client_retries_once_with_a_fresh_token_after_401() -> None:
    """A 401 drops the cached token; the call is repeated once with a new one."""

    def api(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == "Bearer tok-1":
            return httpx.Response(401, json={"error": {"code": 401, "status": "UNAUTHENTICATED"}})
        return httpx.Response(200, json={"ok": True})

    server = FakeServer(api)
    with server.client() as client:
        assert client.get("/x") == {"ok": True}
    assert server.tokens_issued == 2


def test_client_gives_up_after_a_second_401() -> None:
    """If the fresh token is refused too, the caller sees UNAUTHENTICATED."""
    unauthenticated = {"error": {"code": 401, "message": "no", "status": "UNAUTHENTICATED"}}
    server = FakeServer(lambda r: httpx.Response(401, json=unauthenticated))
    with server.client() as client, pytest.raises(ClientError, match=r"^UNAUTHENTICATED \(401\)"):
        client.get("/x")
    assert server.tokens_issued == 2


def test_empty_body_is_an_empty_object_and_non_json_is_an_error() -> None:
    """An empty success body reads as {}; a success body that is not JSON is a ClientError."""
    server = FakeServer(
        lambda r: httpx.Response(200) if r.url.path == "/empty" else httpx.Response(200, text="hi")
    )
    with server.client() as client:
        assert client.delete("/empty") == {}
        with pytest.raises(ClientError, match="is it a tokensmith server"):
            client.get("/html")


def test_token_endpoint_error_is_one_line() -> None:
    """A refused refresh token surfaces the token endpoint's RFC 6749 error."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401,
            json={
                "error": "invalid_client",
                "error_description": "The OAuth client was not found.",
            },
        )

    client = Client(BASE, owner_credentials(), transport=httpx.MockTransport(handler))
    with client, pytest.raises(ClientError) as caught:
        client.get("/x")
    assert str(caught.value) == "invalid_client (401): The OAuth client was not found."


def test_unreachable_server_names_its_address() -> None:
    """Nothing listening on the port: a ClientError naming scheme, host and port."""
    url = f"http://127.0.0.1:{free_port()}"
    credentials = AuthorizedUserCredentials("c", "s", "r", f"{url}/token")
    with Client(url, credentials) as client, pytest.raises(ClientError) as caught:
        client.get("/v1/projects/p/serviceAccounts")
    assert str(caught.value).startswith(f"cannot reach tokensmith at {url}: ")
    assert "\n" not in str(caught.value)


# credentials files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        ("[]", "does not hold a JSON object"),
        ('{"type": "external_account"}', "has type 'external_account'; expected"),
        ('{"type": "authorized_user", "client_id": "c"}', "has no 'client_secret'"),
        (
            json.dumps(
                {
                    "type": "service_account",
                    "private_key": "not a key",
                    "client_email": "a@p.iam.gserviceaccount.com",
                    "private_key_id": "k",
                    "token_uri": f"{BASE}/token",
                }
            ),
            "private_key is not a readable PEM private key",
        ),
    ],
)
def test_unusable_credentials_files_are_explained(
    tmp_path: Path, content: str | None, message: str
) -> None:
    """Each problem with a credentials file is a ClientError that names the file and the fix."""
    path = tmp_path / "creds.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ClientError) as caught:
        load_credentials(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


# IAM policy edits ---------------------------------------------------------------------------

OWNER = {"role": "roles/owner", "members": ["user:owner@tokensmith.local"]}
CONDITION = {"title": "t", "expression": "request.time < timestamp('2099-01-01T00:00:00Z')"}


@pytest.mark.parametrize(
    ("bindings", "member", "role", "condition", "expected"),
    [
        ([OWNER], "user:a@x.io", "roles/viewer", None,
         [OWNER, {"role": "roles/viewer", "members": ["user:a@x.io"]}]),
        ([OWNER], "user:a@x.io", "roles/owner", None,
         [{"role": "roles/owner", "members": ["user:owner@tokensmith.local", "user:a@x.io"]}]),
        ([OWNER], "user:a@x.io", "roles/owner", CONDITION,
         [OWNER, {"role": "roles/owner", "members": ["user:a@x.io"], "condition": CONDITION}]),
    ],
)  # fmt: skip
def test_with_member_adds_to_the_matching_binding(
    bindings: list[dict[str, Any]],
    member: str,
    role: str,
    condition: dict[str, str] | None,
    expected: list[dict[str, Any]],
) -> None:
    """A member joins the binding of the same role and condition, or a new one."""
    updated = with_member(
        {"version": 1, "etag": "e", "bindings": bindings}, member, role, condition
    )
    assert updated is not None
    assert updated["bindings"] == expected
    assert updated["etag"] == "e"
    assert updated["version"] == (3 if condition else 1)


def test_with_member_already_there_is_no_change() -> None:
    """Granting what is granted (emails compared case-insensitively) changes nothing."""
    assert with_member({"bindings": [OWNER]}, "user:OWNER@tokensmith.local", "roles/owner") is None


def test_without_member_drops_emptied_bindings() -> None:
    """Removal takes the member out of every binding of the role; empty bindings vanish."""
    policy = {
        "etag": "e",
        "bindings": [
            OWNER,
            {"role": "roles/viewer", "members": ["user:a@x.io"]},
            {
                "role": "roles/viewer",
                "members": ["user:a@x.io", "user:b@x.io"],
                "condition": CONDITION,
            },
        ],
    }
    updated = without_member(policy, "user:a@x.io", "roles/viewer")
    assert updated is not None
    assert updated["bindings"] == [
        OWNER,
        {"role": "roles/viewer", "members": ["user:b@x.io"], "condition": CONDITION},
    ]
    assert without_member(policy, "user:c@x.io", "roles/viewer") is None


def test_read_modify_write_retries_aborted_with_backoff() -> None:
    """ABORTED writes are redone from a fresh read, waiting longer each time."""
    reads: list[int] = []
    sleeps: list[float] = []
    outcomes = [ClientError("race", status="ABORTED", code=409)] * 2

    def read() -> dict[str, Any]:
        reads.append(len(reads))
        return {"etag": f"e{len(reads)}"}

    def write(policy: dict[str, Any]) -> dict[str, Any]:
        if outcomes:
            raise outcomes.pop()
        return {"written": policy["etag"]}

    result = read_modify_write(read, write, lambda p: dict(p), sleep=sleeps.append)
    assert result == ({"written": "e3"}, True)
    assert sleeps == [0.1, 0.2]


def test_read_modify_write_gives_up_and_passes_other_errors() -> None:
    """After the last attempt ABORTED is raised; any other error is raised at once."""
    sleeps: list[float] = []

    def aborted(policy: dict[str, Any]) -> dict[str, Any]:
        raise ClientError("race", status="ABORTED", code=409)

    with pytest.raises(ClientError, match="race"):
        read_modify_write(dict, aborted, lambda p: dict(p), attempts=3, sleep=sleeps.append)
    assert len(sleeps) == 2

    def denied(policy: dict[str, Any]) -> dict[str, Any]:
        raise ClientError("no", status="PERMISSION_DENIED", code=403)

    sleeps.clear()
    with pytest.raises(ClientError, match="no"):
        read_modify_write(dict, denied, lambda p: dict(p), sleep=sleeps.append)
    assert sleeps == []


def test_read_modify_write_skips_the_write_when_nothing_changes() -> None:
    """An edit returning None means no write at all, and 'unchanged'."""

    def write(policy: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("must not write")

    assert read_modify_write(lambda: {"etag": "e"}, write, lambda p: None) == ({"etag": "e"}, False)


# org policy edits ---------------------------------------------------------------------------

A, B, C = (
    "a@p.iam.gserviceaccount.com",
    "b@p.iam.gserviceaccount.com",
    "c@p.iam.gserviceaccount.com",
)


@pytest.mark.parametrize(
    ("current", "emails", "expected_list"),
    [
        ({"constraint": LIFETIME_EXTENSION}, [A], {"allowedValues": [A]}),
        ({"listPolicy": {"allowedValues": [A]}, "etag": "e"}, [B, A], {"allowedValues": [A, B]}),
        ({"listPolicy": {"allowedValues": [A], "deniedValues": [B, C]}}, [B],
         {"allowedValues": [A, B], "deniedValues": [C]}),
        ({"listPolicy": {"allValues": "DENY"}}, [A], {"allowedValues": [A]}),
        ({"restoreDefault": {}}, [A], {"allowedValues": [A]}),
    ],
)  # fmt: skip
def test_allowing_merges_with_what_is_set(
    current: dict[str, Any], emails: list[str], expected_list: dict[str, Any]
) -> None:
    """Allowed accounts are added to those already listed and taken off the denied list."""
    updated = allowing(current, emails)
    assert updated is not None
    assert updated["constraint"] == LIFETIME_EXTENSION
    assert updated["listPolicy"] == expected_list
    assert updated.get("etag") == current.get("etag")
    assert "restoreDefault" not in updated


@pytest.mark.parametrize(
    "current",
    [
        {"listPolicy": {"allowedValues": [A.upper(), B]}},
        {"listPolicy": {"allValues": "ALLOW"}},
    ],
)
def test_allowing_what_is_allowed_is_no_change(current: dict[str, Any]) -> None:
    """Accounts already allowed (or all allowed) need no write."""
    assert allowing(current, [A]) is None
