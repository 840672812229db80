"""The OAuth 2.0 endpoints over HTTP: ``/token`` (refresh_token and jwt-bearer grants, with
Google's error codes and texts), ``/revoke``, and which bearer tokens the APIs accept.

Tests named ``test_security_regression_*`` pin attacks on token verification (algorithm
confusion, unsigned tokens, token substitution); each must keep failing closed.

Most tests share one server (``shared``) with a service account of their own (``robot``); the
two that revoke the owner's refresh token or move the clock take per-test fixtures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
from pathlib import Path
from typing import Any

import jwt as pyjwt
import orjson
import pytest
from starlette.testclient import TestClient

from tests.conftest import Api
from tests.conftest import SharedServer as Server
from tokensmith.clock import FixedClock
from tokensmith.crypto import jwt
from tokensmith.crypto.keys import PrivateKey, generate_rsa_key, load_private_pem
from tokensmith.main import Services

PROJECT = "tokensmith-local"
ACCOUNTS = f"/v1/projects/{PROJECT}/serviceAccounts"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_AUD = "https://oauth2.googleapis.com/token"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
BAD_SIGNATURE = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
BAD_TIMES = {
    "error": "invalid_grant",
    "error_description": (
        "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
        "timeframe. Check your iat and exp values in the JWT claim."
    ),
}
BAD_AUDIENCE = {
    "error": "invalid_grant",
    "error_description": "Invalid JWT: Failed audience check.",
}
INVALID_SCOPE = {
    "error": "invalid_scope",
    "error_description": "Invalid OAuth scope or ID token audience provided.",
}


class Robot:
    """A service account with one user-managed key, signing its own assertions."""

    def __init__(self, owner: Api, account_id: str) -> None:
        response = owner.post(ACCOUNTS, json={"accountId": account_id})
        assert response.status_code == 200, response.text
        self.account: dict[str, Any] = response.json()
        self.email: str = self.account["email"]
        key = owner.post(f"{ACCOUNTS}/{self.email}/keys", json={})
        assert key.status_code == 200, key.text
        self.key_file = json.loads(base64.b64decode(key.json()["privateKeyData"]))
        self.signer = load_private_pem(
            self.key_file["private_key_id"], self.key_file["private_key"].encode()
        )

    def claims(self, clock: FixedClock, **overrides: Any) -> dict[str, Any]:
        now = int(clock.now())
        claims: dict[str, Any] = {
            "iss": self.email,
            "aud": GOOGLE_AUD,
            "iat": now,
            "exp": now + 3600,
            "scope": CLOUD_PLATFORM,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def assertion(self, clock: FixedClock, *, with_kid: bool = True, **overrides: Any) -> str:
        return jwt.encode(self.claims(clock, **overrides), self.signer, with_kid=with_kid)

    def self_signed(self, clock: FixedClock, **overrides: Any) -> str:
        """An AIP-4111 self-signed JWT, used directly as a bearer token."""
        now = int(clock.now())
        claims: dict[str, Any] = {
            "iss": self.email,
            "sub": self.email,
            "iat": now,
            "exp": now + 3600,
            "scope": CLOUD_PLATFORM,
        }
        claims.update(overrides)
        return jwt.encode({k: v for k, v in claims.items() if v is not None}, self.signer)


_NUMBERS = itertools.count()


@pytest.fixture(scope="module")
def robot(shared: Server) -> Robot:
    """A service account with one key, for tests that leave it as it is."""
    return Robot(shared.owner, "token-robot")


@pytest.fixture
def own_robot(shared: Server) -> Robot:
    """A service account of this test's own, for tests that disable or delete it."""
    return Robot(shared.owner, f"own-robot-{next(_NUMBERS)}")


def credentials_of(services: Services) -> dict[str, str]:
    return dict(json.loads(Path(services.owner_credentials_path).read_text()))


@pytest.fixture
def owner_creds(shared: Server) -> dict[str, str]:
    """The shared server owner's authorized_user file."""
    return credentials_of(shared.services)


def token(http: TestClient, **form: str) -> Any:
    return http.post("/token", data=form)


