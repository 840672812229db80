"""The IAM Credentials API over HTTP: the four methods, authorization, delegation, lifetimes."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from starlette.testclient import TestClient

from tests.conftest import Api, service_account_token
from tokensmith.clock import FixedClock, to_datetime

PROJECT = "tokensmith-local"
CLOUD = "https://www.googleapis.com/auth/cloud-platform"
IAM = "https://www.googleapis.com/auth/iam"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
OPENID_CREATOR = "roles/iam.serviceAccountOpenIdTokenCreator"


def email(account_id: str) -> str:
    return f"{account_id}@{PROJECT}.iam.gserviceaccount.com"


def create_account(owner: Api, account_id: str) -> dict[str, Any]:
    response = owner.post(f"/v1/projects/{PROJECT}/serviceAccounts", json={"accountId": account_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


def grant(owner: Api, resource_email: str | None, role: str, member: str, **cond: str) -> None:
    """Add a binding on an account (or on the project when ``resource_email`` is None)."""
    path = (
        f"/v1/projects/{PROJECT}"
        if resource_email is None
        else f"/v1/projects/-/serviceAccounts/{resource_email}"
    )
    policy = owner.post(f"{path}:getIamPolicy", json={"options": {"requestedPolicyVersion": 3}})
    body = policy.json()
    binding: dict[str, Any] = {"role": role, "members": [member]}
    if cond:
        binding["condition"] = cond
        body["version"] = 3
    body.setdefault("bindings", []).append(binding)
    response = owner.post(f"{path}:setIamPolicy", json={"policy": body})
    assert response.status_code == 200, response.text


def key_file(owner: Api, account_email: str) -> dict[str, Any]:
    response = owner.post(f"/v1/projects/-/serviceAccounts/{account_email}/keys", json={})
    assert response.status_code == 200, response.text
    return dict(json.loads(base64.b64decode(response.json()["privateKeyData"])))


class World:
    """An owner, a caller account with a key, and a few target accounts."""

    def __init__(self, http: TestClient, owner: Api, clock: FixedClock) -> None:
        self.http, self.owner, self.clock = http, owner, clock
        for account_id in ("caller", "target", "delegate-a", "delegate-b"):
            create_account(owner, account_id)
        self.caller_key = key_file(owner, email("caller"))
        self.caller = Api(http, service_account_token(http, self.caller_key, clock, IAM))

    def call(self, target: str, method: str, body: dict[str, Any], api: Api | None = None) -> Any:
        api = api or self.caller
        return api.post(f"/v1/projects/-/serviceAccounts/{target}:{method}", json=body)


@pytest.fixture
def world(http: TestClient, owner: Api, clock: FixedClock) -> World:
    return World(http, owner, clock)


def certs(http: TestClient, path: str = "/oauth2/v3/certs") -> Any:
    response = http.get(path)
    assert response.status_code == 200
    assert response.headers["cache-control"].startswith("public, max-age=")
    return response.json()


def verify_id_token(http: TestClient, token: str, audience: str) -> dict[str, Any]:
    """Verify with PyJWT against the published JWKS, the way any OIDC verifier would."""
    header = pyjwt.get_unverified_header(token)
    jwks = {k["kid"]: k for k in certs(http)["keys"]}
    key = pyjwt.PyJWK(jwks[header["kid"]]).key
    return dict(
        pyjwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=audience,
            options={"verify_exp": False, "verify_iat": False},
        )
    )


# --- generateAccessToken --------------------------------------------------------------------


def test_direct_access_token_with_token_creator(world: World) -> None:
    """A caller with TokenCreator on the target gets an access token that acts as the target."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    response = world.call(email("target"), "generateAccessToken", {"scope": [CLOUD]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"accessToken", "expireTime"}
    expected = to_datetime(world.clock.now() + 3600).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["expireTime"] == expected
    info = world.http.get("/tokeninfo", params={"access_token": body["accessToken"]}).json()
    assert info["email"] == email("target")
    assert info["scope"] == CLOUD


