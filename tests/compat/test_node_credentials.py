"""Node google-auth-library (unmodified, pinned in ``tests/compat/node``) against a live server.

COMPAT.md §2b, §4b, §5: ``Impersonated`` with ``endpoint`` posts generateAccessToken,
generateIdToken and signBlob to the server; ``OAuth2Client.verifyIdToken`` fetches the PEM map
named by ``endpoints.oauth2FederatedSignonPemCertsUrl``; ``getTokenInfo`` posts to
``endpoints.tokenInfoUrl``. The source client is the owner's ``authorized_user`` credentials,
refreshed at the server through ``endpoints.oauth2TokenUrl`` (§3b): a Node service-account
client cannot be the source, its token URL is hard-coded to Google.

Each scenario runs ``node impersonate.mjs`` once, which reports every step's result or error as
JSON; the tests check those results and verify each token again from Python. Node gets a
minimal environment whose proxies and metadata address refuse connections, so nothing it sends
can leave loopback.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth.transport.requests import Request
from google.oauth2 import id_token

from tests.compat.conftest import NODE_PROJECT
from tokensmith.testing import LiveServer, owner_access_token

pytestmark = [pytest.mark.node, pytest.mark.slow]

PROJECT = "node-compat-project"
OWNER = "user:owner@tokensmith.local"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
AUDIENCE = "https://svc.example.com"
WRONG_AUDIENCE = "https://other.example.com"
SCOPES = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
]
LIFETIME = 900
BLOB = b"signed by node through tokensmith"
LOOPBACK = "127.0.0.1,localhost,::1"

Impersonate = Callable[[str, list[str]], dict[str, Any]]


@dataclass(frozen=True)
class Accounts:
    """Emails of the module's accounts; grants are TokenCreator on the account itself.

    owner → target; owner → delegate → chained (chained trusts only the delegate);
    nobody → denied.
    """

    target: str
    delegate: str
    chained: str
    denied: str
    unique_ids: dict[str, str]


@pytest.fixture(scope="module")
def server(node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("tokensmith") / "data"
    with LiveServer(data_dir, extra_args=["--project", PROJECT]) as live:
        yield live


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, f"{response.request.url}: {response.text}"
    body: dict[str, Any] = response.json()
    return body


def _grant_token_creator(owner: httpx.Client, member: str, on_email: str) -> None:
    resource = f"/v1/projects/{PROJECT}/serviceAccounts/{on_email}"
    policy = _ok(owner.post(f"{resource}:getIamPolicy", json={}))
    policy.setdefault("bindings", []).append({"role": TOKEN_CREATOR, "members": [member]})
    _ok(owner.post(f"{resource}:setIamPolicy", json={"policy": policy}))


@pytest.fixture(scope="module")
def accounts(server: LiveServer) -> Accounts:
    headers = {"Authorization": f"Bearer {owner_access_token(server)}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10, trust_env=False) as owner:
        created = {
            name: _ok(
                owner.post(
                    f"/v1/projects/{PROJECT}/serviceAccounts", json={"accountId": f"node-{name}"}
                )
            )
            for name in ("target", "delegate", "chained", "denied")
        }
        email = {name: account["email"] for name, account in created.items()}
        _grant_token_creator(owner, OWNER, email["target"])
        _grant_token_creator(owner, OWNER, email["delegate"])
        _grant_token_creator(owner, f"serviceAccount:{email['delegate']}", email["chained"])
    return Accounts(
        target=email["target"],
        delegate=email["delegate"],
        chained=email["chained"],
        denied=email["denied"],
        unique_ids={account["email"]: account["uniqueId"] for account in created.values()},
    )


@pytest.fixture(scope="module")
def impersonate(
    node: str,
    server: LiveServer,
    refusing_address: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Impersonate:
    """``impersonate(target, delegates)`` → the JSON report of ``impersonate.mjs``."""
    owner = json.loads(server.owner_credentials.read_text())
    refuse = f"http://{refusing_address}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path_factory.mktemp("node-home")),
        "HTTP_PROXY": refuse,
        "HTTPS_PROXY": refuse,
        "http_proxy": refuse,
        "https_proxy": refuse,
        "NO_PROXY": LOOPBACK,
        "no_proxy": LOOPBACK,
        "GCE_METADATA_HOST": refusing_address,
        "GCE_METADATA_IP": refusing_address,
        "METADATA_SERVER_DETECTION": "none",
    }

    def run(target: str, delegates: list[str]) -> dict[str, Any]:
        config = {
            "url": server.url,
            "owner": {k: owner[k] for k in ("client_id", "client_secret", "refresh_token")},
            "target": target,
            "delegates": delegates,
            "scopes": SCOPES,
            "lifetime": LIFETIME,
            "audience": AUDIENCE,
            "wrongAudience": WRONG_AUDIENCE,
            "blob": base64.b64encode(BLOB).decode(),
        }
        done = subprocess.run(
            [node, str(NODE_PROJECT / "impersonate.mjs")],
            input=json.dumps(config),
            cwd=NODE_PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    return run


@pytest.fixture(scope="module")
def direct(impersonate: Impersonate, accounts: Accounts) -> dict[str, Any]:
    return impersonate(accounts.target, [])


@pytest.fixture(scope="module")
def chained(impersonate: Impersonate, accounts: Accounts) -> dict[str, Any]:
    return impersonate(accounts.chained, [f"projects/-/serviceAccounts/{accounts.delegate}"])


@pytest.fixture(scope="module")
def denied(impersonate: Impersonate, accounts: Accounts) -> dict[str, Any]:
    return impersonate(accounts.denied, [])


@pytest.fixture
def google_request() -> Iterator[Request]:
    with requests.Session() as session:
        session.trust_env = False
        yield Request(session)


def _ok_step(report: dict[str, Any], name: str) -> Any:
    step = report[name]
    assert "ok" in step, f"{name}: {step['error']}"
    return step["ok"]


def _error_step(report: dict[str, Any], name: str) -> dict[str, Any]:
    step = report[name]
    assert "error" in step, f"{name} succeeded: {step['ok']}"
    error: dict[str, Any] = step["error"]
    return error


def _tokeninfo(server: LiveServer, access_token: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/tokeninfo", params={"access_token": access_token}, trust_env=False
    )
    return _ok(response)


def _verify_blob(
    server: LiveServer, email: str, key_id: str, data: bytes, signature: bytes
) -> None:
    certs = _ok(
        httpx.get(f"{server.url}/service_accounts/v1/metadata/x509/{email}", trust_env=False)
    )
    public = x509.load_pem_x509_certificate(certs[key_id].encode()).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.compat("node-imp-access-token")
def test_impersonated_access_token_is_the_targets(
    server: LiveServer, direct: dict[str, Any], accounts: Accounts
) -> None:
    """Impersonated.getAccessToken returns a token the server takes as the target, as asked."""
    access = _ok_step(direct, "accessToken")

    info = _tokeninfo(server, access["token"])

    assert info["email"] == accounts.target
    assert info["sub"] == accounts.unique_ids[accounts.target]
    assert sorted(info["scope"].split()) == sorted(SCOPES)
    lifetime_ms = access["expiryDate"] - direct["startedAt"]
    assert (LIFETIME - 60) * 1000 <= lifetime_ms <= (LIFETIME + 60) * 1000


@pytest.mark.compat("node-token-info")
def test_get_token_info_reports_scopes_and_expiry(
    direct: dict[str, Any], accounts: Accounts
) -> None:
    """OAuth2Client.getTokenInfo at endpoints.tokenInfoUrl gives the token's scopes and expiry."""
    access = _ok_step(direct, "accessToken")

    info = _ok_step(direct, "tokenInfo")

    assert sorted(info["scopes"]) == sorted(SCOPES)
    assert info["email"] == accounts.target
    assert abs(info["expiry_date"] - access["expiryDate"]) <= 5000


