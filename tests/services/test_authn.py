"""Tests for tokensmith.services.authn: which bearer tokens name a caller, and which fail as
one opaque UNAUTHENTICATED (access tokens, AIP-4111 self-signed JWTs, everything else)."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.conftest import START
from tokensmith.clock import FixedClock
from tokensmith.config import Settings
from tokensmith.core.names import Principal
from tokensmith.crypto import jwt
from tokensmith.crypto.keys import PrivateKey, generate_rsa_key, load_private_pem
from tokensmith.errors import PermissionDenied, Unauthenticated
from tokensmith.main import Services, build
from tokensmith.services.authn import (
    CLOUD_PLATFORM,
    IAM_SCOPE,
    MISSING_CREDENTIALS,
    Caller,
    require_scope,
)
from tokensmith.services.tokens import TokenMinter

OWNER = Principal("user", "owner@tokensmith.local")
PROJECT = "tokensmith-local"
INVALID = "Request had invalid authentication credentials."


class Robot:
    def __init__(self, services: Services, account_id: str = "authn-robot") -> None:
        self.services = services
        self.account = services.accounts.create(OWNER, PROJECT, {"accountId": account_id})
        self.email: str = self.account["email"]
        self.name = f"projects/{PROJECT}/serviceAccounts/{self.email}"
        created = services.accounts.create_key(OWNER, self.name, {})
        key_file = json.loads(base64.b64decode(created["privateKeyData"]))
        self.key_name: str = created["name"]
        self.signer = load_private_pem(key_file["private_key_id"], key_file["private_key"].encode())
        self.principal = Principal("serviceAccount", self.email, self.account["uniqueId"])

    def self_signed(
        self, clock: FixedClock, signer: PrivateKey | None = None, **claims: Any
    ) -> str:
        now = int(clock.now())
        values: dict[str, Any] = {
            "iss": self.email,
            "sub": self.email,
            "iat": now,
            "exp": now + 3600,
            "scope": CLOUD_PLATFORM,
        }
        values.update(claims)
        return jwt.encode({k: v for k, v in values.items() if v is not None}, signer or self.signer)


@dataclasses.dataclass
class Server:
    services: Services
    clock: FixedClock


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module's tests that neither move its clock nor change its robot."""
    clock = FixedClock(START)
    data_dir = tmp_path_factory.mktemp("authn") / "data"
    services = build(Settings(data_dir=data_dir, port=18080), clock)
    try:
        yield Server(services, clock)
    finally:
        services.close()


@pytest.fixture(scope="module")
def robot(shared: Server) -> Robot:
    """An account with one key that the tests using it leave unchanged."""
    return Robot(shared.services)


_NUMBERS = itertools.count()


@pytest.fixture
def own_robot(shared: Server) -> Robot:
    """An account of this test's own, for tests that disable or delete it or its key."""
    return Robot(shared.services, f"own-robot-{next(_NUMBERS)}")


def owner_access_token(services: Services, scopes: tuple[str, ...] = (CLOUD_PLATFORM,)) -> str:
    user = services.store.get_user(OWNER.email)
    assert user is not None
    return services.minter.access_token(
        Principal("user", user.email, user.unique_id), scopes, client_id="client-1"
    ).token


def rejected(services: Services, token: str) -> None:
    """The token is refused with the one opaque UNAUTHENTICATED message."""
    with pytest.raises(Unauthenticated) as caught:
        services.authn.authenticate(f"Bearer {token}")
    assert caught.value.message.startswith(INVALID)


# the Authorization header ---------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "bearer"])
def test_missing_credentials(shared: Server, header: str | None) -> None:
    """No bearer token at all is UNAUTHENTICATED with Google's missing-credential text."""
    services = shared.services
    with pytest.raises(Unauthenticated) as caught:
        services.authn.authenticate(header)
    assert caught.value.message == MISSING_CREDENTIALS


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "e30.e30.e30", "x" * 20_000])
def test_malformed_tokens_are_invalid(shared: Server, token: str) -> None:
    """Tokens that are not JWTs fail with the invalid-credentials text."""
    services = shared.services
    rejected(services, token)