def bearer(http: TestClient, assertion: str) -> Any:
    return token(http, grant_type=JWT_BEARER, assertion=assertion)


def refresh(http: TestClient, creds: dict[str, str], **overrides: str) -> Any:
    form = {
        "grant_type": "refresh_token",
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "refresh_token": creds["refresh_token"],
    }
    form.update(overrides)
    return token(http, **{k: v for k, v in form.items() if v})


def oauth_error(response: Any, status: int, expected: dict[str, str] | str) -> None:
    """An RFC 6749 error body (never Google's API envelope) with the given status."""
    assert response.status_code == status, response.text
    body = response.json()
    if isinstance(expected, str):
        assert set(body) == {"error", "error_description"}
        assert body["error"] == expected
    else:
        assert body == expected


def claims_of(token_value: str) -> dict[str, Any]:
    return dict(jwt.unverified_claims(token_value))


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        jwt.b64url_encode(part) for part in (orjson.dumps(header), orjson.dumps(claims), signature)
    )


# refresh_token grant ---------------------------------------------------------------------------


def test_refresh_grant_returns_google_fields(shared: Server, owner_creds: dict[str, str]) -> None:
    """The refresh grant answers access_token, expires_in, scope, token_type and id_token."""
    http, services = shared.http, shared.services
    response = refresh(http, owner_creds)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "scope", "token_type", "id_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    assert set(body["scope"].split()) == {
        "openid",
        "https://www.googleapis.com/auth/userinfo.email",
        CLOUD_PLATFORM,
    }
    id_claims = claims_of(body["id_token"])
    user = services.store.get_user("owner@tokensmith.local")
    assert user is not None
    assert id_claims["aud"] == owner_creds["client_id"]
    assert id_claims["sub"] == user.unique_id
    assert id_claims["email"] == "owner@tokensmith.local"
    assert id_claims["email_verified"] is True


def test_refresh_grant_with_basic_client_credentials(
    shared: Server, owner_creds: dict[str, str]
) -> None:
    """Client credentials may come as HTTP Basic instead of form fields."""
    http = shared.http
    basic = base64.b64encode(
        f"{owner_creds['client_id']}:{owner_creds['client_secret']}".encode()
    ).decode()
    response = http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": owner_creds["refresh_token"]},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.text


def test_refresh_grant_with_unknown_client(shared: Server, owner_creds: dict[str, str]) -> None:
    """An unknown client_id is 401 invalid_client "The OAuth client was not found."."""
    http = shared.http
    oauth_error(
        refresh(http, owner_creds, client_id="123.apps.example.com"),
        401,
        {"error": "invalid_client", "error_description": "The OAuth client was not found."},
    )
    oauth_error(refresh(http, owner_creds, client_id=""), 401, "invalid_client")


def test_refresh_grant_with_wrong_secret(shared: Server, owner_creds: dict[str, str]) -> None:
    """A wrong client_secret is 401 invalid_client."""
    http = shared.http
    oauth_error(refresh(http, owner_creds, client_secret="TS-wrong"), 401, "invalid_client")


def test_refresh_grant_with_bad_refresh_token(shared: Server, owner_creds: dict[str, str]) -> None:
    """An unknown refresh token is 400 invalid_grant."""
    http = shared.http
    oauth_error(
        refresh(http, owner_creds, refresh_token="1//not-a-token"),
        400,
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
    )


def test_refresh_grant_without_refresh_token(shared: Server, owner_creds: dict[str, str]) -> None:
    """A refresh grant without refresh_token is 400 invalid_request."""
    http = shared.http
    oauth_error(refresh(http, owner_creds, refresh_token=""), 400, "invalid_request")


def test_refresh_grant_narrows_scopes(shared: Server, owner_creds: dict[str, str]) -> None:
    """Asking for a subset of the granted scopes gets exactly that subset."""
    http = shared.http
    response = refresh(http, owner_creds, scope="openid")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "openid"
    narrow = Api(http, response.json()["access_token"])
    assert narrow.get(ACCOUNTS).status_code == 403
    assert claims_of(response.json()["access_token"])["scope"] == "openid"


