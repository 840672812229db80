"""Tokens from the metadata server, in-process: shapes, caching and expiry, IAM and audit."""

from __future__ import annotations

from typing import Any

import jwt as pyjwt
import pytest
from starlette.testclient import TestClient

from tests.api.test_iamcredentials import create_account, grant
from tests.conftest import Api
from tests.metadata.conftest import (
    CLOUD,
    TOKEN_CREATOR,
    V1,
    Metadata,
    email,
    metadata_for,
)
from tokensmith.clock import FixedClock
from tokensmith.main import Services
from tokensmith.metadata.instance import make_spec
from tokensmith.services.bootstrap import compute_service_agent
from tokensmith.testing import free_port

TOKEN = f"{V1}/instance/service-accounts/default/token"
IDENTITY = f"{V1}/instance/service-accounts/default/identity"
IAM = "https://www.googleapis.com/auth/iam"


def claims_of(token: str) -> dict[str, Any]:
    return dict(pyjwt.decode(token, options={"verify_signature": False}))


def verify(http: TestClient, token: str, audience: str) -> dict[str, Any]:
    """Verify an ID token against the server's published JWKS, as any OIDC verifier would."""
    jwks = {k["kid"]: k for k in http.get("/oauth2/v3/certs").json()["keys"]}
    key = pyjwt.PyJWK(jwks[pyjwt.get_unverified_header(token)["kid"]]).key
    return dict(
        pyjwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=audience,
            options={"verify_exp": False, "verify_iat": False},
        )
    )


def unique_id(services: Services, account_email: str) -> str:
    record = services.directory.by_email(account_email)
    assert record is not None
    return record.unique_id


# --- access tokens ------------------------------------------------------------------------


def test_token_response_has_googles_shape(md: Metadata) -> None:
    """token is application/json {access_token, expires_in (int), token_type: Bearer}."""
    response = md.get(TOKEN)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    claims = claims_of(body["access_token"])
    assert claims["email"] == md.default_email
    assert claims["scope"].split() == [CLOUD, "https://www.googleapis.com/auth/userinfo.email"]


def test_scopes_parameter_chooses_the_scopes(md: Metadata) -> None:
    """?scopes=a,b (as google-auth sends it, URL-encoded) gives a token with exactly those."""
    response = md.raw(f"{TOKEN}?scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fiam%2Copenid")
    assert claims_of(response.json()["access_token"])["scope"] == f"{IAM} openid"


def test_token_is_cached_and_expires_in_counts_down(md: Metadata) -> None:
    """The same token is handed out while expires_in counts down with the clock."""
    first = md.get(TOKEN).json()
    md.clock.advance(1000)
    second = md.get(TOKEN).json()
    assert second["access_token"] == first["access_token"]
    assert second["expires_in"] == 2600


def test_token_is_renewed_300_seconds_before_expiry(md: Metadata) -> None:
    """With 300 s or less left (clients call < 225 s stale) the server mints a new token."""
    first = md.get(TOKEN).json()
    md.clock.advance(3600 - 301)
    assert md.get(TOKEN).json() == {**first, "expires_in": 301}
    md.clock.advance(1)
    renewed = md.get(TOKEN).json()
    assert renewed["access_token"] != first["access_token"]
    assert renewed["expires_in"] == 3600


def test_tokens_are_cached_per_scopes(md: Metadata) -> None:
    """Different scopes get different tokens; the same set in another order shares one."""
    one = md.get(TOKEN, scopes=f"{IAM},{CLOUD}").json()["access_token"]
    same = md.get(TOKEN, scopes=f"{CLOUD},{IAM}").json()["access_token"]
    other = md.get(TOKEN, scopes=IAM).json()["access_token"]
    assert one == same
    assert other != one


def test_email_path_serves_the_same_account(md: Metadata) -> None:
    """…/EMAIL/token is the attached account's token, like …/default/token."""
    by_email = md.get(f"{V1}/instance/service-accounts/{md.default_email}/token").json()
    assert by_email == md.get(TOKEN).json()


