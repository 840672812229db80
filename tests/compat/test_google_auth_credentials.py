"""Real google-auth (Python), unmodified, against a live server: impersonation and verification.

google-auth's documented override for impersonated access tokens is ``iam_endpoint_override``;
ID-token verification takes ``certs_url``. Everything here goes over a real socket to a real
``tokensmith serve`` process.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import google.auth.crypt
import google.auth.jwt
import jwt as pyjwt
import pytest
import requests
from google.auth import impersonated_credentials
from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2 import id_token, service_account

from tokensmith.testing import LiveServer, owner_access_token

PROJECT = "tokensmith-local"
CLOUD = "https://www.googleapis.com/auth/cloud-platform"
CREATOR = "roles/iam.serviceAccountTokenCreator"


def email(account_id: str) -> str:
    return f"{account_id}@{PROJECT}.iam.gserviceaccount.com"


class Deployment:
    """A live server with a source account (key file on disk) and grants to impersonate."""

    def __init__(self, server: LiveServer, tmp: Path) -> None:
        self.server = server
        self.owner = requests.Session()
        self.owner.headers["Authorization"] = f"Bearer {owner_access_token(server)}"
        for account_id in ("source", "target", "hop-one", "hop-two"):
            self.api("POST", f"/v1/projects/{PROJECT}/serviceAccounts", {"accountId": account_id})
        key = self.api("POST", f"/v1/projects/-/serviceAccounts/{email('source')}/keys", {})
        self.key_path = tmp / "source.json"
        self.key_path.write_bytes(base64.b64decode(key["privateKeyData"]))
        self.grant("target", "source")
        self.grant("hop-one", "source")
        self.grant("hop-two", "hop-one")
        self.grant("target", "hop-two")

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.owner.request(method, self.server.url + path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def grant(self, resource: str, member: str) -> None:
        path = f"/v1/projects/-/serviceAccounts/{email(resource)}"
        policy = self.api("POST", f"{path}:getIamPolicy", {})
        policy.setdefault("bindings", []).append(
            {"role": CREATOR, "members": [f"serviceAccount:{email(member)}"]}
        )
        self.api("POST", f"{path}:setIamPolicy", {"policy": policy})

    def source(self) -> service_account.Credentials:
        return service_account.Credentials.from_service_account_file(
            str(self.key_path), scopes=[CLOUD]
        )

    def endpoint(self, target: str, method: str = "generateAccessToken") -> str:
        return f"{self.server.url}/v1/projects/-/serviceAccounts/{email(target)}:{method}"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("google-auth-credentials")
    with LiveServer(tmp / "data") as server:
        yield Deployment(server, tmp)


def tokeninfo(deployment: Deployment, token: str) -> dict[str, Any]:
    response = requests.get(
        f"{deployment.server.url}/tokeninfo", params={"access_token": token}, timeout=10
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.compat("py-imp-access-token")
def test_impersonated_access_token(deployment: Deployment) -> None:
    """impersonated_credentials with iam_endpoint_override gets a token that acts as the target."""
    creds = impersonated_credentials.Credentials(
        source_credentials=deployment.source(),
        target_principal=email("target"),
        target_scopes=[CLOUD],
        lifetime=600,
        iam_endpoint_override=deployment.endpoint("target"),
    )
    creds.refresh(Request())
    info = tokeninfo(deployment, creds.token)
    assert info["email"] == email("target")
    assert info["scope"] == CLOUD
    assert 590 <= int(info["expires_in"]) <= 600
    assert creds.expiry is not None


@pytest.mark.compat("py-imp-delegates")
def test_impersonated_access_token_through_a_chain(deployment: Deployment) -> None:
    """With delegates source → hop-one → hop-two → target the chain is honoured."""
    creds = impersonated_credentials.Credentials(
        source_credentials=deployment.source(),
        target_principal=email("target"),
        target_scopes=[CLOUD],
        delegates=[f"projects/-/serviceAccounts/{email('hop-one')}", email("hop-two")],
        iam_endpoint_override=deployment.endpoint("target"),
    )
    creds.refresh(Request())
    assert tokeninfo(deployment, creds.token)["email"] == email("target")


def test_impersonation_denied_is_a_refresh_error(deployment: Deployment) -> None:
    """Without a grant, google-auth raises RefreshError carrying Google's denial message."""
    from google.auth.exceptions import RefreshError

    creds = impersonated_credentials.Credentials(
        source_credentials=deployment.source(),
        target_principal=email("hop-two"),
        target_scopes=[CLOUD],
        iam_endpoint_override=deployment.endpoint("hop-two"),
    )
    with pytest.raises(RefreshError) as raised:
        creds.refresh(Request())
    error = json.loads(raised.value.args[1])["error"]
    assert error["status"] == "PERMISSION_DENIED"
    assert error["message"] == (
        "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
    )