def test_refresh_grant_refuses_new_scopes(shared: Server, owner_creds: dict[str, str]) -> None:
    """Asking for a scope that was never granted is 400 invalid_scope."""
    http = shared.http
    oauth_error(
        refresh(http, owner_creds, scope=f"{CLOUD_PLATFORM} https://mail.google.com/"),
        400,
        INVALID_SCOPE,
    )


def test_refresh_grant_access_token_works_on_api(
    shared: Server, owner_creds: dict[str, str]
) -> None:
    """The access token from the refresh grant authenticates API calls as the owner."""
    http = shared.http
    access = refresh(http, owner_creds).json()["access_token"]
    assert Api(http, access).get(ACCOUNTS).status_code == 200


# jwt-bearer grant ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "audience",
    [
        "https://oauth2.googleapis.com/token",
        "https://www.googleapis.com/oauth2/v4/token",
        "http://127.0.0.1:18080/token",
        "http://127.0.0.1:18080/oauth2/v4/token",
    ],
)
def test_jwt_bearer_accepts_known_audiences(shared: Server, robot: Robot, audience: str) -> None:
    """Google's token URLs and this server's own /token are accepted as the assertion aud."""
    http, clock = shared.http, shared.clock
    response = bearer(http, robot.assertion(clock, aud=audience))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    claims = claims_of(body["access_token"])
    assert claims["sub"] == robot.account["uniqueId"]
    assert claims["email"] == robot.email
    assert claims["scope"] == CLOUD_PLATFORM
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize(
    "audience",
    [
        "https://example.com/token",
        "http://127.0.0.1:18080/",
        "",
        ["https://example.com/token"],
        [],
        {"aud": GOOGLE_AUD},
        7,
    ],
)
def test_jwt_bearer_refuses_other_audiences(shared: Server, robot: Robot, audience: object) -> None:
    """Any other aud is invalid_grant "Invalid JWT: Failed audience check." (never a 500)."""
    http, clock = shared.http, shared.clock
    oauth_error(bearer(http, robot.assertion(clock, aud=audience)), 400, BAD_AUDIENCE)


def test_jwt_bearer_accepts_audience_list(shared: Server, robot: Robot) -> None:
    """An aud list (RFC 7519 §4.1.3) naming a token URL among others is accepted."""
    http, clock = shared.http, shared.clock
    response = bearer(http, robot.assertion(clock, aud=["https://x.example", GOOGLE_AUD]))
    assert response.status_code == 200, response.text


def test_jwt_bearer_without_kid(shared: Server, robot: Robot) -> None:
    """An assertion whose header has only alg (Node's gtoken) is accepted."""
    http, clock = shared.http, shared.clock
    response = bearer(http, robot.assertion(clock, with_kid=False))
    assert response.status_code == 200, response.text


def test_jwt_bearer_via_legacy_path(shared: Server, robot: Robot) -> None:
    """/oauth2/v4/token serves the same grant."""
    http, clock = shared.http, shared.clock
    response = http.post(
        "/oauth2/v4/token", data={"grant_type": JWT_BEARER, "assertion": robot.assertion(clock)}
    )
    assert response.status_code == 200, response.text


def test_jwt_bearer_with_charset_in_content_type(shared: Server, robot: Robot) -> None:
    """``application/x-www-form-urlencoded;charset=UTF-8`` (Node) is accepted."""
    http, clock = shared.http, shared.clock
    body = f"grant_type={JWT_BEARER}&assertion={robot.assertion(clock)}"
    response = http.post(
        "/token",
        content=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"},
    )
    assert response.status_code == 200, response.text


def test_jwt_bearer_with_wrong_key(shared: Server, robot: Robot) -> None:
    """An assertion signed by a key the account does not have is "Invalid JWT Signature."."""
    http, clock = shared.http, shared.clock
    stranger = PrivateKey(robot.signer.key_id, generate_rsa_key().key)
    forged = jwt.encode(robot.claims(clock), stranger)
    oauth_error(bearer(http, forged), 400, BAD_SIGNATURE)
    unnamed = jwt.encode(robot.claims(clock), stranger, with_kid=False)
    oauth_error(bearer(http, unnamed), 400, BAD_SIGNATURE)


