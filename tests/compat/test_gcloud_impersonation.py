"""The installed gcloud CLI impersonating service accounts through a live tokensmith server.

gcloud sends its IAM Credentials calls where ``api_endpoint_overrides/iamcredentials`` points
(COMPAT.md §2c): ``--impersonate-service-account`` (one target, or a comma-separated delegation
chain whose last entry is the target) for ``print-access-token`` and ``print-identity-token``,
and ``iam service-accounts sign-blob`` / ``sign-jwt``. The source is a key file the server
issued, activated with ``auth activate-service-account`` (its ``token_uri`` is the server,
§3c). Every output is checked the way its consumer would: access tokens at ``/tokeninfo``, ID
tokens against ``/oauth2/v1/certs``, signatures against the account's published keys.

gcloud is isolated: a fresh ``CLOUDSDK_CONFIG`` for this module, no prompts, usage reporting,
update checks, surveys or metadata-server probe, and every proxy and metadata address set to a
loopback port that refuses connections, so a request that is not for the server fails rather
than reaching Google. The fixtures are this module's own (one server, one gcloud configuration).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth.transport.requests import Request
from google.oauth2 import id_token

from tests.conftest import require_or_skip
from tokensmith.testing import LiveServer, owner_access_token

pytestmark = [pytest.mark.gcloud, pytest.mark.slow]

PROJECT = "gcloud-imp-project"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
AUDIENCE = "https://svc.example.com"
LOOPBACK = "127.0.0.1,localhost,::1"
GCLOUD_SCOPES = {
    "openid",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/cloud-platform",
}
DENIED_GET_ACCESS_TOKEN = (
    "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
)
DENIED_IMPLICIT_DELEGATION = (
    "Permission 'iam.serviceAccounts.implicitDelegation' denied on resource (or it may not exist)."
)


@dataclass(frozen=True)
class Accounts:
    """Emails of the module's accounts; grants are TokenCreator on the account itself.

    source → target; source → delegate_1 → delegate_2 → chained (chained trusts only
    delegate_2); nobody → denied.
    """

    source: str
    target: str
    delegate_1: str
    delegate_2: str
    chained: str
    denied: str
    unique_ids: dict[str, str]


class Gcloud:
    """``gcloud(*args)`` runs the CLI with this module's isolated configuration."""

    def __init__(self, executable: str, env: dict[str, str]) -> None:
        self.executable = executable
        self.env = env

    def __call__(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.executable, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def executable() -> str:
    found = shutil.which("gcloud")
    require_or_skip(found is not None, "TOKENSMITH_REQUIRE_GCLOUD", "gcloud is not installed")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def server(executable: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("tokensmith") / "data"
    with LiveServer(data_dir, extra_args=["--project", PROJECT]) as live:
        yield live


@pytest.fixture(scope="module")
def owner_api(server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {owner_access_token(server)}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10, trust_env=False) as client:
        yield client


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, f"{response.request.url}: {response.text}"
    body: dict[str, Any] = response.json()
    return body


def _grant_token_creator(owner_api: httpx.Client, member_email: str, on_email: str) -> None:
    resource = f"/v1/projects/{PROJECT}/serviceAccounts/{on_email}"
    policy = _ok(owner_api.post(f"{resource}:getIamPolicy", json={}))
    policy.setdefault("bindings", []).append(
        {"role": TOKEN_CREATOR, "members": [f"serviceAccount:{member_email}"]}
    )
    _ok(owner_api.post(f"{resource}:setIamPolicy", json={"policy": policy}))


@pytest.fixture(scope="module")
def accounts(owner_api: httpx.Client) -> Accounts:
    created = {
        name: _ok(
            owner_api.post(
                f"/v1/projects/{PROJECT}/serviceAccounts", json={"accountId": f"gi-{name}"}
            )
        )
        for name in ("source", "target", "delegate-1", "delegate-2", "chained", "denied")
    }
    email = {name: account["email"] for name, account in created.items()}
    _grant_token_creator(owner_api, email["source"], email["target"])
    _grant_token_creator(owner_api, email["source"], email["delegate-1"])
    _grant_token_creator(owner_api, email["delegate-1"], email["delegate-2"])
    _grant_token_creator(owner_api, email["delegate-2"], email["chained"])
    return Accounts(
        source=email["source"],
        target=email["target"],
        delegate_1=email["delegate-1"],
        delegate_2=email["delegate-2"],
        chained=email["chained"],
        denied=email["denied"],
        unique_ids={account["email"]: account["uniqueId"] for account in created.values()},
    )


@pytest.fixture(scope="module")
def gcloud(
    executable: str,
    server: LiveServer,
    owner_api: httpx.Client,
    accounts: Accounts,
    refusing_address: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Gcloud:
    """gcloud with the server as its iamcredentials endpoint and the source key activated."""
    home = tmp_path_factory.mktemp("gcloud-home")
    config = home / "config"
    config.mkdir()
    # gcloud's cached answer to "am I on Google Compute Engine?": no, never probe.
    (config / "gce").write_text("False")
    refuse = f"http://{refusing_address}"
    cli = Gcloud(
        executable,
        {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "CLOUDSDK_CONFIG": str(config),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
            "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
            "CLOUDSDK_SURVEY_DISABLE_PROMPTS": "true",
            "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
            # Without a metrics environment gcloud probes the metadata server for its user agent.
            "CLOUDSDK_METRICS_ENVIRONMENT": "tokensmith-tests",
            "GCE_METADATA_ROOT": refusing_address,
            "GCE_METADATA_HOST": refusing_address,
            "GCE_METADATA_IP": refusing_address,
            # Loopback goes direct; anything else meets a refused connection, never Google.
            "HTTP_PROXY": refuse,
            "HTTPS_PROXY": refuse,
            "http_proxy": refuse,
            "https_proxy": refuse,
            "NO_PROXY": LOOPBACK,
            "no_proxy": LOOPBACK,
        },
    )
    created = _ok(owner_api.post(f"/v1/projects/-/serviceAccounts/{accounts.source}/keys", json={}))
    key_path = home / "source-key.json"
    key_path.write_bytes(base64.b64decode(created["privateKeyData"]))
    key_path.chmod(0o600)
    for args in (
        ("config", "set", "api_endpoint_overrides/iamcredentials", f"{server.url}/"),
        ("auth", "activate-service-account", f"--key-file={key_path}"),
    ):
        done = cli(*args)
        assert done.returncode == 0, f"gcloud {' '.join(args)}: {done.stderr}"
    return cli


@pytest.fixture
def google_request() -> Iterator[Request]:
    with requests.Session() as session:
        session.trust_env = False
        yield Request(session)


def _tokeninfo(server: LiveServer, access_token: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/tokeninfo", params={"access_token": access_token}, trust_env=False
    )
    return _ok(response)


def _signing_key_id(stderr: str) -> str:
    found = re.search(r"using key \[([0-9a-f]+)\]", stderr)
    assert found is not None, stderr
    return found.group(1)


def _verify_blob(
    server: LiveServer, email: str, key_id: str, data: bytes, signature: bytes
) -> None:
    certs = _ok(
        httpx.get(f"{server.url}/service_accounts/v1/metadata/x509/{email}", trust_env=False)
    )
    public = x509.load_pem_x509_certificate(certs[key_id].encode()).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.compat("gcloud-imp-access-token")
def test_print_access_token_impersonates_the_target(
    server: LiveServer, gcloud: Gcloud, accounts: Accounts
) -> None:
    """print-access-token --impersonate-service-account prints a token the server takes as T."""
    printed = gcloud(
        "auth", "print-access-token", f"--impersonate-service-account={accounts.target}"
    )

    assert printed.returncode == 0, printed.stderr
    info = _tokeninfo(server, printed.stdout.strip())
    assert info["email"] == accounts.target
    assert info["sub"] == accounts.unique_ids[accounts.target]
    assert set(info["scope"].split()) >= GCLOUD_SCOPES
    assert 3500 <= int(info["expires_in"]) <= 3600


@pytest.mark.parametrize("include_email", [True, False], ids=["include-email", "no-email"])
@pytest.mark.compat("gcloud-imp-id-token")
def test_print_identity_token_verifies_against_server_certs(
    server: LiveServer,
    gcloud: Gcloud,
    accounts: Accounts,
    google_request: Request,
    include_email: bool,
) -> None:
    """print-identity-token as T verifies at /oauth2/v1/certs; email only with --include-email."""
    printed = gcloud(
        "auth",
        "print-identity-token",
        f"--impersonate-service-account={accounts.target}",
        f"--audiences={AUDIENCE}",
        *(["--include-email"] if include_email else []),
    )

    assert printed.returncode == 0, printed.stderr
    claims = id_token.verify_token(
        printed.stdout.strip(),
        google_request,
        audience=AUDIENCE,
        certs_url=f"{server.url}/oauth2/v1/certs",
    )
    assert claims["aud"] == AUDIENCE
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["sub"] == accounts.unique_ids[accounts.target]
    if include_email:
        assert claims["email"] == accounts.target
        assert claims["email_verified"] is True
    else:
        assert "email" not in claims


@pytest.mark.compat("gcloud-imp-chain")
def test_delegation_chain_reaches_the_target(
    server: LiveServer, gcloud: Gcloud, accounts: Accounts
) -> None:
    """A comma-separated chain d1,d2,T yields T's token where only d2 may impersonate T."""
    chain = f"{accounts.delegate_1},{accounts.delegate_2},{accounts.chained}"

    printed = gcloud("auth", "print-access-token", f"--impersonate-service-account={chain}")

    assert printed.returncode == 0, printed.stderr
    info = _tokeninfo(server, printed.stdout.strip())
    assert info["email"] == accounts.chained
    assert info["sub"] == accounts.unique_ids[accounts.chained]


def test_delegation_chain_with_a_missing_hop_is_denied(gcloud: Gcloud, accounts: Accounts) -> None:
    """A chain whose first hop is not granted (source may not act as d2) fails with a 403."""
    chain = f"{accounts.delegate_2},{accounts.chained}"

    printed = gcloud("auth", "print-access-token", f"--impersonate-service-account={chain}")

    assert printed.returncode != 0
    assert printed.stdout == ""
    assert "PERMISSION_DENIED" in printed.stderr
    assert DENIED_IMPLICIT_DELEGATION in printed.stderr


def test_denied_impersonation_shows_googles_permission_denied(
    gcloud: Gcloud, accounts: Accounts
) -> None:
    """Impersonating an account without a grant exits non-zero with Google's 403 message."""
    printed = gcloud(
        "auth", "print-access-token", f"--impersonate-service-account={accounts.denied}"
    )

    assert printed.returncode != 0
    assert printed.stdout == ""
    assert "PERMISSION_DENIED" in printed.stderr
    assert f"Failed to impersonate [{accounts.denied}]" in printed.stderr
    assert DENIED_GET_ACCESS_TOKEN in printed.stderr
    assert "reason: IAM_PERMISSION_DENIED" in printed.stderr


@pytest.mark.compat("gcloud-sign-blob")
def test_sign_blob_verifies_against_published_x509(
    server: LiveServer, gcloud: Gcloud, accounts: Accounts, tmp_path: Path
) -> None:
    """sign-blob writes a signature that verifies with T's published cert for the printed key."""
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"signed by gcloud through tokensmith\n")
    signature = tmp_path / "blob.sig"

    signed = gcloud(
        "iam",
        "service-accounts",
        "sign-blob",
        f"--iam-account={accounts.target}",
        str(blob),
        str(signature),
    )

    assert signed.returncode == 0, signed.stderr
    key_id = _signing_key_id(signed.stderr)
    _verify_blob(server, accounts.target, key_id, blob.read_bytes(), signature.read_bytes())


@pytest.mark.compat("gcloud-sign-jwt")
def test_sign_jwt_verifies_against_published_jwk(
    server: LiveServer, gcloud: Gcloud, accounts: Accounts, tmp_path: Path
) -> None:
    """sign-jwt writes a JWT that verifies with T's published JWK and carries the claims given."""
    claims = {"iss": accounts.target, "sub": accounts.target, "aud": AUDIENCE, "n": 7}
    claims_file = tmp_path / "claims.json"
    claims_file.write_text(json.dumps(claims) + "\n")
    output = tmp_path / "signed.jwt"

    signed = gcloud(
        "iam",
        "service-accounts",
        "sign-jwt",
        f"--iam-account={accounts.target}",
        str(claims_file),
        str(output),
    )

    assert signed.returncode == 0, signed.stderr
    token = output.read_text().strip()
    key_id = _signing_key_id(signed.stderr)
    assert jwt.get_unverified_header(token)["kid"] == key_id
    published = _ok(
        httpx.get(
            f"{server.url}/service_accounts/v1/metadata/jwk/{accounts.target}", trust_env=False
        )
    )
    key = jwt.PyJWKSet.from_dict(published)[key_id]
    assert jwt.decode(token, key, algorithms=["RS256"], audience=AUDIENCE) == claims


@pytest.mark.compat("gcloud-sign-blob")
def test_endpoint_override_with_a_path_prefix(
    server: LiveServer, gcloud: Gcloud, accounts: Accounts, tmp_path: Path
) -> None:
    """With the override at {url}/prefix/ gcloud posts under the prefix and the server signs."""
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"prefixed")
    signature = tmp_path / "blob.sig"

    signed = gcloud(
        "iam",
        "service-accounts",
        "sign-blob",
        f"--iam-account={accounts.target}",
        str(blob),
        str(signature),
        "--log-http",
        env={"CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS": f"{server.url}/prefix/"},
    )

    assert signed.returncode == 0, signed.stderr
    sent = f"uri: {server.url}/prefix/v1/projects/-/serviceAccounts/{accounts.target}:signBlob"
    assert sent in signed.stderr
    key_id = _signing_key_id(signed.stderr)
    _verify_blob(server, accounts.target, key_id, blob.read_bytes(), signature.read_bytes())
