"""Issuer and account keys over time: rotation never breaks a verifier; keys sealed at rest."""

from __future__ import annotations

import base64
from pathlib import Path

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from starlette.testclient import TestClient

from tests.conftest import Api
from tokensmith.clock import FixedClock
from tokensmith.errors import Unavailable
from tokensmith.main import Services

DAY = 86400.0


def jwks_kids(http: TestClient) -> set[str]:
    return {k["kid"] for k in http.get("/oauth2/v3/certs").json()["keys"]}


def pem_kids(http: TestClient) -> set[str]:
    return set(http.get("/oauth2/v1/certs").json())


def mint_id_token(services: Services) -> str:
    return services.minter.id_token(
        audience="aud", subject="1", email="e@x.y", include_email=False, authorized_party="1"
    )


def test_token_signed_before_rotation_verifies_after(
    http: TestClient, services: Services, clock: FixedClock
) -> None:
    """An ID token signed by the old key still verifies after the next key took over."""
    token = mint_id_token(services)
    old_kid = pyjwt.get_unverified_header(token)["kid"]
    policy = services.keyring.policy
    clock.advance(policy.rotation_period - policy.prepublish)
    services.keyring.ensure()  # the server's rotation loop prepares the next key
    clock.advance(policy.prepublish + 1)  # past the old key's signing window
    new_token = mint_id_token(services)
    new_kid = pyjwt.get_unverified_header(new_token)["kid"]
    assert new_kid != old_kid
    assert {old_kid, new_kid} <= jwks_kids(http) == pem_kids(http)
    key = pyjwt.PyJWK(
        next(k for k in http.get("/oauth2/v3/certs").json()["keys"] if k["kid"] == old_kid)
    ).key
    pyjwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience="aud",
        options={"verify_exp": False, "verify_iat": False},
    )
    clock.advance(policy.prepublish + policy.max_token_lifetime + policy.skew)
    assert old_kid not in jwks_kids(http), "the old key is withdrawn once its tokens expired"


def test_new_key_is_published_before_it_signs(
    http: TestClient, services: Services, clock: FixedClock
) -> None:
    """After a forced rotation the new key is in the certs at once but signs only later."""
    old_kid = pyjwt.get_unverified_header(mint_id_token(services))["kid"]
    new_kid = services.keyring.ensure(force=True)
    assert new_kid is not None
    assert new_kid in jwks_kids(http)
    assert pyjwt.get_unverified_header(mint_id_token(services))["kid"] == old_kid
    clock.advance(services.keyring.policy.prepublish)
    assert pyjwt.get_unverified_header(mint_id_token(services))["kid"] == new_kid


def test_every_signing_kid_was_published_by_then(
    http: TestClient, services: Services, clock: FixedClock
) -> None:
    """Over 60 days of hourly minting, every kid used had been in the certs an hour before."""
    seen: dict[str, float] = {}
    for _ in range(60 * 24):
        for kid in jwks_kids(http):
            seen.setdefault(kid, clock.now())
        kid = pyjwt.get_unverified_header(mint_id_token(services))["kid"]
        first_key = kid == next(iter(seen))
        assert first_key or clock.now() - seen[kid] >= 3600, kid
        clock.advance(3600)
    assert len(seen) >= 8


def test_account_keys_sign_after_rotation_and_stay_published(
    owner: Api, services: Services, clock: FixedClock, http: TestClient
) -> None:
    """A signBlob key id stays in the account's published keys for 12 hours after use."""
    owner.post("/v1/projects/tokensmith-local/serviceAccounts", json={"accountId": "signer"})
    email = "signer@tokensmith-local.iam.gserviceaccount.com"
    account = services.directory.by_email(email)
    assert account is not None
    first = services.account_keys.signer(account).key_id
    clock.advance(services.account_keys.policy.rotation_period - 1)
    last_use = services.account_keys.signer(account).key_id
    assert last_use == first
    clock.advance(12 * 3600)
    published = http.get(f"/service_accounts/v1/metadata/x509/{email}").json()
    assert first in published
    assert services.account_keys.signer(account).key_id != first