def test_metadata_token_is_a_caller_credential_for_the_api(
    http: TestClient, owner: Api, services: Services, clock: FixedClock
) -> None:
    """A workload impersonates another account with its metadata token (TokenCreator on it)."""
    create_account(owner, "backend")
    create_account(owner, "workload")
    grant(owner, email("backend"), TOKEN_CREATOR, f"serviceAccount:{email('workload')}")
    md = metadata_for(
        services, clock, make_spec(port=free_port(), service_account=email("workload"))
    )
    token = md.get(TOKEN, scopes=IAM).json()["access_token"]
    response = http.post(
        f"/v1/projects/-/serviceAccounts/{email('backend')}:generateAccessToken",
        json={"scope": [CLOUD]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    info = http.get("/tokeninfo", params={"access_token": response.json()["accessToken"]})
    assert info.json()["email"] == email("backend")


def test_minting_is_audited_as_the_compute_service_agent(md: Metadata) -> None:
    """Each mint is an audit record: the Compute Engine service agent acting on the account."""
    md.get(TOKEN)
    agent = compute_service_agent(md.services.project.project_number)
    records = md.services.store.query_audit(account=md.default_email, outcome="granted")
    methods = {(r.method, r.principal) for r in records}
    assert ("generateAccessToken", agent.member) in methods


def test_attached_account_the_agent_cannot_mint_for_is_403(
    services: Services, clock: FixedClock
) -> None:
    """No TokenCreator for the agent (here: the account never existed) → 403 that says why."""
    ghost = email("ghost-account")
    md = metadata_for(services, clock, make_spec(port=free_port(), service_account=ghost))
    for path in (TOKEN, f"{IDENTITY}?audience=https://svc.example"):
        response = md.raw(path)
        assert response.status_code == 403
        assert "roles/iam.serviceAccountTokenCreator" in response.text
        assert ghost in response.text
        assert response.headers["metadata-flavor"] == "Google"
    denied = services.store.query_audit(outcome="denied", method="generateAccessToken")
    assert denied[0].principal == compute_service_agent(services.project.project_number).member


def test_disabled_attached_account_gets_no_tokens(
    http: TestClient, owner: Api, services: Services, clock: FixedClock
) -> None:
    """Disabling the attached account stops the metadata server from minting for it."""
    create_account(owner, "worker")
    md = metadata_for(services, clock, make_spec(port=free_port(), service_account=email("worker")))
    assert md.get(TOKEN).status_code == 200
    disabled = owner.post(f"/v1/projects/-/serviceAccounts/{email('worker')}:disable", json={})
    assert disabled.status_code == 200, disabled.text
    assert md.get(TOKEN, scopes=IAM).status_code == 403


# --- identity -----------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?format=full", "?audience=", "?audience=&format=full"])
def test_identity_without_audience_is_400(md: Metadata, query: str) -> None:
    """A missing or empty audience is 400 "non-empty audience parameter required"."""
    response = md.raw(f"{IDENTITY}{query}")
    assert response.status_code == 400
    assert response.text == "non-empty audience parameter required"


def test_standard_identity_token(md: Metadata, http: TestClient) -> None:
    """format=standard (the default): a raw JWT, not JSON, with aud, sub=uniqueId, no email."""
    response = md.get(IDENTITY, audience="https://svc.example")
    assert response.status_code == 200
    assert "json" not in response.headers["content-type"]
    claims = verify(http, response.text, "https://svc.example")
    uid = unique_id(md.services, md.default_email)
    assert claims["sub"] == uid
    assert claims["azp"] == uid
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["exp"] == claims["iat"] + 3600
    assert "email" not in claims
    assert "google" not in claims


def test_full_identity_token_carries_email_and_instance_claims(
    md: Metadata, http: TestClient
) -> None:
    """format=full adds email, email_verified and google.compute_engine (no license_id)."""
    response = md.get(IDENTITY, audience="https://svc.example", format="full")
    claims = verify(http, response.text, "https://svc.example")
    project = md.services.project
    assert claims["email"] == md.default_email
    assert claims["email_verified"] is True
    assert claims["google"] == {
        "compute_engine": {
            "instance_creation_timestamp": int(project.created_at),
            "instance_id": md.get(f"{V1}/instance/id").text,
            "instance_name": "instance-1",
            "project_id": project.project_id,
            "project_number": int(project.project_number),
            "zone": "us-central1-a",
        }
    }


def test_licenses_true_adds_license_ids(services: Services, clock: FixedClock) -> None:
    """licenses=TRUE with format=full adds license_id (the configured licenses)."""
    spec = make_spec(port=free_port(), licenses=["1000010", "5926592092274602096"])
    md = metadata_for(services, clock, spec)
    token = md.raw(f"{IDENTITY}?audience=aud&format=full&licenses=TRUE").text
    assert claims_of(token)["google"]["compute_engine"]["license_id"] == [
        "1000010",
        "5926592092274602096",
    ]
    standard = md.raw(f"{IDENTITY}?audience=aud&format=standard&licenses=TRUE").text
    assert "google" not in claims_of(standard)


@pytest.mark.parametrize(
    ("query", "audience"),
    [
        (
            "format=full&audience=https://x.example.com/p?a=b&c=d%20e",
            "https://x.example.com/p?a=b&c=d e",
        ),
        (
            "audience=https://svc.example/x?y=1&z=2&format=full&licenses=FALSE",
            "https://svc.example/x?y=1&z=2",
        ),
        (
            "audience=https%3A%2F%2Fsvc.example%2F%3Fq%3D1%26r%3D2&format=full",
            "https://svc.example/?q=1&r=2",
        ),
    ],
)
def test_unencoded_audiences_arrive_whole(md: Metadata, query: str, audience: str) -> None:
    """Node's and gcloud's raw audiences (with ? and &) and Python's encoded ones are exact."""
    response = md.raw(f"{IDENTITY}?{query}")
    assert response.status_code == 200, response.text
    assert claims_of(response.text)["aud"] == audience


@pytest.mark.parametrize(
    ("query", "message"),
    [("audience=a&format=compact", "invalid format"), ("audience=a&licenses=maybe", "licenses")],
)
def test_bad_identity_parameters_are_400(md: Metadata, query: str, message: str) -> None:
    """An unknown format or licenses value is a 400 naming it (never 404: gcloud)."""
    response = md.raw(f"{IDENTITY}?{query}")
    assert response.status_code == 400
    assert message in response.text


def test_identity_tokens_are_cached_until_shortly_before_exp(md: Metadata) -> None:
    """One token per (audience, format, licenses) until 300 s before its exp."""
    first = md.get(IDENTITY, audience="aud").text
    assert md.get(IDENTITY, audience="aud").text == first
    assert md.get(IDENTITY, audience="aud", format="full").text != first
    assert md.get(IDENTITY, audience="other").text != first
    md.clock.advance(3600 - 301)
    assert md.get(IDENTITY, audience="aud").text == first
    md.clock.advance(1)
    renewed = md.get(IDENTITY, audience="aud").text
    assert renewed != first
    assert claims_of(renewed)["iat"] == int(md.clock.now())


def test_too_long_audience_is_400(md: Metadata) -> None:
    """An audience over 2048 characters is refused by the IAM rules as a 400."""
    response = md.get(IDENTITY, audience="a" * 3000)
    assert response.status_code == 400
    assert "too long" in response.text
