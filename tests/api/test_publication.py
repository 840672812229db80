"""Key publication and tokeninfo: discovery, JWKS, PEM certs, per-account keys, /tokeninfo."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509
from starlette.testclient import TestClient

from tests.conftest import Api
from tokensmith.main import Services

EMAIL = "published@tokensmith-local.iam.gserviceaccount.com"


def test_openid_configuration(http: TestClient) -> None:
    """Discovery names the issuer, the JWKS and token endpoints and RS256, publicly cached."""
    response = http.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    body = response.json()
    assert body["issuer"] == "https://accounts.google.com"
    assert body["jwks_uri"] == "http://127.0.0.1:18080/oauth2/v3/certs"
    assert body["token_endpoint"] == "http://127.0.0.1:18080/token"
    assert body["id_token_signing_alg_values_supported"] == ["RS256"]
    assert response.headers["cache-control"].startswith("public, max-age=")


def test_jwks_and_pem_certs_name_the_same_keys(http: TestClient) -> None:
    """/oauth2/v3/certs and /oauth2/v1/certs publish the same kids; the certs parse."""
    jwks = http.get("/oauth2/v3/certs").json()["keys"]
    pems = http.get("/oauth2/v1/certs").json()
    assert {k["kid"] for k in jwks} == set(pems)
    for key in jwks:
        assert key["kty"] == "RSA"
        assert key["alg"] == "RS256"
        assert key["use"] == "sig"
        cert = x509.load_pem_x509_certificate(pems[key["kid"]].encode())
        numbers = cert.public_key().public_numbers()  # type: ignore[union-attr]
        n = int.from_bytes(base64.urlsafe_b64decode(key["n"] + "=="), "big")
        assert numbers.n == n


def test_public_documents_need_no_authentication(anonymous: Api, owner: Api) -> None:
    """Per-account key documents are public; unknown accounts are 404."""
    owner.post("/v1/projects/tokensmith-local/serviceAccounts", json={"accountId": "published"})
    key = owner.post(f"/v1/projects/-/serviceAccounts/{EMAIL}/keys", json={}).json()
    user_key_id = key["name"].rsplit("/", 1)[1]
    for path in (
        f"/service_accounts/v1/metadata/x509/{EMAIL}",
        f"/robot/v1/metadata/x509/{EMAIL}",
        f"/service_accounts/v1/metadata/raw/{EMAIL}",
    ):
        response = anonymous.get(path)
        assert response.status_code == 200, path
        assert user_key_id in response.json(), "user-managed keys are published too"
        assert len(response.json()) == 2, "plus the system-managed signing key"
    for path in (f"/service_accounts/v1/metadata/jwk/{EMAIL}", f"/service_accounts/v1/jwk/{EMAIL}"):
        assert len(anonymous.get(path).json()["keys"]) == 2
    missing = anonymous.get("/service_accounts/v1/metadata/x509/nobody@example.com")
    assert missing.status_code == 404


def test_tokeninfo_for_access_tokens(owner: Api, http: TestClient) -> None:
    """tokeninfo answers with string values for the token in a param, a form or a header."""
    token = owner.token
    assert token is not None
    by_query = http.get("/tokeninfo", params={"access_token": token}).json()
    by_form = http.post("/tokeninfo", data={"access_token": token}).json()
    by_header = http.post(
        "/oauth2/v3/tokeninfo", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert by_query == by_form == by_header
    assert by_query["email"] == "owner@tokensmith.local"
    assert isinstance(by_query["exp"], str)
    assert isinstance(by_query["expires_in"], str)
    assert "https://www.googleapis.com/auth/cloud-platform" in by_query["scope"].split()


def test_tokeninfo_for_id_tokens(owner: Api, http: TestClient, services: Services) -> None:
    """An ID token's claims come back with string values and its header fields."""
    token = services.minter.id_token(
        audience="aud", subject="123", email="e@x.y", include_email=True, authorized_party="123"
    )
    info = http.get("/tokeninfo", params={"id_token": token}).json()
    assert info["aud"] == "aud"
    assert info["email_verified"] == "true"
    assert info["exp"].isdigit()
    assert info["alg"] == "RS256"


@pytest.mark.parametrize("param", ["access_token", "id_token"])
def test_tokeninfo_rejects_garbage(http: TestClient, param: str) -> None:
    """A token that does not verify is 400 invalid_token, never a 500."""
    response = http.get("/tokeninfo", params={param: "not.a.token"})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_token", "error_description": "Invalid Value"}


def test_access_token_is_not_an_id_token(owner: Api, http: TestClient) -> None:
    """An access token presented as id_token is refused."""
    response = http.get("/tokeninfo", params={"id_token": owner.token})
    assert response.status_code == 400


def test_revoked_access_token_is_refused_everywhere(owner: Api, http: TestClient) -> None:
    """After /revoke, the access token fails on the API and at tokeninfo."""
    token = owner.token
    assert http.post("/revoke", data={"token": token}).status_code == 200
    assert owner.get("/v1/projects/tokensmith-local/serviceAccounts").status_code == 401
    assert http.get("/tokeninfo", params={"access_token": token}).status_code == 400
    assert json.loads(http.post("/revoke", data={"token": "nope"}).text)["error"] == (
        "invalid_token"
    )
