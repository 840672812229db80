"""End-to-end smoke test of the in-process server: owner creates an account, a key, a policy."""

from __future__ import annotations

import base64
import json

from tests.conftest import Api


def test_owner_creates_account_and_key(owner: Api) -> None:
    """The owner can create a service account and a key whose file points at this server."""
    created = owner.post(
        "/v1/projects/tokensmith-local/serviceAccounts",
        json={"accountId": "builder", "serviceAccount": {"displayName": "B"}},
    )
    assert created.status_code == 200, created.text
    account = created.json()
    assert account["email"] == "builder@tokensmith-local.iam.gserviceaccount.com"
    assert len(account["uniqueId"]) == 21
    key = owner.post(f"/v1/projects/-/serviceAccounts/{account['email']}/keys", json={})
    assert key.status_code == 200, key.text
    key_file = json.loads(base64.b64decode(key.json()["privateKeyData"]))
    assert key_file["token_uri"] == "http://127.0.0.1:18080/token"
    assert key_file["client_email"] == account["email"]


def test_missing_credentials_is_unauthenticated(anonymous: Api) -> None:
    """A call without a bearer token gets 401 UNAUTHENTICATED in Google's error shape."""
    response = anonymous.get("/v1/projects/tokensmith-local/serviceAccounts")
    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"