def test_jwt_bearer_with_tampered_claims(shared: Server, robot: Robot) -> None:
    """Changing a claim after signing breaks the signature."""
    http, clock = shared.http, shared.clock
    header, _, signature = robot.assertion(clock).split(".")
    payload = jwt.b64url_encode(orjson.dumps(robot.claims(clock, scope="openid")))
    oauth_error(bearer(http, f"{header}.{payload}.{signature}"), 400, BAD_SIGNATURE)


def test_jwt_bearer_with_unknown_kid(shared: Server, robot: Robot) -> None:
    """A kid naming no key of the account is "Invalid JWT Signature."."""
    http, clock = shared.http, shared.clock
    other = PrivateKey("0" * 40, robot.signer.key)
    oauth_error(bearer(http, jwt.encode(robot.claims(clock), other)), 400, BAD_SIGNATURE)


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp_delta": 3601},  # longer than an hour
        {"iat_delta": -7200, "exp_delta": -3600},  # expired long ago
        {"iat_delta": 3600, "exp_delta": 7200},  # issued in the future
        {"exp": None},
        {"iat": None},
        {"exp": "soon"},
    ],
)
def test_jwt_bearer_refuses_bad_times(
    shared: Server, robot: Robot, overrides: dict[str, Any]
) -> None:
    """Lifetimes over an hour, expired or future assertions get Google's short-lived text."""
    http, clock = shared.http, shared.clock
    now = int(clock.now())
    extra = dict(overrides)
    iat = now + extra.pop("iat_delta", 0)
    claims: dict[str, Any] = {"iat": iat, "exp": iat + 3600}
    if "exp_delta" in extra:
        claims["exp"] = now + extra.pop("exp_delta")
    claims.update(extra)
    oauth_error(bearer(http, robot.assertion(clock, **claims)), 400, BAD_TIMES)


def test_jwt_bearer_tolerates_small_clock_skew(shared: Server, robot: Robot) -> None:
    """An assertion issued a minute in the future (client clock ahead) is accepted."""
    http, clock = shared.http, shared.clock
    now = int(clock.now())
    response = bearer(http, robot.assertion(clock, iat=now + 60, exp=now + 60 + 3600))
    assert response.status_code == 200, response.text


def test_jwt_bearer_unknown_account(shared: Server, robot: Robot) -> None:
    """An issuer that is no account is invalid_grant."""
    http, clock = shared.http, shared.clock
    ghost = f"ghost-account@{PROJECT}.iam.gserviceaccount.com"
    oauth_error(
        bearer(http, robot.assertion(clock, iss=ghost)),
        400,
        {"error": "invalid_grant", "error_description": "Invalid grant: account not found"},
    )
    oauth_error(bearer(http, robot.assertion(clock, iss=None)), 400, "invalid_grant")


def test_jwt_bearer_disabled_account(shared: Server, own_robot: Robot) -> None:
    """A disabled account's assertions are refused with "Robot is disabled."."""
    http, owner, clock = shared.http, shared.owner, shared.clock
    owner.post(f"{ACCOUNTS}/{own_robot.email}:disable")
    oauth_error(
        bearer(http, own_robot.assertion(clock)),
        400,
        {"error": "invalid_grant", "error_description": "Robot is disabled."},
    )


def test_jwt_bearer_deleted_account(shared: Server, own_robot: Robot) -> None:
    """A deleted account's assertions are refused as an unknown account."""
    http, owner, clock = shared.http, shared.owner, shared.clock
    owner.delete(f"{ACCOUNTS}/{own_robot.email}")
    oauth_error(bearer(http, own_robot.assertion(clock)), 400, "invalid_grant")