def test_expire_time_is_whole_seconds_with_z(world: World) -> None:
    """expireTime is YYYY-MM-DDTHH:MM:SSZ even when the clock has a fractional part."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    world.clock.advance(0.734)
    body = world.call(
        email("target"),
        "generateAccessToken",
        {"scope": [CLOUD], "lifetime": "600s", "delegates": None},
    ).json()
    assert len(body["expireTime"]) == 20
    assert body["expireTime"].endswith("Z")
    assert "." not in body["expireTime"]


def test_project_level_grant_covers_every_account(world: World) -> None:
    """TokenCreator on the project lets the caller impersonate any account of the project."""
    grant(world.owner, None, TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    for target in ("target", "delegate-a"):
        response = world.call(email(target), "generateAccessToken", {"scope": [CLOUD]})
        assert response.status_code == 200, response.text


def test_denied_without_grant_has_googles_shape(world: World) -> None:
    """No binding → 403 PERMISSION_DENIED with Google's message and an ErrorInfo detail."""
    response = world.call(email("target"), "generateAccessToken", {"scope": [CLOUD]})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["status"] == "PERMISSION_DENIED"
    assert error["message"] == (
        "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
    )
    assert error["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "IAM_PERMISSION_DENIED",
            "domain": "iam.googleapis.com",
            "metadata": {"permission": "iam.serviceAccounts.getAccessToken"},
        }
    ]


def test_missing_account_looks_like_denial(world: World) -> None:
    """A target that does not exist gets the very same 403 as a denial."""
    missing = world.call(email("nobody-here"), "generateAccessToken", {"scope": [CLOUD]})
    denied = world.call(email("target"), "generateAccessToken", {"scope": [CLOUD]})
    assert missing.status_code == denied.status_code == 403
    assert missing.json() == denied.json()


def test_openid_token_creator_grants_only_id_tokens(world: World) -> None:
    """OpenIdTokenCreator allows generateIdToken and nothing else."""
    grant(world.owner, email("target"), OPENID_CREATOR, f"serviceAccount:{email('caller')}")
    ok = world.call(email("target"), "generateIdToken", {"audience": "https://a.example"})
    assert ok.status_code == 200, ok.text
    for method, body in (
        ("generateAccessToken", {"scope": [CLOUD]}),
        ("signBlob", {"payload": "aGk="}),
        ("signJwt", {"payload": "{}"}),
    ):
        assert world.call(email("target"), method, body).status_code == 403


def test_owner_role_alone_cannot_impersonate(world: World) -> None:
    """As on Google, roles/owner does not include iam.serviceAccounts.getAccessToken."""
    response = world.call(email("target"), "generateAccessToken", {"scope": [CLOUD]}, world.owner)
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("lifetime", "message"),
    [
        ("1h", "lifetime"),
        ("-5s", "lifetime"),
        ("3601s", "43200"),
        (3600, "lifetime"),
        ("0s", "at least 1 second"),
    ],
)
def test_bad_lifetimes_are_invalid_argument(world: World, lifetime: object, message: str) -> None:
    """Malformed or too long lifetimes are 400 INVALID_ARGUMENT naming the problem."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    response = world.call(
        email("target"), "generateAccessToken", {"scope": [CLOUD], "lifetime": lifetime}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert message in response.json()["error"]["message"]


def test_lifetime_extension_by_org_policy(world: World) -> None:
    """Listing the account in the lifetime-extension constraint allows up to 12 hours."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    body = {"scope": [CLOUD], "lifetime": "43200s"}
    assert world.call(email("target"), "generateAccessToken", body).status_code == 400
    response = world.owner.post(
        f"/v1/projects/{PROJECT}:setOrgPolicy",
        json={
            "policy": {
                "constraint": "constraints/iam.allowServiceAccountCredentialLifetimeExtension",
                "listPolicy": {"allowedValues": [email("target")]},
            }
        },
    )
    assert response.status_code == 200, response.text
    granted = world.call(email("target"), "generateAccessToken", body)
    assert granted.status_code == 200, granted.text
    info = world.http.get("/tokeninfo", params={"access_token": granted.json()["accessToken"]})
    assert int(info.json()["expires_in"]) == 43200
    too_long = world.call(
        email("target"), "generateAccessToken", {"scope": [CLOUD], "lifetime": "43201s"}
    )
    assert too_long.status_code == 400
    other = world.call(email("delegate-a"), "generateAccessToken", body, world.owner)
    assert other.status_code == 403


