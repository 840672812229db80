"""IAM API v1 ``projects.serviceAccounts.keys`` over HTTP: create, list, get, disable, enable
and delete of user-managed keys, and what each does to the jwt-bearer grant.

The tests share one server (``shared``); each works on an account of its own (``account``).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.testclient import TestClient

from tests.conftest import Api, service_account_token
from tests.conftest import SharedServer as Server
from tokensmith.clock import FixedClock
from tokensmith.crypto import jwt
from tokensmith.crypto.keys import PrivateKey, load_private_pem

PROJECT = "tokensmith-local"
ACCOUNTS = f"/v1/projects/{PROJECT}/serviceAccounts"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def error_of(response: Any, code: int, status: str) -> dict[str, Any]:
    assert response.status_code == code, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (code, status)
    return dict(error)


_ACCOUNT_NUMBERS = itertools.count()


@pytest.fixture
def account(shared: Server) -> dict[str, Any]:
    """A fresh account of this test's own on the shared server."""
    account_id = f"key-holder-{next(_ACCOUNT_NUMBERS)}"
    response = shared.owner.post(ACCOUNTS, json={"accountId": account_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


def keys_path(account: dict[str, Any]) -> str:
    return f"{ACCOUNTS}/{account['email']}/keys"


def create_key(owner: Api, account: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = owner.post(keys_path(account), json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def key_file_of(created: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(created["privateKeyData"])))


def key_id_of(created: dict[str, Any]) -> str:
    return str(created["name"].rsplit("/", 1)[1])


def assertion(key_file: dict[str, Any], clock: FixedClock, *, with_kid: bool = True) -> str:
    signer = load_private_pem(key_file["private_key_id"], key_file["private_key"].encode())
    now = int(clock.now())
    return jwt.encode(
        {
            "iss": key_file["client_email"],
            "aud": "https://oauth2.googleapis.com/token",
            "iat": now,
            "exp": now + 3600,
            "scope": "https://www.googleapis.com/auth/cloud-platform",
        },
        signer,
        with_kid=with_kid,
    )


def grant(http: TestClient, token: str) -> Any:
    return http.post("/token", data={"grant_type": JWT_BEARER, "assertion": token})


# create ---------------------------------------------------------------------------------------


def test_create_returns_google_key_file(shared: Server, account: dict[str, Any]) -> None:
    """privateKeyData is a base64 Google key file pointing at this server's /token."""
    owner = shared.owner
    created = create_key(owner, account)
    key_id = key_id_of(created)
    assert re.fullmatch(r"[0-9a-f]{40}", key_id)
    assert created["name"] == f"projects/{PROJECT}/serviceAccounts/{account['email']}/keys/{key_id}"
    assert created["privateKeyType"] == "TYPE_GOOGLE_CREDENTIALS_FILE"
    assert created["keyAlgorithm"] == "KEY_ALG_RSA_2048"
    assert created["keyType"] == "USER_MANAGED"
    assert created["validAfterTime"] == "2027-01-15T08:00:00Z"
    assert created["validBeforeTime"] == "9999-12-31T23:59:59Z"
    key_file = key_file_of(created)
    assert key_file["type"] == "service_account"
    assert key_file["project_id"] == PROJECT
    assert key_file["private_key_id"] == key_id
    assert key_file["private_key"].startswith("-----BEGIN PRIVATE KEY-----\n")
    assert key_file["client_email"] == account["email"]
    assert key_file["client_id"] == account["uniqueId"]
    assert key_file["token_uri"] == "http://127.0.0.1:18080/token"


def test_private_key_matches_published_certificate(shared: Server, account: dict[str, Any]) -> None:
    """The private key in the file is the one whose certificate keys.get publishes."""
    owner = shared.owner
    created = create_key(owner, account)
    private = serialization.load_pem_private_key(key_file_of(created)["private_key"].encode(), None)
    response = owner.get(
        f"{keys_path(account)}/{key_id_of(created)}", params={"publicKeyType": "TYPE_X509_PEM_FILE"}
    )
    assert response.status_code == 200, response.text
    cert = x509.load_pem_x509_certificate(base64.b64decode(response.json()["publicKeyData"]))
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(der, spki) == private.public_key().public_bytes(der, spki)


def test_raw_public_key_matches_private_key(shared: Server, account: dict[str, Any]) -> None:
    """publicKeyType TYPE_RAW_PUBLIC_KEY publishes the PEM public half of the key."""
    owner = shared.owner
    created = create_key(owner, account)
    private = serialization.load_pem_private_key(key_file_of(created)["private_key"].encode(), None)
    response = owner.get(
        f"{keys_path(account)}/{key_id_of(created)}",
        params={"publicKeyType": "TYPE_RAW_PUBLIC_KEY"},
    )
    public = serialization.load_pem_public_key(base64.b64decode(response.json()["publicKeyData"]))
    assert public.public_numbers() == private.public_key().public_numbers()  # type: ignore[union-attr]


def test_server_keeps_no_private_key(shared: Server, account: dict[str, Any]) -> None:
    """The store holds only the public half of a user-managed key."""
    owner, services = shared.owner, shared.services
    created = create_key(owner, account)
    record = services.store.get_key(key_id_of(created))
    assert record is not None
    assert record.private_key_sealed is None
    assert "PRIVATE" not in record.public_key_pem
    assert "PRIVATE" not in record.certificate_pem


def test_key_file_works_with_jwt_bearer(shared: Server, account: dict[str, Any]) -> None:
    """The key file's private key gets an access token from /token."""
    owner, http, clock = shared.owner, shared.http, shared.clock
    token = service_account_token(http, key_file_of(create_key(owner, account)), clock)
    assert token.count(".") == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"privateKeyType": "TYPE_PKCS12_FILE"}, "privateKeyType"),
        ({"privateKeyType": "TYPE_UNSPECIFIED_X"}, "privateKeyType"),
        ({"keyAlgorithm": "KEY_ALG_RSA_1024"}, "keyAlgorithm"),
        ({"keyAlgorithm": "KEY_ALG_EC"}, "keyAlgorithm"),
        ({"publicKeyData": "abc"}, "publicKeyData"),
    ],
)
def test_create_rejects_unsupported_options(
    shared: Server, account: dict[str, Any], body: dict[str, str], field: str
) -> None:
    """Unsupported key types, algorithms or unknown fields are 400 naming the field."""
    owner, services = shared.owner, shared.services
    response = owner.post(keys_path(account), json=body)
    assert field in error_of(response, 400, "INVALID_ARGUMENT")["message"]
    assert list(services.store.list_keys(account["uniqueId"])) == []