def generate_id_token(deployment: Deployment, audience: str, **extra: Any) -> str:
    session = AuthorizedSession(deployment.source())
    response = session.post(
        deployment.endpoint("target", "generateIdToken"), json={"audience": audience, **extra}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


@pytest.mark.compat("py-verify-token-pem")
def test_id_token_verifies_with_pem_certs(deployment: Deployment) -> None:
    """google.oauth2.id_token.verify_token accepts the token against our /oauth2/v1/certs."""
    token = generate_id_token(deployment, "https://svc.example", includeEmail=True)
    claims = id_token.verify_token(
        token,
        Request(),
        audience="https://svc.example",
        certs_url=f"{deployment.server.url}/oauth2/v1/certs",
        clock_skew_in_seconds=5,
    )
    target = deployment.api("GET", f"/v1/projects/-/serviceAccounts/{email('target')}")
    assert claims["sub"] == target["uniqueId"]
    assert claims["email"] == email("target")
    assert claims["iss"] == "https://accounts.google.com"


@pytest.mark.compat("py-verify-token-jwks")
def test_id_token_verifies_with_jwks(deployment: Deployment) -> None:
    """The JWKS path (PyJWT under google-auth, and PyJWT's own client) verifies the token."""
    token = generate_id_token(deployment, "https://jwks.example")
    certs_url = f"{deployment.server.url}/oauth2/v3/certs"
    claims = id_token.verify_token(
        token,
        Request(),
        audience="https://jwks.example",
        certs_url=certs_url,
        clock_skew_in_seconds=5,
    )
    assert claims["aud"] == "https://jwks.example"
    signing_key = pyjwt.PyJWKClient(certs_url).get_signing_key_from_jwt(token)
    decoded = pyjwt.decode(
        token, signing_key.key, algorithms=["RS256"], audience="https://jwks.example", leeway=5
    )
    assert decoded["sub"] == claims["sub"]


def test_id_token_for_wrong_audience_is_rejected(deployment: Deployment) -> None:
    """A verifier expecting another audience refuses the token."""
    token = generate_id_token(deployment, "https://one.example")
    with pytest.raises(ValueError, match="audience"):
        id_token.verify_token(
            token,
            Request(),
            audience="https://two.example",
            certs_url=f"{deployment.server.url}/oauth2/v1/certs",
            clock_skew_in_seconds=5,
        )


def test_sign_blob_verifies_against_account_x509(deployment: Deployment) -> None:
    """A signBlob signature verifies with the x509 cert published for its keyId."""
    session = AuthorizedSession(deployment.source())
    payload = b"bytes to sign \x00\xff"
    response = session.post(
        deployment.endpoint("target", "signBlob"),
        json={"payload": base64.b64encode(payload).decode()},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    certs = requests.get(
        f"{deployment.server.url}/service_accounts/v1/metadata/x509/{email('target')}", timeout=10
    ).json()
    verifier = google.auth.crypt.RSAVerifier.from_string(certs[body["keyId"]])
    assert verifier.verify(payload, base64.b64decode(body["signedBlob"]))
    assert not verifier.verify(payload + b"!", base64.b64decode(body["signedBlob"]))


def test_sign_jwt_verifies_against_account_jwk(deployment: Deployment) -> None:
    """A signJwt result verifies against /service_accounts/v1/metadata/jwk/{EMAIL}."""
    session = AuthorizedSession(deployment.source())
    # The server's clock, from its Date header (tests never read the wall clock themselves).
    date = requests.get(f"{deployment.server.url}/healthz", timeout=10).headers["date"]
    now = int(parsedate_to_datetime(date).timestamp())
    claims = {
        "iss": email("target"),
        "aud": "https://api.example",
        "sub": "x",
        "iat": now,
        "exp": now + 600,
    }
    response = session.post(
        deployment.endpoint("target", "signJwt"), json={"payload": json.dumps(claims)}
    )
    assert response.status_code == 200, response.text
    signed = response.json()["signedJwt"]
    jwks = f"{deployment.server.url}/service_accounts/v1/metadata/jwk/{email('target')}"
    key = pyjwt.PyJWKClient(jwks).get_signing_key_from_jwt(signed)
    decoded = pyjwt.decode(signed, key.key, algorithms=["RS256"], audience="https://api.example")
    assert decoded == claims
    pem_certs = requests.get(
        f"{deployment.server.url}/service_accounts/v1/metadata/x509/{email('target')}", timeout=10
    ).json()
    assert (
        google.auth.jwt.decode(
            signed, certs=pem_certs, audience="https://api.example", verify=True
        )["sub"]
        == "x"
    )