def test_jwt_bearer_domain_wide_delegation_is_refused(shared: Server, robot: Robot) -> None:
    """A sub naming someone else (domain-wide delegation) is unauthorized_client."""
    http, clock = shared.http, shared.clock
    oauth_error(
        bearer(http, robot.assertion(clock, sub="user@example.com")), 400, "unauthorized_client"
    )
    assert bearer(http, robot.assertion(clock, sub=robot.email)).status_code == 200


@pytest.mark.parametrize("scope", [None, "", "   "])
def test_jwt_bearer_without_scope_or_audience(
    shared: Server, robot: Robot, scope: str | None
) -> None:
    """Neither scope nor target_audience is invalid_scope."""
    http, clock = shared.http, shared.clock
    oauth_error(bearer(http, robot.assertion(clock, scope=scope)), 400, INVALID_SCOPE)


def test_jwt_bearer_missing_assertion(shared: Server) -> None:
    """The jwt-bearer grant without assertion is invalid_request."""
    http = shared.http
    oauth_error(token(http, grant_type=JWT_BEARER), 400, "invalid_request")


@pytest.mark.parametrize("assertion", ["garbage", "a.b.c", "e30.e30.", "x" * 20_000])
def test_jwt_bearer_malformed_assertion(shared: Server, assertion: str) -> None:
    """An assertion that is not a JWT is "Invalid JWT Signature.", never a 500."""
    http = shared.http
    oauth_error(bearer(http, assertion), 400, BAD_SIGNATURE)


def test_jwt_bearer_target_audience_returns_id_token(shared: Server, robot: Robot) -> None:
    """target_audience yields only an id_token for that audience, verifiable with the JWKS."""
    http, clock = shared.http, shared.clock
    audience = "https://service.example.com"
    response = bearer(http, robot.assertion(clock, scope=None, target_audience=audience))
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id_token"}
    id_token = response.json()["id_token"]
    jwks = http.get("/oauth2/v3/certs").json()
    kid = jwt.unverified_header(id_token)["kid"]
    key = pyjwt.PyJWKSet.from_dict(jwks)[kid].key
    claims = pyjwt.decode(
        id_token,
        key=key,
        algorithms=["RS256"],
        audience=audience,
        issuer="https://accounts.google.com",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == robot.account["uniqueId"]
    assert claims["email"] == robot.email
    assert claims["email_verified"] is True
    assert claims["iat"] == int(clock.now())
    assert claims["exp"] == claims["iat"] + 3600


# token endpoint request handling --------------------------------------------------------------


def test_missing_grant_type(shared: Server) -> None:
    """A form without grant_type is 400 invalid_request."""
    http = shared.http
    oauth_error(
        token(http, assertion="x"),
        400,
        {"error": "invalid_request", "error_description": "Missing required parameter: grant_type"},
    )


@pytest.mark.parametrize("grant_type", ["password", "client_credentials", "authorization_code"])
def test_unsupported_grant_type(shared: Server, grant_type: str) -> None:
    """Grant types the server does not implement are unsupported_grant_type."""
    http = shared.http
    oauth_error(
        token(http, grant_type=grant_type),
        400,
        {
            "error": "unsupported_grant_type",
            "error_description": f"Invalid grant_type: {grant_type}",
        },
    )


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"grant_type": "refresh_token"}', "application/json"),
        (b"grant_type=refresh_token", "text/plain"),
        (b"grant_type=refresh_token", ""),
    ],
)
def test_token_needs_form_encoding(shared: Server, content: bytes, content_type: str) -> None:
    """A body that is not form-encoded is 400 invalid_request in the OAuth shape."""
    http = shared.http
    headers = {"Content-Type": content_type} if content_type else {}
    response = http.post("/token", content=content, headers=headers)
    oauth_error(response, 400, "invalid_request")