def test_eleventh_user_managed_key_is_refused(shared: Server, account: dict[str, Any]) -> None:
    """An account holds at most 10 user-managed keys; the 11th is FAILED_PRECONDITION."""
    owner = shared.owner
    for _ in range(10):
        create_key(owner, account)
    error = error_of(owner.post(keys_path(account), json={}), 400, "FAILED_PRECONDITION")
    assert "10" in error["message"]
    assert len(owner.get(keys_path(account)).json()["keys"]) == 10


def test_deleting_a_key_frees_a_slot(shared: Server, account: dict[str, Any]) -> None:
    """After deleting one of 10 keys, an 11th can be created."""
    owner = shared.owner
    created = [create_key(owner, account) for _ in range(10)]
    assert owner.delete(f"{keys_path(account)}/{key_id_of(created[0])}").status_code == 200
    create_key(owner, account)


def test_create_for_unknown_account(shared: Server) -> None:
    """Creating a key for a missing account is 404 in its project, 403 through projects/-/."""
    owner = shared.owner
    email = f"nobody-here@{PROJECT}.iam.gserviceaccount.com"
    error_of(owner.post(f"{ACCOUNTS}/{email}/keys", json={}), 404, "NOT_FOUND")
    error = error_of(
        owner.post(f"/v1/projects/-/serviceAccounts/{email}/keys", json={}),
        403,
        "PERMISSION_DENIED",
    )
    assert error["message"] == (
        "Permission 'iam.serviceAccountKeys.create' denied on resource (or it may not exist)."
    )


# list and get ---------------------------------------------------------------------------------