def test_private_keys_are_sealed_at_rest(owner: Api, services: Services, settings: object) -> None:
    """The database files hold no private key: neither PEM text nor the private exponent."""
    owner.post("/v1/projects/tokensmith-local/serviceAccounts", json={"accountId": "sealed"})
    account = services.directory.by_email("sealed@tokensmith-local.iam.gserviceaccount.com")
    assert account is not None
    secrets = [services.keyring.signer().private, services.account_keys.signer(account).private]
    data_dir = Path(services.settings.data_dir)
    raw = b"".join(p.read_bytes() for p in data_dir.glob("tokensmith.db*"))
    assert raw, "the database files exist"
    assert b"PRIVATE KEY" not in raw
    for key in secrets:
        der = key.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        d = key.key.private_numbers().d.to_bytes(256, "big")
        assert d[:32] not in raw
        assert der[-64:] not in raw
        assert base64.b64encode(der)[100:164] not in raw


def test_store_without_kek_reveals_nothing(services: Services, tmp_path: Path) -> None:
    """Opening the sealed keys with another key-encryption key fails; nothing leaks."""
    from tokensmith.crypto.sealing import KeyEncryptionKey, SealingError

    other = KeyEncryptionKey(b"\x01" * 32)
    record = services.store.list_signing_keys("issuer")[0]
    with pytest.raises(SealingError):
        other.open(record.private_key_sealed, record.key_id)


def test_credential_not_returned_when_audit_fails(
    owner: Api, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the audit record cannot be written, the request fails with a retryable 503."""
    owner.post("/v1/projects/tokensmith-local/serviceAccounts", json={"accountId": "audited"})
    email = "audited@tokensmith-local.iam.gserviceaccount.com"
    policy = owner.post(f"/v1/projects/-/serviceAccounts/{email}:getIamPolicy").json()
    policy["bindings"] = [
        {"role": "roles/iam.serviceAccountTokenCreator", "members": ["user:owner@tokensmith.local"]}
    ]
    assert (
        owner.post(
            f"/v1/projects/-/serviceAccounts/{email}:setIamPolicy", json={"policy": policy}
        ).status_code
        == 200
    )

    def broken(records: object) -> None:
        raise Unavailable(
            "The service is currently unavailable: the database could not be reached."
        )

    monkeypatch.setattr(services.store, "append_audit", broken)
    response = owner.post(
        f"/v1/projects/-/serviceAccounts/{email}:generateIdToken", json={"audience": "a"}
    )
    assert response.status_code == 503
    assert response.json()["error"]["status"] == "UNAVAILABLE"
    assert "token" not in response.json()


class TickingClock(FixedClock):
    """A clock that moves a millisecond every time it is read, like a real one."""

    def now(self) -> float:
        self.advance(0.001)
        return super().now()


def test_regression_first_key_signs_under_a_moving_clock(owner: Api, services: Services) -> None:
    """Regression: a key created inside signer() must sign at once even though the clock moved
    between the rotation check and the key's creation (signBlob once failed with a 500)."""
    from tokensmith.services.sakeys import AccountKeys

    owner.post("/v1/projects/tokensmith-local/serviceAccounts", json={"accountId": "ticking"})
    account = services.directory.by_email("ticking@tokensmith-local.iam.gserviceaccount.com")
    assert account is not None
    keys = AccountKeys(services.store, services.kek, TickingClock(services.clock.now()))
    assert keys.signer(account).key_id


def test_maintenance_forgets_revocations_of_expired_tokens(
    services: Services, clock: FixedClock
) -> None:
    """The periodic round prunes revocations once their tokens are long expired."""
    services.store.revoke_token_id("expiring", clock.now() + 60, clock.now())
    services.maintain()
    assert services.store.is_token_id_revoked("expiring")
    clock.advance(60 + 3600 + 1)
    services.maintain()
    assert services.store.inner.is_token_id_revoked("expiring") is False