@pytest.mark.parametrize("scope", [None, [], [""], "", [3]])
def test_scope_is_required(world: World, scope: object) -> None:
    """A missing or empty scope list is 400 naming the scope field."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    body: dict[str, Any] = {} if scope is None else {"scope": scope}
    response = world.call(email("target"), "generateAccessToken", body)
    assert response.status_code == 400
    assert "scope" in response.json()["error"]["message"]


# --- generateIdToken ------------------------------------------------------------------------


def test_id_token_claims_and_verification(world: World) -> None:
    """The ID token is RS256 with kid; sub and azp are the uniqueId; email only when asked."""
    target = world.owner.get(f"/v1/projects/-/serviceAccounts/{email('target')}").json()
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    plain = world.call(email("target"), "generateIdToken", {"audience": "https://svc.example"})
    assert plain.status_code == 200, plain.text
    token = plain.json()["token"]
    header = pyjwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert len(header["kid"]) == 40
    claims = verify_id_token(world.http, token, "https://svc.example")
    assert claims["sub"] == claims["azp"] == target["uniqueId"]
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["exp"] - claims["iat"] == 3600
    assert "email" not in claims
    with_email = world.call(
        email("target"),
        "generateIdToken",
        {"audience": "x", "includeEmail": "true", "useEmailAzp": "true"},
    )
    claims = pyjwt.decode(with_email.json()["token"], options={"verify_signature": False})
    assert claims["email"] == claims["azp"] == email("target")
    assert claims["email_verified"] is True


@pytest.mark.parametrize("audience", [None, "", "a" * 2049, 5])
def test_bad_audience(world: World, audience: object) -> None:
    """A missing, empty, non-string or over-2KB audience is 400 naming audience."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    body = {} if audience is None else {"audience": audience}
    response = world.call(email("target"), "generateIdToken", body)
    assert response.status_code == 400
    assert "audience" in response.json()["error"]["message"]


def test_organization_number_claim(world: World) -> None:
    """organizationNumberIncluded adds google.organization_number (null: no organization)."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    response = world.call(
        email("target"), "generateIdToken", {"audience": "a", "organizationNumberIncluded": True}
    )
    claims = pyjwt.decode(response.json()["token"], options={"verify_signature": False})
    assert claims["google"] == {"organization_number": None}


# --- signBlob / signJwt ---------------------------------------------------------------------


def test_sign_blob_verifies_against_account_certs(world: World) -> None:
    """signBlob's signature verifies with the x509 cert published for the account's keyId."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    response = world.call(
        email("target"), "signBlob", {"payload": base64.b64encode(b"hello blob").decode()}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    published = certs(world.http, f"/service_accounts/v1/metadata/x509/{email('target')}")
    assert published == certs(world.http, f"/robot/v1/metadata/x509/{email('target')}")
    cert = x509.load_pem_x509_certificate(published[body["keyId"]].encode())
    cert.public_key().verify(  # type: ignore[call-arg]
        base64.b64decode(body["signedBlob"]), b"hello blob", padding.PKCS1v15(), hashes.SHA256()
    )