@pytest.mark.compat("node-imp-id-token")
@pytest.mark.compat("node-verify-id-token")
def test_fetch_id_token_verifies_with_verify_id_token(
    server: LiveServer, direct: dict[str, Any], accounts: Accounts, google_request: Request
) -> None:
    """fetchIdToken(includeEmail) → a token verifyIdToken accepts, as the target, for the aud."""
    payload = _ok_step(direct, "verified")

    assert payload["aud"] == AUDIENCE
    assert payload["iss"] == "https://accounts.google.com"
    assert payload["sub"] == accounts.unique_ids[accounts.target]
    assert payload["email"] == accounts.target
    assert payload["email_verified"] is True
    assert payload["azp"] == accounts.target  # Node asks for useEmailAzp with includeEmail
    claims = id_token.verify_token(
        _ok_step(direct, "idToken"),
        google_request,
        audience=AUDIENCE,
        certs_url=f"{server.url}/oauth2/v1/certs",
    )
    assert claims == payload


@pytest.mark.compat("node-imp-id-token")
def test_fetch_id_token_without_email(direct: dict[str, Any], accounts: Accounts) -> None:
    """fetchIdToken with includeEmail false → a verified token with no email, azp the id."""
    payload = _ok_step(direct, "verifiedWithoutEmail")

    assert payload["aud"] == AUDIENCE
    assert payload["sub"] == accounts.unique_ids[accounts.target]
    assert payload["azp"] == accounts.unique_ids[accounts.target]
    assert "email" not in payload


