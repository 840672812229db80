"""Unmodified google-auth, in a subprocess, reaching tokensmith only through the proxy for the
hosts it hard-codes (COMPAT.md §2a, §3a, §4a, §6): ``verify_oauth2_token`` (certificates from
www.googleapis.com), impersonated ``IDTokenCredentials`` and ``sign_bytes``
(iamcredentials.googleapis.com), an authorized_user file (oauth2.googleapis.com), and a key
file of the universe domain example.test (iamcredentials.example.test).

The subprocess has ``HTTPS_PROXY`` pointing at the proxy and ``REQUESTS_CA_BUNDLE`` at the
local CA's bundle; the proxy connects to the live server and nowhere else, so nothing in these
tests can reach a Google host.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.proxy.conftest import ProxyThread, run_google_auth, signed_by_one_of, tunnelled_hosts
from tokensmith.proxy import LocalCA
from tokensmith.testing import LiveServer, owner_access_token

pytestmark = pytest.mark.slow

PROJECT = "tokensmith-local"
AUDIENCE = "https://service.example.test/"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


class Owner:
    """The live server's owner over plain HTTP (no proxy): sets up accounts and grants."""

    def __init__(self, live: LiveServer) -> None:
        self.http = httpx.Client(
            base_url=live.url,
            headers={"Authorization": f"Bearer {owner_access_token(live)}"},
            timeout=10,
            trust_env=False,
        )

    def call(self, path: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
        response = self.http.request(method, path, json=body)
        assert response.status_code == 200, f"{path}: {response.text}"
        return response.json()

    def account(self, account_id: str) -> str:
        created = self.call(f"/v1/projects/{PROJECT}/serviceAccounts", {"accountId": account_id})
        return str(created["email"])

    def grant(self, email: str, role: str, member: str) -> None:
        resource = f"/v1/projects/{PROJECT}/serviceAccounts/{email}"
        policy = self.call(f"{resource}:getIamPolicy", {})
        policy.setdefault("bindings", []).append({"role": role, "members": [member]})
        self.call(f"{resource}:setIamPolicy", {"policy": policy})


@pytest.fixture(scope="module")
def owner(live: LiveServer) -> Iterator[Owner]:
    admin = Owner(live)
    yield admin
    admin.http.close()


@pytest.fixture(scope="module")
def target(owner: Owner, live: LiveServer) -> str:
    """A service account the owner may impersonate (Token Creator on it)."""
    email = owner.account("proxy-target")
    owner_email = json.loads(live.owner_credentials.read_text())["account"]
    owner.grant(email, "roles/iam.serviceAccountTokenCreator", f"user:{owner_email}")
    return email


@pytest.mark.compat("py-verify-oauth2-token")
def test_verify_oauth2_token_fetches_certs_through_the_proxy(
    proxy: ProxyThread,
    ca: LocalCA,
    owner: Owner,
    target: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``verify_oauth2_token`` (certs hard-coded at www.googleapis.com, issuer
    accounts.google.com) accepts a generateIdToken token and rejects it for another audience."""
    caplog.set_level(logging.DEBUG, logger="tokensmith.proxy")
    token = owner.call(
        f"/v1/projects/-/serviceAccounts/{target}:generateIdToken",
        {"audience": AUDIENCE, "includeEmail": True},
    )["token"]
    result = run_google_auth(
        """
        from google.auth.transport.requests import Request
        from google.oauth2 import id_token

        claims = id_token.verify_oauth2_token(ARGS["token"], Request(), ARGS["audience"])
        try:
            id_token.verify_oauth2_token(ARGS["token"], Request(), "https://other.example/")
            wrong_audience = "accepted"
        except ValueError as exc:
            wrong_audience = str(exc)
        print(json.dumps({"claims": claims, "wrong_audience": wrong_audience}))
        """,
        proxy,
        ca,
        token=token,
        audience=AUDIENCE,
    )
    claims = result["claims"]
    assert claims["aud"] == AUDIENCE
    assert claims["email"] == target
    assert claims["iss"] == "https://accounts.google.com"
    assert "audience" in result["wrong_audience"].lower()
    assert "www.googleapis.com" in tunnelled_hosts(caplog)


@pytest.mark.compat("py-imp-id-token")
@pytest.mark.compat("py-imp-sign-bytes")
def test_impersonated_id_token_and_sign_bytes(
    proxy: ProxyThread,
    ca: LocalCA,
    live: LiveServer,
    target: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An owner's authorized_user file as the source (its refresh goes to
    oauth2.googleapis.com), impersonated ``IDTokenCredentials`` and ``sign_bytes`` (to
    iamcredentials.googleapis.com, not overridable) all work through the proxy."""
    caplog.set_level(logging.DEBUG, logger="tokensmith.proxy")
    message = b"signed through the proxy"
    result = run_google_auth(
        """
        import base64
        from google.auth import impersonated_credentials
        from google.auth.transport.requests import Request
        from google.oauth2 import credentials, id_token

        request = Request()
        source = credentials.Credentials.from_authorized_user_file(ARGS["owner"])
        target = impersonated_credentials.Credentials(
            source, ARGS["target"], [ARGS["scope"]], lifetime=600
        )
        ids = impersonated_credentials.IDTokenCredentials(
            target, target_audience=ARGS["audience"], include_email=True
        )
        ids.refresh(request)
        claims = id_token.verify_oauth2_token(ids.token, request, ARGS["audience"])
        signature = target.sign_bytes(ARGS["message"].encode())
        print(json.dumps({
            "claims": claims,
            "signature": base64.b64encode(signature).decode(),
            "signer_email": target.signer_email,
        }))
        """,
        proxy,
        ca,
        owner=str(live.owner_credentials),
        target=target,
        scope=CLOUD_PLATFORM,
        audience=AUDIENCE,
        message=message.decode(),
    )
    assert result["claims"]["email"] == target
    assert result["claims"]["aud"] == AUDIENCE
    assert result["signer_email"] == target
    certs = httpx.get(
        f"{live.url}/service_accounts/v1/metadata/x509/{target}", trust_env=False
    ).json()
    assert signed_by_one_of(certs.values(), message, base64.b64decode(result["signature"]))
    assert {"oauth2.googleapis.com", "iamcredentials.googleapis.com"} <= tunnelled_hosts(caplog)


@pytest.mark.compat("py-sa-universe-domain")
def test_universe_domain_key_reaches_its_iamcredentials_host(
    proxy: ProxyThread,
    ca: LocalCA,
    owner: Owner,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key file of universe example.test self-signs its bearer token and asks
    iamcredentials.example.test for its ID token; the proxy serves that host too."""
    caplog.set_level(logging.DEBUG, logger="tokensmith.proxy")
    email = owner.account("universe-sa")
    # Outside googleapis.com, google-auth has the account mint its own ID token through
    # generateIdToken, so the account needs that permission on itself.
    owner.grant(email, "roles/iam.serviceAccountOpenIdTokenCreator", f"serviceAccount:{email}")
    created = owner.call(f"/v1/projects/-/serviceAccounts/{email}/keys", {})
    key_file = json.loads(base64.b64decode(created["privateKeyData"]))
    key_file["universe_domain"] = "example.test"
    path = tmp_path / "universe-key.json"
    path.write_text(json.dumps(key_file))
    path.chmod(0o600)
    result = run_google_auth(
        """
        from google.auth.transport.requests import Request
        from google.oauth2 import id_token, service_account

        request = Request()
        ids = service_account.IDTokenCredentials.from_service_account_file(
            ARGS["key"], target_audience=ARGS["audience"]
        )
        ids.refresh(request)
        print(json.dumps(id_token.verify_oauth2_token(ids.token, request, ARGS["audience"])))
        """,
        proxy,
        ca,
        key=str(path),
        audience=AUDIENCE,
    )
    assert result["email"] == email
    assert "iamcredentials.example.test" in tunnelled_hosts(caplog)


def test_refused_host_fails_in_requests_as_a_proxy_error(proxy: ProxyThread, ca: LocalCA) -> None:
    """A host tokensmith does not serve fails in requests as a refused tunnel (403), not a
    connection to the real service."""
    result = run_google_auth(
        """
        import requests

        try:
            requests.get("https://storage.googleapis.com/b/o", timeout=10)
            outcome = "connected"
        except requests.exceptions.ProxyError as exc:
            outcome = str(exc)
        print(json.dumps(outcome))
        """,
        proxy,
        ca,
    )
    assert "403" in result