@pytest.mark.parametrize("payload", ["not base64!!", "", None, 42])
def test_sign_blob_bad_payload(world: World, payload: object) -> None:
    """Bad base64, empty or missing payloads are 400 naming payload."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    body = {} if payload is None else {"payload": payload}
    response = world.call(email("target"), "signBlob", body)
    assert response.status_code == 400
    assert "payload" in response.json()["error"]["message"]


def test_sign_jwt_signs_payload_verbatim(world: World) -> None:
    """signJwt's output has header alg/kid/typ, the payload byte for byte, and verifies."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    exp = int(world.clock.now() + 600)
    payload = '{"sub": "x",  "aud": "y", "exp": ' + str(exp) + "}\n"
    response = world.call(email("target"), "signJwt", {"payload": payload})
    assert response.status_code == 200, response.text
    body = response.json()
    header_b64, payload_b64, _ = body["signedJwt"].split(".")
    assert json.loads(base64.urlsafe_b64decode(header_b64 + "==")) == {
        "alg": "RS256",
        "kid": body["keyId"],
        "typ": "JWT",
    }
    assert base64.urlsafe_b64decode(payload_b64 + "==").decode() == payload
    jwks = certs(world.http, f"/service_accounts/v1/metadata/jwk/{email('target')}")
    key = next(k for k in jwks["keys"] if k["kid"] == body["keyId"])
    claims = pyjwt.decode(
        body["signedJwt"],
        pyjwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience="y",
        options={"verify_exp": False},
    )
    assert claims["sub"] == "x"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("[1, 2]", "JSON object"),
        ("not json", "JSON object"),
        ('{"exp": 1}', "past"),
        ('{"exp": 9999999999}', "12 hours"),
        ('{"exp": "soon"}', "integer"),
    ],
)
def test_sign_jwt_rejects_bad_claims(world: World, payload: str, message: str) -> None:
    """Non-object payloads and exp in the past or >12 h ahead are 400."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    response = world.call(email("target"), "signJwt", {"payload": payload})
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


# --- delegation -----------------------------------------------------------------------------


def chain_grants(world: World) -> None:
    """caller → delegate-a → delegate-b → target, each hop with TokenCreator."""
    grant(world.owner, email("delegate-a"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    grant(world.owner, email("delegate-b"), TOKEN_CREATOR, f"serviceAccount:{email('delegate-a')}")
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('delegate-b')}")


@pytest.mark.parametrize(
    "form",
    [
        lambda e, uid: f"projects/-/serviceAccounts/{e}",
        lambda e, uid: e,
        lambda e, uid: uid,
        lambda e, uid: f"projects/-/serviceAccounts/{uid}",
    ],
    ids=["resource-name", "bare-email", "unique-id", "resource-unique-id"],
)
def test_delegation_chain_in_every_form(world: World, form: Any) -> None:
    """A two-delegate chain works with delegates written in each form clients send."""
    chain_grants(world)
    ids = {
        name: world.owner.get(f"/v1/projects/-/serviceAccounts/{email(name)}").json()["uniqueId"]
        for name in ("delegate-a", "delegate-b")
    }
    delegates = [form(email(n), ids[n]) for n in ("delegate-a", "delegate-b")]
    response = world.call(
        email("target"), "generateIdToken", {"audience": "aud", "delegates": delegates}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("missing_hop", [0, 1, 2])
def test_each_delegation_failure_point(world: World, missing_hop: int) -> None:
    """Removing any one hop's grant denies the chain, naming the permission of that hop."""
    hops = [
        (email("delegate-a"), f"serviceAccount:{email('caller')}"),
        (email("delegate-b"), f"serviceAccount:{email('delegate-a')}"),
        (email("target"), f"serviceAccount:{email('delegate-b')}"),
    ]
    for index, (resource, member) in enumerate(hops):
        if index != missing_hop:
            grant(world.owner, resource, TOKEN_CREATOR, member)
    response = world.call(
        email("target"),
        "generateAccessToken",
        {"scope": [CLOUD], "delegates": [email("delegate-a"), email("delegate-b")]},
    )
    assert response.status_code == 403
    permission = response.json()["error"]["details"][0]["metadata"]["permission"]
    expected = (
        "iam.serviceAccounts.getAccessToken"
        if missing_hop == 2
        else "iam.serviceAccounts.implicitDelegation"
    )
    assert permission == expected
    denials = world.http.app.state.services.store.query_audit(outcome="denied")  # type: ignore[attr-defined]
    assert denials[0].permission == expected