def test_list_returns_key_metadata_without_secrets(shared: Server, account: dict[str, Any]) -> None:
    """list returns each key's name, times, algorithm and type, and never private data."""
    owner = shared.owner
    first = create_key(owner, account)
    second = create_key(owner, account)
    response = owner.get(keys_path(account))
    assert response.status_code == 200, response.text
    keys = response.json()["keys"]
    assert sorted(k["name"] for k in keys) == sorted([first["name"], second["name"]])
    for key in keys:
        assert key["keyType"] == "USER_MANAGED"
        assert key["keyAlgorithm"] == "KEY_ALG_RSA_2048"
        assert "privateKeyData" not in key


def test_list_filters_by_key_type(shared: Server, account: dict[str, Any]) -> None:
    """keyTypes=SYSTEM_MANAGED excludes user-managed keys; USER_MANAGED includes them."""
    owner = shared.owner
    create_key(owner, account)
    assert owner.get(keys_path(account), params={"keyTypes": "SYSTEM_MANAGED"}).json() == {}
    user = owner.get(keys_path(account), params={"keyTypes": "USER_MANAGED"}).json()
    assert len(user["keys"]) == 1
    both = owner.get(
        keys_path(account), params=[("keyTypes", "USER_MANAGED"), ("keyTypes", "SYSTEM_MANAGED")]
    ).json()
    assert len(both["keys"]) == 1


def test_list_with_bad_key_type_is_invalid(shared: Server, account: dict[str, Any]) -> None:
    """An unknown keyTypes value is 400 naming it."""
    owner = shared.owner
    response = owner.get(keys_path(account), params={"keyTypes": "ALL_OF_THEM"})
    assert "ALL_OF_THEM" in error_of(response, 400, "INVALID_ARGUMENT")["message"]


@pytest.mark.parametrize("params", [{}, {"publicKeyType": "TYPE_NONE"}])
def test_get_without_public_key_type_returns_metadata_only(
    shared: Server, account: dict[str, Any], params: dict[str, str]
) -> None:
    """get returns the key's metadata; by default (TYPE_NONE) no public key, as on Google."""
    owner = shared.owner
    created = create_key(owner, account)
    response = owner.get(f"{keys_path(account)}/{key_id_of(created)}", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {k: v for k, v in created.items() if not k.startswith("private")}
    assert "publicKeyData" not in body


def test_get_with_bad_public_key_type_is_invalid(shared: Server, account: dict[str, Any]) -> None:
    """An unknown publicKeyType is 400."""
    owner = shared.owner
    created = create_key(owner, account)
    response = owner.get(
        f"{keys_path(account)}/{key_id_of(created)}", params={"publicKeyType": "TYPE_JWK"}
    )
    assert "publicKeyType" in error_of(response, 400, "INVALID_ARGUMENT")["message"]


def test_get_unknown_key_is_not_found(shared: Server, account: dict[str, Any]) -> None:
    """A key id the account does not have is 404."""
    owner = shared.owner
    error_of(owner.get(f"{keys_path(account)}/{'0' * 40}"), 404, "NOT_FOUND")


def test_key_of_other_account_is_not_found(shared: Server, account: dict[str, Any]) -> None:
    """A key is only reachable under the account that owns it."""
    owner = shared.owner
    created = create_key(owner, account)
    other = owner.post(ACCOUNTS, json={"accountId": "other-holder"}).json()
    error_of(owner.get(f"{keys_path(other)}/{key_id_of(created)}"), 404, "NOT_FOUND")


def test_key_path_with_extra_segments_is_not_found(shared: Server, account: dict[str, Any]) -> None:
    """A path below a key (…/keys/K/x) is 404."""
    owner = shared.owner
    created = create_key(owner, account)
    error_of(owner.get(f"{keys_path(account)}/{key_id_of(created)}/x"), 404, "NOT_FOUND")


# disable, enable, delete ----------------------------------------------------------------------


def test_disabled_key_cannot_sign_assertions(shared: Server, account: dict[str, Any]) -> None:
    """After disable, the key's assertions get invalid_grant "Invalid JWT Signature."."""
    owner, http, clock = shared.owner, shared.http, shared.clock
    created = create_key(owner, account)
    key_file = key_file_of(created)
    path = f"{keys_path(account)}/{key_id_of(created)}"
    response = owner.post(f"{path}:disable", json={})
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert owner.get(path).json()["disabled"] is True
    refused = grant(http, assertion(key_file, clock))
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid JWT Signature.",
    }
    assert owner.post(f"{path}:enable").status_code == 200
    assert "disabled" not in owner.get(path).json()
    assert grant(http, assertion(key_file, clock)).status_code == 200