def test_token_with_non_utf8_body(shared: Server) -> None:
    """A form body that is not UTF-8 is an OAuth invalid_request, not Google's API envelope."""
    http = shared.http
    response = http.post(
        "/token",
        content=b"grant_type=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    oauth_error(response, 400, "invalid_request")


def test_token_with_oversized_body(shared: Server) -> None:
    """A body over max_body_bytes is refused in the OAuth shape (4xx), never 500."""
    http, services = shared.http, shared.services
    limit = services.settings.max_body_bytes
    response = http.post(
        "/token",
        content=b"a" * (limit + 1),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"


def test_token_with_malformed_basic_credentials(shared: Server) -> None:
    """Malformed HTTP Basic client credentials are 401 invalid_client."""
    http = shared.http
    response = http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        headers={"Authorization": "Basic !!!"},
    )
    oauth_error(response, 401, "invalid_client")


def test_token_get_is_not_allowed(shared: Server) -> None:
    """/token answers GET with 405."""
    http = shared.http
    assert http.get("/token").status_code == 405


# bearer tokens on the APIs ---------------------------------------------------------------------


def _grant_viewer(owner: Api, robot: Robot) -> None:
    policy = owner.post(f"/v1/projects/{PROJECT}:getIamPolicy", json={}).json()
    policy["bindings"].append(
        {"role": "roles/iam.serviceAccountViewer", "members": [f"serviceAccount:{robot.email}"]}
    )
    response = owner.post(f"/v1/projects/{PROJECT}:setIamPolicy", json={"policy": policy})
    assert response.status_code == 200, response.text


def _unauthenticated(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": CLOUD_PLATFORM},
        {"scope": None, "aud": "https://iam.googleapis.com/"},
    ],
)
def test_self_signed_jwt_is_accepted_as_bearer(
    shared: Server, robot: Robot, claims: dict[str, Any]
) -> None:
    """An AIP-4111 self-signed JWT (kid, iss = sub = email, scope or aud) authenticates."""
    http, owner, clock = shared.http, shared.owner, shared.clock
    _grant_viewer(owner, robot)
    response = Api(http, robot.self_signed(clock, **claims)).get(f"{ACCOUNTS}/{robot.email}")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "someone-else@example.com"},
        {"iss": "someone-else@example.com"},
        {"sub": None},
        {"scope": None},  # neither scope nor aud
        {"exp_delta": 3601},  # longer than an hour
        {"iat_delta": -7200, "exp_delta": -3600},  # expired
        {"exp": None},
    ],
)
def test_bad_self_signed_jwts_are_rejected(
    shared: Server, robot: Robot, claims: dict[str, Any]
) -> None:
    """Self-signed JWTs with wrong subject, no scope/aud or bad times are 401."""
    http, owner, clock = shared.http, shared.owner, shared.clock
    _grant_viewer(owner, robot)
    now = int(clock.now())
    extra = dict(claims)
    iat = now + extra.pop("iat_delta", 0)
    values: dict[str, Any] = {"iat": iat, "exp": iat + 3600}
    if "exp_delta" in extra:
        values["exp"] = now + extra.pop("exp_delta")
    values.update(extra)
    _unauthenticated(Api(http, robot.self_signed(clock, **values)).get(ACCOUNTS))


def test_self_signed_jwt_without_kid_is_rejected(shared: Server, robot: Robot) -> None:
    """A self-signed JWT must name its key: without kid it is 401."""
    http, owner, clock = shared.http, shared.owner, shared.clock
    _grant_viewer(owner, robot)
    now = int(clock.now())
    claims = {
        "iss": robot.email,
        "sub": robot.email,
        "iat": now,
        "exp": now + 600,
        "scope": CLOUD_PLATFORM,
    }
    _unauthenticated(Api(http, jwt.encode(claims, robot.signer, with_kid=False)).get(ACCOUNTS))


def test_id_token_is_not_a_bearer_token(
    shared: Server, owner_creds: dict[str, str], robot: Robot
) -> None:
    """ID tokens (from either grant) are refused as API bearer tokens."""
    http, clock = shared.http, shared.clock
    user_id_token = refresh(http, owner_creds).json()["id_token"]
    _unauthenticated(Api(http, user_id_token).get(ACCOUNTS))
    sa_id_token = bearer(
        http, robot.assertion(clock, scope=None, target_audience="https://x.example")
    ).json()["id_token"]
    _unauthenticated(Api(http, sa_id_token).get(ACCOUNTS))


