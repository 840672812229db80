"""The real google-auth library (unmodified) administering and using a live tokensmith server.

The owner authenticates with the ``authorized_user`` credentials the server wrote (google-auth
ignores ``token_uri`` in such files, so it goes to the constructor, COMPAT.md §3a); service
accounts authenticate with key files the server issued, whose ``token_uri`` google-auth honours.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2 import credentials as user_credentials
from google.oauth2 import id_token, service_account

from tests.compat.conftest import CLOUD_PLATFORM, PROJECT, Admin, write_key_file
from tokensmith.testing import LiveServer

pytestmark = pytest.mark.slow

CONCURRENT_POLICY_CHANGES = (
    "There were concurrent policy changes. Please retry the whole read-modify-write with "
    "exponential backoff."
)
AUDIENCE = "https://svc.example.com"


@pytest.fixture(scope="module")
def owner_session(live: LiveServer) -> Iterator[AuthorizedSession]:
    info = json.loads(live.owner_credentials.read_text())
    creds = user_credentials.Credentials(
        None,
        refresh_token=info["refresh_token"],
        token_uri=info["token_uri"],
        client_id=info["client_id"],
        client_secret=info["client_secret"],
    )
    with AuthorizedSession(creds) as session:
        yield session


@pytest.fixture
def google_request() -> Iterator[Request]:
    with requests.Session() as session:
        yield Request(session)


def _error(response: requests.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_owner_creates_account_key_and_updates_policy(
    live: LiveServer, owner_session: AuthorizedSession
) -> None:
    """The owner's google-auth session creates an account and a key, and edits the policy."""
    api = f"{live.url}/v1/projects/{PROJECT}"
    created = owner_session.post(
        f"{api}/serviceAccounts",
        json={"accountId": "ga-builder", "serviceAccount": {"displayName": "Builder"}},
    )
    assert created.status_code == 200, created.text
    account = created.json()
    assert account["email"] == f"ga-builder@{PROJECT}.iam.gserviceaccount.com"
    assert account["displayName"] == "Builder"
    assert account["uniqueId"].isdigit()

    key = owner_session.post(f"{api}/serviceAccounts/{account['email']}/keys", json={})
    assert key.status_code == 200, key.text
    assert key.json()["keyType"] == "USER_MANAGED"

    read = owner_session.post(f"{api}:getIamPolicy", json={})
    assert read.status_code == 200, read.text
    policy = read.json()
    assert {"role": "roles/owner", "members": ["user:owner@tokensmith.local"]} in policy["bindings"]
    binding = {"role": "roles/viewer", "members": [f"serviceAccount:{account['email']}"]}
    written = owner_session.post(
        f"{api}:setIamPolicy",
        json={"policy": {**policy, "bindings": [*policy["bindings"], binding]}},
    )
    assert written.status_code == 200, written.text
    assert binding in written.json()["bindings"]
    assert written.json()["etag"] != policy["etag"]

    stale = owner_session.post(
        f"{api}:setIamPolicy", json={"policy": {**policy, "bindings": policy["bindings"]}}
    )
    assert stale.status_code == 409, stale.text
    assert _error(stale) == {
        "code": 409,
        "message": CONCURRENT_POLICY_CHANGES,
        "status": "ABORTED",
    }
    after = owner_session.post(f"{api}:getIamPolicy", json={}).json()
    assert after["etag"] == written.json()["etag"]
    assert binding in after["bindings"]


@pytest.mark.compat("py-sa-key-access-token")
def test_key_file_is_denied_until_granted(live: LiveServer, admin: Admin, tmp_path: Path) -> None:
    """A key file's account gets 403 with the missing permission, then succeeds once granted."""
    caller = admin.create_account("ga-reader")
    target = admin.create_account("ga-target")
    key_file = admin.create_key(caller["email"])
    assert key_file["token_uri"] == f"{live.url}/token"
    creds = service_account.Credentials.from_service_account_file(
        str(write_key_file(key_file, tmp_path)), scopes=[CLOUD_PLATFORM]
    )
    url = f"{live.url}/v1/projects/{PROJECT}/serviceAccounts/{target['email']}"
    with AuthorizedSession(creds) as session:
        denied = session.get(url)
        assert denied.status_code == 403, denied.text
        error = _error(denied)
        assert error["status"] == "PERMISSION_DENIED"
        assert error["message"] == (
            "Permission 'iam.serviceAccounts.get' denied on resource (or it may not exist)."
        )
        assert error["details"] == [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "iam.googleapis.com",
                "metadata": {"permission": "iam.serviceAccounts.get"},
            }
        ]

        admin.grant("roles/iam.serviceAccountViewer", f"serviceAccount:{caller['email']}")

        allowed = session.get(url)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["email"] == target["email"]
        assert allowed.json()["uniqueId"] == target["uniqueId"]


@pytest.mark.compat("py-sa-key-id-token")
@pytest.mark.compat("py-verify-token-pem")
def test_key_file_id_token_verifies_against_server_certs(
    live: LiveServer, admin: Admin, tmp_path: Path, google_request: Request
) -> None:
    """IDTokenCredentials from a key file get an ID token that verify_token accepts."""
    account = admin.create_account("ga-invoker")
    key_path = write_key_file(admin.create_key(account["email"]), tmp_path)
    creds = service_account.IDTokenCredentials.from_service_account_file(
        str(key_path), target_audience=AUDIENCE
    )
    creds.refresh(google_request)
    certs_url = f"{live.url}/oauth2/v1/certs"

    claims = id_token.verify_token(
        creds.token, google_request, audience=AUDIENCE, certs_url=certs_url
    )

    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == account["uniqueId"]
    assert claims["email"] == account["email"]
    assert claims["iss"] == "https://accounts.google.com"
    assert creds.expiry is not None
    with pytest.raises(ValueError, match="audience"):
        id_token.verify_token(
            creds.token, google_request, audience="https://other.example.com", certs_url=certs_url
        )
