"""``tokensmith.client`` against a real server: both credential kinds, token caching, and the
policy read-modify-write surviving a concurrent writer.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tokensmith.client import (
    Client,
    ClientError,
    ServiceAccountCredentials,
    credentials_from_info,
    load_credentials,
)
from tokensmith.client.credentials import GOOGLE_TOKEN_AUDIENCE, JWT_BEARER, REFRESH_MARGIN
from tokensmith.client.policy import get_iam_policy, update_iam_policy, with_member
from tokensmith.clock import FixedClock, SystemClock
from tokensmith.testing import LiveServer

pytestmark = pytest.mark.slow

PROJECT = "/v1/projects/tokensmith-local"


class CountingHttp:
    """An httpx.Client that remembers every form it sent to ``/token`` and every answer."""

    def __init__(self) -> None:
        self.token_requests: list[dict[str, str]] = []
        self.token_responses: list[dict[str, Any]] = []
        self.http = httpx.Client(
            event_hooks={"request": [self._record], "response": [self._record_response]}
        )

    def _record_response(self, response: httpx.Response) -> None:
        if response.request.url.path == "/token":
            response.read()
            self.token_responses.append(response.json())

    def _record(self, request: httpx.Request) -> None:
        if request.url.path == "/token":
            request.read()
            form = urllib.parse.parse_qs(request.content.decode())
            self.token_requests.append({k: v[0] for k, v in form.items()})


@pytest.fixture
def counting() -> Iterator[CountingHttp]:
    counter = CountingHttp()
    yield counter
    counter.http.close()


@pytest.fixture(scope="module")
def owner(live: LiveServer) -> Iterator[Client]:
    with Client(live.url, load_credentials(live.owner_credentials)) as client:
        yield client


def key_file_for(owner: Client, account_id: str) -> dict[str, Any]:
    account = owner.post(f"{PROJECT}/serviceAccounts", {"accountId": account_id})
    key = owner.post(f"/v1/projects/-/serviceAccounts/{account['email']}/keys", {})
    info: dict[str, Any] = json.loads(base64.b64decode(key["privateKeyData"]))
    return info


def test_owner_file_buys_a_token_the_api_accepts(live: LiveServer) -> None:
    """The owner's authorized_user file refreshes into a token that lists accounts."""
    with Client(live.url, load_credentials(live.owner_credentials)) as client:
        listed = client.get(f"{PROJECT}/serviceAccounts")
    assert isinstance(listed.get("accounts", []), list)


def test_refresh_grant_is_cached_until_shortly_before_expiry(
    live: LiveServer, counting: CountingHttp
) -> None:
    """One refresh per token lifetime: a new one only within REFRESH_MARGIN of expiry."""
    clock = FixedClock(SystemClock().now())
    credentials = load_credentials(live.owner_credentials, clock=clock)
    first = credentials.token(counting.http)
    assert credentials.token(counting.http) == first
    lifetime = counting.token_responses[0]["expires_in"]
    clock.advance(lifetime - REFRESH_MARGIN - 1)
    assert credentials.token(counting.http) == first
    assert len(counting.token_requests) == 1
    assert counting.token_requests[0]["grant_type"] == "refresh_token"
    clock.advance(2)
    credentials.token(counting.http)
    assert len(counting.token_requests) == 2


def test_invalidate_forces_a_new_token(live: LiveServer, counting: CountingHttp) -> None:
    """After invalidate(), the next token() asks the token endpoint again."""
    credentials = load_credentials(live.owner_credentials)
    credentials.token(counting.http)
    credentials.invalidate()
    credentials.token(counting.http)
    assert len(counting.token_requests) == 2


def test_service_account_key_uses_the_jwt_bearer_grant(
    owner: Client, counting: CountingHttp
) -> None:
    """A key file signs an RS256 assertion (kid, iss, Google's aud, 1 h) and gets a token."""
    info = key_file_for(owner, "client-jwt")
    credentials = credentials_from_info(info)
    assert isinstance(credentials, ServiceAccountCredentials)
    token = credentials.token(counting.http)
    assert credentials.token(counting.http) == token
    [form] = counting.token_requests
    assert form["grant_type"] == JWT_BEARER
    header = jwt.get_unverified_header(form["assertion"])
    assert (header["alg"], header["kid"]) == ("RS256", info["private_key_id"])
    claims = jwt.decode(form["assertion"], options={"verify_signature": False})
    assert claims["iss"] == info["client_email"]
    assert claims["aud"] == GOOGLE_TOKEN_AUDIENCE
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert claims["exp"] - claims["iat"] == 3600


def test_service_account_token_is_accepted_by_the_api(live: LiveServer, owner: Client) -> None:
    """The jwt-bearer token authenticates as the account: denied until granted, then allowed."""
    info = key_file_for(owner, "client-caller")
    with Client(live.url, credentials_from_info(info)) as client:
        with pytest.raises(ClientError) as caught:
            client.get(f"{PROJECT}/serviceAccounts")
        assert caught.value.status == "PERMISSION_DENIED"
        resource = f"{PROJECT}/serviceAccounts/{info['client_email']}"
        update_iam_policy(
            owner,
            resource,
            lambda p: with_member(p, f"serviceAccount:{info['client_email']}", "roles/viewer"),
        )
        assert client.get(resource)["email"] == info["client_email"]


def test_wrong_refresh_token_is_a_token_endpoint_error(live: LiveServer) -> None:
    """A refresh token the server does not know is the server's invalid_grant, one line."""
    info = json.loads(live.owner_credentials.read_text())
    info["refresh_token"] = "not-a-refresh-token"
    with httpx.Client() as http, pytest.raises(ClientError) as caught:
        credentials_from_info(info).token(http)
    assert caught.value.status == "invalid_grant"
    assert "\n" not in str(caught.value)


def test_policy_update_survives_a_concurrent_writer(owner: Client) -> None:
    """A write that loses an etag race (ABORTED) is redone on a fresh read; both grants stay."""
    ours, theirs = "user:ours@example.com", "user:theirs@example.com"
    interfered: list[bool] = []
    sleeps: list[float] = []

    def edit(policy: dict[str, Any]) -> dict[str, Any] | None:
        if not interfered:
            interfered.append(True)
            update_iam_policy(owner, PROJECT, lambda p: with_member(p, theirs, "roles/viewer"))
        return with_member(policy, ours, "roles/viewer")

    _, changed = update_iam_policy(owner, PROJECT, edit, sleep=sleeps.append)
    assert changed
    assert len(sleeps) == 1
    viewers = [b for b in get_iam_policy(owner, PROJECT)["bindings"] if b["role"] == "roles/viewer"]
    members = {m for b in viewers for m in b["members"]}
    assert {ours, theirs} <= members