def test_scheme_is_case_insensitive(shared: Server) -> None:
    """``bearer`` in lower case works as ``Bearer``."""
    services = shared.services
    caller = services.authn.authenticate(f"bearer {owner_access_token(services)}")
    assert caller.principal.email == OWNER.email


# access tokens ---------------------------------------------------------------------------------


def test_owner_access_token_names_the_owner(shared: Server) -> None:
    """An access token this server issued names its user, scopes, id, expiry and client."""
    services, clock = shared.services, shared.clock
    token = owner_access_token(services, (CLOUD_PLATFORM, "openid"))
    caller = services.authn.authenticate(f"Bearer {token}")
    assert caller.principal == Principal("user", OWNER.email)
    assert caller.scopes == {CLOUD_PLATFORM, "openid"}
    assert caller.token_id
    assert caller.expires_at == int(clock.now()) + 3600
    assert caller.client_id == "client-1"
    assert caller.self_signed is False


def test_service_account_access_token_carries_unique_id(shared: Server, robot: Robot) -> None:
    """A service account's access token names the account by email and unique id."""
    services = shared.services
    token = services.minter.access_token(robot.principal, (IAM_SCOPE,)).token
    caller = services.authn.authenticate(f"Bearer {token}")
    assert caller.principal == robot.principal
    assert caller.scopes == {IAM_SCOPE}


def test_access_token_expires_after_leeway(services: Services, clock: FixedClock) -> None:
    """An access token is accepted up to 30 s past exp, then refused."""
    token = owner_access_token(services)
    clock.advance(3600 + 29)
    services.authn.authenticate(f"Bearer {token}")
    clock.advance(1)
    rejected(services, token)


def test_revoked_access_token(shared: Server) -> None:
    """A token whose jti is revoked is refused."""
    services, clock = shared.services, shared.clock
    token = owner_access_token(services)
    caller = services.authn.authenticate(f"Bearer {token}")
    services.store.revoke_token_id(caller.token_id, caller.expires_at, clock.now())
    rejected(services, token)


def test_access_token_of_other_issuer(shared: Server) -> None:
    """A token signed by our key but naming another issuer is refused."""
    services, clock = shared.services, shared.clock
    other = TokenMinter(services.keyring, clock, "https://issuer.example")
    rejected(services, other.access_token(OWNER, (CLOUD_PLATFORM,)).token)


def test_access_token_of_unknown_user(shared: Server) -> None:
    """A well-signed token for a user the server does not know is refused."""
    services = shared.services
    ghost = Principal("user", "ghost@tokensmith.local", "100")
    rejected(services, services.minter.access_token(ghost, (CLOUD_PLATFORM,)).token)


def test_access_token_of_disabled_or_deleted_account(shared: Server, own_robot: Robot) -> None:
    """Disabling or deleting an account invalidates its live access tokens."""
    services = shared.services
    token = services.minter.access_token(own_robot.principal, (CLOUD_PLATFORM,)).token
    services.accounts.set_disabled(OWNER, own_robot.name, True)
    rejected(services, token)
    services.accounts.set_disabled(OWNER, own_robot.name, False)
    assert services.authn.authenticate(f"Bearer {token}").principal == own_robot.principal
    services.accounts.delete(OWNER, own_robot.name)
    rejected(services, token)


def test_access_token_of_recreated_account(shared: Server, own_robot: Robot) -> None:
    """A token for a deleted account does not work for a new account with the same email."""
    services = shared.services
    token = services.minter.access_token(own_robot.principal, (CLOUD_PLATFORM,)).token
    services.accounts.delete(OWNER, own_robot.name)
    services.accounts.create(OWNER, PROJECT, {"accountId": own_robot.email.split("@")[0]})
    rejected(services, token)