@pytest.mark.compat("node-verify-id-token")
def test_verify_id_token_rejects_a_wrong_audience(direct: dict[str, Any]) -> None:
    """verifyIdToken refuses a valid token when the caller expects another audience."""
    _ok_step(direct, "verified")

    error = _error_step(direct, "verifiedWrongAudience")

    assert error["message"] == "Wrong recipient, payload audience != requiredAudience"


@pytest.mark.compat("node-verify-id-token")
def test_verify_id_token_rejects_a_forged_signature(direct: dict[str, Any]) -> None:
    """verifyIdToken refuses one token's claims carrying another token's signature."""
    _ok_step(direct, "idTokenWithoutEmail")

    error = _error_step(direct, "verifiedSpliced")

    assert error["message"].startswith("Invalid token signature")


@pytest.mark.compat("node-imp-sign")
def test_sign_blob_verifies_against_published_x509(
    server: LiveServer, direct: dict[str, Any], accounts: Accounts
) -> None:
    """Impersonated.sign returns a signature that verifies with the target's published key."""
    signed = _ok_step(direct, "signBlob")

    _verify_blob(
        server, accounts.target, signed["keyId"], BLOB, base64.b64decode(signed["signedBlob"])
    )


@pytest.mark.compat("node-imp-delegates")
def test_delegates_reach_a_target_only_the_delegate_may_impersonate(
    server: LiveServer, chained: dict[str, Any], accounts: Accounts, google_request: Request
) -> None:
    """With delegates [d], access token, ID token and signature are all the chained target's."""
    info = _tokeninfo(server, _ok_step(chained, "accessToken")["token"])
    assert info["email"] == accounts.chained

    payload = _ok_step(chained, "verified")
    assert payload["email"] == accounts.chained
    assert payload["sub"] == accounts.unique_ids[accounts.chained]

    signed = _ok_step(chained, "signBlob")
    _verify_blob(
        server, accounts.chained, signed["keyId"], BLOB, base64.b64decode(signed["signedBlob"])
    )


def test_denied_impersonation_reports_permission_denied(denied: dict[str, Any]) -> None:
    """Without a grant every call is a 403 with Google's message; getAccessToken names it."""
    access = _error_step(denied, "accessToken")
    assert access["code"] == 403
    assert access["message"] == (
        "PERMISSION_DENIED: unable to impersonate: Permission "
        "'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
    )

    for step, permission in (
        ("idToken", "iam.serviceAccounts.getOpenIdToken"),
        ("signBlob", "iam.serviceAccounts.signBlob"),
    ):
        error = _error_step(denied, step)
        assert error["code"] == 403
        assert error["status"] == "PERMISSION_DENIED"
        assert error["message"] == (
            f"Permission '{permission}' denied on resource (or it may not exist)."
        )