def test_direct_grant_does_not_bypass_chain(world: World) -> None:
    """The last delegate, not the caller, must hold the permission on the target."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    grant(world.owner, email("delegate-a"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    response = world.call(
        email("target"),
        "generateAccessToken",
        {"scope": [CLOUD], "delegates": [email("delegate-a")]},
    )
    assert response.status_code == 403


def test_disabled_delegate_is_refused(world: World) -> None:
    """A disabled delegate breaks the chain with a 403, never a 5xx."""
    chain_grants(world)
    world.owner.post(f"/v1/projects/-/serviceAccounts/{email('delegate-b')}:disable")
    response = world.call(
        email("target"),
        "generateAccessToken",
        {"scope": [CLOUD], "delegates": [email("delegate-a"), email("delegate-b")]},
    )
    assert response.status_code == 403


def test_disabled_and_deleted_targets_are_refused(world: World) -> None:
    """Disabled or deleted targets are refused like denials."""
    grant(world.owner, None, TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    world.owner.post(f"/v1/projects/-/serviceAccounts/{email('target')}:disable")
    assert world.call(email("target"), "signBlob", {"payload": "aGk="}).status_code == 403
    world.owner.delete(f"/v1/projects/-/serviceAccounts/{email('delegate-a')}")
    assert world.call(email("delegate-a"), "signBlob", {"payload": "aGk="}).status_code == 403


@pytest.mark.parametrize(
    ("delegates", "message"),
    [
        ("projects/-/serviceAccounts/x@y.z", "list"),
        ([""], "delegates"),
        (["not an email"], "delegates"),
        ([{"name": "x"}], "delegates"),
        (["projects/-/serviceAccounts/a@b.c"] * 11, "at most 10"),
    ],
)
def test_malformed_delegates(world: World, delegates: object, message: str) -> None:
    """Malformed delegate lists are 400 naming delegates."""
    response = world.call(
        email("target"), "generateIdToken", {"audience": "a", "delegates": delegates}
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]


def test_delegation_loop_is_rejected(world: World) -> None:
    """A chain that visits an account twice is 400."""
    chain_grants(world)
    response = world.call(
        email("target"),
        "generateIdToken",
        {
            "audience": "a",
            "delegates": [email("delegate-a"), email("delegate-b"), email("delegate-a")],
        },
    )
    assert response.status_code == 400
    assert "loop" in response.json()["error"]["message"]


def test_audit_records_chain_without_tokens(world: World) -> None:
    """A granted delegated request is audited with the chain, and no token text is stored."""
    chain_grants(world)
    response = world.call(
        email("target"),
        "generateAccessToken",
        {"scope": [CLOUD], "delegates": [email("delegate-a"), email("delegate-b")]},
    )
    token = response.json()["accessToken"]
    store = world.http.app.state.services.store  # type: ignore[attr-defined]
    record = store.query_audit(outcome="granted", limit=1)[0]
    assert record.method == "generateAccessToken"
    assert record.principal == f"serviceAccount:{email('caller')}"
    assert record.detail["chain"] == [
        f"serviceAccount:{email('delegate-a')}",
        f"serviceAccount:{email('delegate-b')}",
    ]
    assert token not in json.dumps(record.detail)
    assert token.split(".")[2] not in json.dumps(record.detail)


# --- conditions, paths and quirks -----------------------------------------------------------


def test_conditional_grant_expires(world: World) -> None:
    """A grant conditioned on request.time stops working once the time passes."""
    grant(
        world.owner,
        email("target"),
        TOKEN_CREATOR,
        f"serviceAccount:{email('caller')}",
        title="temporary",
        expression='request.time < timestamp("2027-01-15T09:00:00Z")',
    )
    body = {"audience": "a"}
    assert world.call(email("target"), "generateIdToken", body).status_code == 200
    world.clock.set(1_800_000_000 + 86400)  # 2027-01-16
    world.caller.token = service_account_token(world.http, world.caller_key, world.clock, IAM)
    assert world.call(email("target"), "generateIdToken", body).status_code == 403


def test_path_prefix_alt_json_and_encoded_email(world: World) -> None:
    """A client path prefix, ?alt=json and a %40-encoded email are all accepted."""
    grant(world.owner, email("target"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    target = email("target").replace("@", "%40")
    for path in (
        f"/prefix/deeper/v1/projects/-/serviceAccounts/{email('target')}:signBlob?alt=json",
        f"/v1/projects/-/serviceAccounts/{target}:signBlob?alt=json",
    ):
        response = world.caller.post(path, json={"payload": "aGk="})
        assert response.status_code == 200, (path, response.text)


def test_unknown_fields_are_rejected(world: World) -> None:
    """An unknown request field is 400 naming it (Google's JSON transcoding does the same)."""
    response = world.call(email("target"), "signBlob", {"payload": "aGk=", "bogus": 1})
    assert response.status_code == 400
    assert "bogus" in response.json()["error"]["message"]


def test_unauthenticated_call(world: World, anonymous: Api) -> None:
    """Without a bearer token the methods answer 401 UNAUTHENTICATED."""
    response = world.call(email("target"), "generateIdToken", {"audience": "a"}, anonymous)
    assert response.status_code == 401


def test_regression_account_may_mint_for_itself(world: World) -> None:
    """Regression: an account with TokenCreator on itself may mint its own ID token (it was
    refused as a delegation loop)."""
    grant(world.owner, email("caller"), TOKEN_CREATOR, f"serviceAccount:{email('caller')}")
    response = world.call(email("caller"), "generateIdToken", {"audience": "self"})
    assert response.status_code == 200, response.text
    looped = world.call(
        email("caller"), "generateIdToken", {"audience": "self", "delegates": [email("caller")]}
    )
    assert looped.status_code == 400