def test_expired_access_token_is_rejected(
    http: TestClient, services: Services, clock: FixedClock
) -> None:
    """An access token past its exp (plus a small leeway) is 401."""
    owner_creds = credentials_of(services)
    access = Api(http, refresh(http, owner_creds).json()["access_token"])
    clock.advance(3600 + 29)
    assert access.get(ACCOUNTS).status_code == 200
    clock.advance(1)
    _unauthenticated(access.get(ACCOUNTS))


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt", "Bearer a.b", "Token x"],
)
def test_malformed_authorization_is_unauthenticated(shared: Server, authorization: str) -> None:
    """Missing or malformed Authorization headers are 401 UNAUTHENTICATED."""
    http = shared.http
    headers = {"Authorization": authorization} if authorization else {}
    _unauthenticated(http.get(ACCOUNTS, headers=headers))


def test_security_regression_alg_none_access_token(
    shared: Server, owner_creds: dict[str, str]
) -> None:
    """An unsigned (alg none) copy of a genuine access token is rejected."""
    http = shared.http
    genuine = refresh(http, owner_creds).json()["access_token"]
    header = dict(jwt.unverified_header(genuine))
    header["alg"] = "none"
    _unauthenticated(Api(http, unsigned(header, claims_of(genuine))).get(ACCOUNTS))


def test_security_regression_alg_none_assertion(shared: Server, robot: Robot) -> None:
    """An unsigned (alg none) assertion gets no token from /token."""
    http, clock = shared.http, shared.clock
    header = {"alg": "none", "typ": "JWT", "kid": robot.signer.key_id}
    oauth_error(bearer(http, unsigned(header, robot.claims(clock))), 400, BAD_SIGNATURE)


def test_security_regression_hs256_with_public_key_as_secret(shared: Server, robot: Robot) -> None:
    """HS256 "signed" with the account's public key (algorithm confusion) is rejected."""
    http, clock = shared.http, shared.clock
    public_pem = robot.signer.public.pem.encode()
    for header, claims in (
        ({"alg": "HS256", "typ": "JWT", "kid": robot.signer.key_id}, robot.claims(clock)),
        (
            {"alg": "HS256", "typ": "JWT", "kid": robot.signer.key_id},
            {**robot.claims(clock), "sub": robot.email},
        ),
    ):
        signing_input = unsigned(header, claims).rsplit(".", 1)[0]
        mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        forged = f"{signing_input}.{jwt.b64url_encode(mac)}"
        oauth_error(bearer(http, forged), 400, BAD_SIGNATURE)
        _unauthenticated(Api(http, forged).get(ACCOUNTS))


def test_security_regression_hs256_access_token_with_issuer_key(
    shared: Server, owner_creds: dict[str, str]
) -> None:
    """An at+jwt HS256 token keyed with the issuer's public key is rejected."""
    http, services = shared.http, shared.services
    genuine = refresh(http, owner_creds).json()["access_token"]
    header = dict(jwt.unverified_header(genuine))
    public = services.keyring.verification_key(header["kid"])
    assert public is not None
    public_pem = public.pem.encode()
    header["alg"] = "HS256"
    signing_input = unsigned(header, claims_of(genuine)).rsplit(".", 1)[0]
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    _unauthenticated(Api(http, f"{signing_input}.{jwt.b64url_encode(mac)}").get(ACCOUNTS))


def test_security_regression_es256_header_on_rsa_key(shared: Server, robot: Robot) -> None:
    """An ES256 header over an RSA key id fails closed (401 / invalid_grant), never 500."""
    http, clock = shared.http, shared.clock
    header = {"alg": "ES256", "typ": "JWT", "kid": robot.signer.key_id}
    forged = unsigned(header, robot.claims(clock), b"\x00" * 64)
    oauth_error(bearer(http, forged), 400, BAD_SIGNATURE)
    self_signed = unsigned(header, {**robot.claims(clock), "sub": robot.email}, b"\x00" * 64)
    _unauthenticated(Api(http, self_signed).get(ACCOUNTS))