def test_disabled_key_self_signed_jwt_is_rejected(shared: Server, account: dict[str, Any]) -> None:
    """A self-signed JWT from a disabled key is 401 on the API."""
    owner, http, clock = shared.owner, shared.http, shared.clock
    created = create_key(owner, account)
    key_file = key_file_of(created)
    signer = load_private_pem(key_file["private_key_id"], key_file["private_key"].encode())
    token = _self_signed(signer, account["email"], clock)
    caller = Api(http, token)
    assert caller.get(keys_path(account)).status_code == 403  # authenticated, no role
    owner.post(f"{keys_path(account)}/{key_id_of(created)}:disable")
    error_of(caller.get(keys_path(account)), 401, "UNAUTHENTICATED")


def test_delete_key_then_get_is_not_found(shared: Server, account: dict[str, Any]) -> None:
    """A deleted key is gone from get and list, and its assertions are refused."""
    owner, http, clock = shared.owner, shared.http, shared.clock
    created = create_key(owner, account)
    path = f"{keys_path(account)}/{key_id_of(created)}"
    response = owner.delete(path)
    assert response.status_code == 200
    assert response.json() == {}
    error_of(owner.get(path), 404, "NOT_FOUND")
    assert owner.get(keys_path(account)).json() == {}
    error_of(owner.delete(path), 404, "NOT_FOUND")
    refused = grant(http, assertion(key_file_of(created), clock))
    assert refused.json()["error"] == "invalid_grant"


def test_unknown_key_verb_is_not_found(shared: Server, account: dict[str, Any]) -> None:
    """An unknown ``:verb`` on a key is 404."""
    owner = shared.owner
    created = create_key(owner, account)
    error_of(
        owner.post(f"{keys_path(account)}/{key_id_of(created)}:rotate", json={}), 404, "NOT_FOUND"
    )


def test_other_keys_still_work_after_one_is_disabled(
    shared: Server, account: dict[str, Any]
) -> None:
    """Disabling one key leaves the account's other keys usable, with or without kid."""
    owner, http, clock = shared.owner, shared.http, shared.clock
    first, second = create_key(owner, account), create_key(owner, account)
    owner.post(f"{keys_path(account)}/{key_id_of(first)}:disable")
    assert grant(http, assertion(key_file_of(second), clock)).status_code == 200
    assert grant(http, assertion(key_file_of(second), clock, with_kid=False)).status_code == 200
    refused = grant(http, assertion(key_file_of(first), clock, with_kid=False))
    assert refused.json()["error_description"] == "Invalid JWT Signature."


def test_key_operations_are_audited(shared: Server, account: dict[str, Any]) -> None:
    """Creating, disabling and deleting a key are each recorded with the key id."""
    owner, services = shared.owner, shared.services
    created = create_key(owner, account)
    key_id = key_id_of(created)
    owner.post(f"{keys_path(account)}/{key_id}:disable")
    owner.delete(f"{keys_path(account)}/{key_id}")
    records = services.store.query_audit(
        resource=f"projects/{PROJECT}/serviceAccounts/{account['email']}"
    )
    keyed = {r.method for r in records if r.detail.get("keyId") == key_id}
    assert keyed == {
        "CreateServiceAccountKey",
        "DisableServiceAccountKey",
        "DeleteServiceAccountKey",
    }


def _self_signed(signer: PrivateKey, email: str, clock: FixedClock) -> str:
    now = int(clock.now())
    return jwt.encode(
        {
            "iss": email,
            "sub": email,
            "aud": "https://iam.googleapis.com/",
            "iat": now,
            "exp": now + 3600,
        },
        signer,
    )