@pytest.mark.parametrize(
    "change",
    [
        {"principal_type": "group"},
        {"principal_type": None},
        {"email": None},
        {"sub": None},
        {"exp": None},
        {"iss": None},
    ],
)
def test_access_token_with_missing_claims(shared: Server, change: dict[str, Any]) -> None:
    """An issuer-signed at+jwt lacking a principal, subject or times is refused."""
    services = shared.services
    genuine = owner_access_token(services)
    claims = {**jwt.unverified_claims(genuine), **change}
    claims = {k: v for k, v in claims.items() if v is not None}
    forged = jwt.encode(claims, services.keyring.signer().private, typ="at+jwt")
    rejected(services, forged)


def test_access_token_signed_by_unknown_key(shared: Server) -> None:
    """An at+jwt naming an unknown kid, or the right kid with another key, is refused."""
    services = shared.services
    claims = jwt.unverified_claims(owner_access_token(services))
    rejected(services, jwt.encode(claims, generate_rsa_key(), typ="at+jwt"))
    kid = services.keyring.signer().key_id
    rejected(services, jwt.encode(claims, PrivateKey(kid, generate_rsa_key().key), typ="at+jwt"))


def test_id_token_is_not_an_access_token(shared: Server) -> None:
    """An ID token signed by the issuer key (typ JWT) is refused as a bearer token."""
    services = shared.services
    id_token = services.minter.id_token(
        audience="https://x.example",
        subject="1",
        email=OWNER.email,
        include_email=True,
        authorized_party="client",
    )
    rejected(services, id_token)


@pytest.mark.parametrize("alg", ["none", "HS256", "ES256", "RS512", "PS256"])
def test_only_rs256_is_accepted(shared: Server, alg: str) -> None:
    """Security regression: any alg but RS256 is refused before any key is used."""
    services = shared.services
    genuine = owner_access_token(services)
    header = {**jwt.unverified_header(genuine), "alg": alg}
    _, payload, signature = genuine.split(".")
    forged = f"{jwt.b64url_encode(orjson.dumps(header))}.{payload}.{signature}"
    rejected(services, forged)


def test_token_without_kid(shared: Server) -> None:
    """A token whose header names no key is refused."""
    services = shared.services
    claims = jwt.unverified_claims(owner_access_token(services))
    rejected(
        services,
        jwt.encode(claims, services.keyring.signer().private, typ="at+jwt", with_kid=False),
    )


# self-signed JWTs (AIP-4111) ---------------------------------------------------------------------


def test_self_signed_with_scope(shared: Server, robot: Robot) -> None:
    """A self-signed JWT with scope names the account and carries those scopes."""
    services, clock = shared.services, shared.clock
    caller = services.authn.authenticate(f"Bearer {robot.self_signed(clock)}")
    assert caller.principal == robot.principal
    assert caller.scopes == {CLOUD_PLATFORM}
    assert caller.self_signed is True
    assert caller.token_id == ""


def test_self_signed_with_audience(shared: Server, robot: Robot) -> None:
    """A self-signed JWT with only aud grants the cloud-platform scope."""
    services, clock = shared.services, shared.clock
    token = robot.self_signed(clock, scope=None, aud="https://iam.googleapis.com/")
    assert services.authn.authenticate(f"Bearer {token}").scopes == {CLOUD_PLATFORM}


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": None},
        {"scope": "  "},
        {"scope": None, "aud": ["https://iam.googleapis.com/"]},
        {"sub": "other@example.com"},
        {"iss": "other@example.com"},
        {"exp_delta": 3601},
        {"exp": None},
    ],
)
def test_self_signed_refusals(shared: Server, robot: Robot, claims: dict[str, Any]) -> None:
    """Wrong subject, no scope or aud, or a lifetime over an hour is refused."""
    services, clock = shared.services, shared.clock
    values = dict(claims)
    if "exp_delta" in values:
        values["exp"] = int(clock.now()) + values.pop("exp_delta")
    rejected(services, robot.self_signed(clock, **values))