def test_security_regression_es256_access_token(
    shared: Server, owner_creds: dict[str, str]
) -> None:
    """An at+jwt whose header claims ES256 over the RSA issuer key fails closed with 401."""
    http = shared.http
    genuine = refresh(http, owner_creds).json()["access_token"]
    header = {**jwt.unverified_header(genuine), "alg": "ES256"}
    _unauthenticated(Api(http, unsigned(header, claims_of(genuine), b"\x00" * 64)).get(ACCOUNTS))


def test_security_regression_forged_access_token_with_issuer_kid(
    shared: Server, owner_creds: dict[str, str]
) -> None:
    """An at+jwt naming the issuer's kid but signed by another key is rejected."""
    http = shared.http
    genuine = refresh(http, owner_creds).json()["access_token"]
    kid = jwt.unverified_header(genuine)["kid"]
    forged = jwt.encode(claims_of(genuine), PrivateKey(kid, generate_rsa_key().key), typ="at+jwt")
    _unauthenticated(Api(http, forged).get(ACCOUNTS))


def test_security_regression_user_key_cannot_mint_access_tokens(
    shared: Server, robot: Robot
) -> None:
    """An at+jwt signed with a service account's own key cannot pose as the owner."""
    http, owner, clock = shared.http, shared.owner, shared.clock
    _grant_viewer(owner, robot)
    now = int(clock.now())
    forged = jwt.encode(
        {
            "iss": "https://accounts.google.com",
            "sub": "owner",
            "email": "owner@tokensmith.local",
            "principal_type": "user",
            "scope": CLOUD_PLATFORM,
            "iat": now,
            "exp": now + 600,
        },
        robot.signer,
        typ="at+jwt",
    )
    _unauthenticated(Api(http, forged).get(ACCOUNTS))


# revocation ------------------------------------------------------------------------------------


def test_revoked_refresh_token_cannot_refresh(http: TestClient, services: Services) -> None:
    """After /revoke of the refresh token, the refresh grant is invalid_grant."""
    owner_creds = credentials_of(services)
    response = http.post("/revoke", data={"token": owner_creds["refresh_token"]})
    assert response.status_code == 200, response.text
    assert response.json() == {}
    oauth_error(
        refresh(http, owner_creds),
        400,
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
    )


def test_revoked_access_token_is_rejected(shared: Server, owner_creds: dict[str, str]) -> None:
    """After /revoke of an access token, API calls with it are 401; other tokens still work."""
    http = shared.http
    first = refresh(http, owner_creds).json()["access_token"]
    second = refresh(http, owner_creds).json()["access_token"]
    assert Api(http, first).get(ACCOUNTS).status_code == 200
    assert http.post("/revoke", params={"token": first}).status_code == 200
    _unauthenticated(Api(http, first).get(ACCOUNTS))
    assert Api(http, second).get(ACCOUNTS).status_code == 200


def test_revoke_via_get_and_legacy_path(shared: Server, owner_creds: dict[str, str]) -> None:
    """GET /o/oauth2/revoke?token= revokes too (Google's legacy form)."""
    http = shared.http
    access = refresh(http, owner_creds).json()["access_token"]
    assert http.get("/o/oauth2/revoke", params={"token": access}).status_code == 200
    _unauthenticated(Api(http, access).get(ACCOUNTS))


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({}, "invalid_request"),
        ({"token": "1//unknown"}, "invalid_token"),
        ({"token": "a.b.c"}, "invalid_token"),
    ],
)
def test_revoke_errors(shared: Server, form: dict[str, str], error: str) -> None:
    """/revoke without a token or with an unknown one is a 400 OAuth error."""
    http = shared.http
    oauth_error(http.post("/revoke", data=form), 400, error)


def test_revoke_self_signed_jwt_is_invalid_token(shared: Server, robot: Robot) -> None:
    """A self-signed JWT has nothing to revoke: invalid_token."""
    http, clock = shared.http, shared.clock
    oauth_error(
        http.post("/revoke", data={"token": robot.self_signed(clock)}), 400, "invalid_token"
    )