def test_self_signed_expires(services: Services, clock: FixedClock) -> None:
    """A self-signed JWT is accepted until 30 s after its exp, then refused."""
    robot = Robot(services)
    token = robot.self_signed(clock, exp=int(clock.now()) + 60)
    clock.advance(60 + 29)
    assert services.authn.authenticate(f"Bearer {token}").principal == robot.principal
    clock.advance(1)
    rejected(services, token)


def test_self_signed_with_disabled_or_deleted_key(shared: Server, own_robot: Robot) -> None:
    """A disabled or deleted key signs nothing anymore."""
    services, clock = shared.services, shared.clock
    token = own_robot.self_signed(clock)
    services.accounts.set_key_disabled(OWNER, own_robot.key_name, True)
    rejected(services, token)
    services.accounts.set_key_disabled(OWNER, own_robot.key_name, False)
    services.authn.authenticate(f"Bearer {token}")
    services.accounts.delete_key(OWNER, own_robot.key_name)
    rejected(services, token)


def test_self_signed_of_disabled_account(shared: Server, own_robot: Robot) -> None:
    """A disabled account's self-signed JWTs are refused."""
    services, clock = shared.services, shared.clock
    services.accounts.set_disabled(OWNER, own_robot.name, True)
    rejected(services, own_robot.self_signed(clock))


def test_self_signed_with_forged_signature(shared: Server, robot: Robot) -> None:
    """A JWT naming the account's key id but signed by another key is refused."""
    services, clock = shared.services, shared.clock
    impostor = PrivateKey(robot.signer.key_id, generate_rsa_key().key)
    rejected(services, robot.self_signed(clock, signer=impostor))


def test_key_of_other_account_cannot_speak_for_this_one(shared: Server, robot: Robot) -> None:
    """A key signs only for its own account: iss/sub of another account are refused."""
    services, clock = shared.services, shared.clock
    other = Robot(services, "other-robot")
    rejected(services, robot.self_signed(clock, signer=other.signer))
    forged = robot.self_signed(clock, signer=other.signer, iss=other.email, sub=other.email)
    assert services.authn.authenticate(f"Bearer {forged}").principal == other.principal


# scopes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "ok"),
    [
        ({CLOUD_PLATFORM}, True),
        ({IAM_SCOPE}, True),
        ({"openid", IAM_SCOPE}, True),
        ({"openid"}, False),
        (set(), False),
    ],
)
def test_require_scope(scopes: set[str], ok: bool) -> None:
    """A caller needs at least one of the accepted scopes, else PERMISSION_DENIED."""
    caller = Caller(principal=OWNER, scopes=frozenset(scopes))
    accepted = frozenset({CLOUD_PLATFORM, IAM_SCOPE})
    if ok:
        require_scope(caller, accepted)
    else:
        with pytest.raises(PermissionDenied) as caught:
            require_scope(caller, accepted)
        assert caught.value.message == "Request had insufficient authentication scopes."


@pytest.mark.parametrize(
    ("aud", "accepted"),
    [
        ("https://iamcredentials.googleapis.com/", True),
        ("https://iamcredentials.example.test/", True),
        ("http://127.0.0.1:18080", True),
        ("https://pubsub.googleapis.com/", False),
        ("https://my-service.example.com/", False),
        ("http://iam.googleapis.com/", False),
        ("https://iam.googleapis.com/some/path", False),
    ],
)
def test_security_regression_self_signed_jwt_for_another_audience(
    shared: Server, robot: Robot, aud: str, accepted: bool
) -> None:
    """Security regression: a self-signed JWT the account made for another service (its aud)
    cannot be replayed here, with or without a scope claim."""
    services, clock = shared.services, shared.clock
    for scope in (None, CLOUD_PLATFORM):
        token = robot.self_signed(clock, scope=scope, aud=aud)
        if accepted:
            assert services.authn.authenticate(f"Bearer {token}").principal == robot.principal
        else:
            rejected(services, token)
