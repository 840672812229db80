"""Unmodified programs using Google's libraries, configured by nothing but
``eval "$(tokensmith env)"``, against a server running its API, a metadata listener and the
HTTPS proxy: Python google-auth, gcloud and Node google-auth-library (COMPAT.md §1–§6).

The programs hold no tokensmith-specific line. They take their credentials from application
default credentials (``GOOGLE_APPLICATION_CREDENTIALS``, which ``env`` sets to the owner's file
or, with ``--as``, to a key file of a service account) and reach Google's hard-coded hosts
through the proxy, or the server through the overrides ``env`` prints. Each runs in a
subprocess whose environment holds no Google variable before the ``eval`` and sends anything
else to a trap, so nothing can reach Google; the tests check the trap stayed empty.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth.transport.requests import Request
from google.oauth2 import id_token

from tests.compat.conftest import NODE_PROJECT, PROJECT, Admin, EnvServer, Gcloud

pytestmark = pytest.mark.slow

AUDIENCE = "https://dropin.example.test/"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
MESSAGE = "signed by an unmodified program"

# An ordinary program: ADC, impersonation, an ID token checked the way Google documents it.
OWNER_PROGRAM = r"""
import base64, json, sys

import google.auth
from google.auth import impersonated_credentials
from google.auth.transport.requests import Request
from google.oauth2 import id_token

target, audience, message = sys.argv[1:4]
request = Request()
source, _ = google.auth.default()
creds = impersonated_credentials.Credentials(
    source_credentials=source,
    target_principal=target,
    target_scopes=["https://www.googleapis.com/auth/cloud-platform"],
)
creds.refresh(request)
ids = impersonated_credentials.IDTokenCredentials(
    creds, target_audience=audience, include_email=True
)
ids.refresh(request)
print(json.dumps({
    "credentials": f"{type(source).__module__}.{type(source).__name__}",
    "account": source.account,
    "access_token": creds.token,
    "id_token": ids.token,
    "claims": id_token.verify_oauth2_token(ids.token, request, audience),
    "signature": base64.b64encode(creds.sign_bytes(message.encode())).decode(),
}))
"""

SERVICE_ACCOUNT_PROGRAM = r"""
import json, sys

import google.auth
from google.auth.transport.requests import Request
from google.oauth2 import id_token

audience = sys.argv[1]
request = Request()
creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
creds.refresh(request)
token = id_token.fetch_id_token(request, audience)
print(json.dumps({
    "credentials": f"{type(creds).__module__}.{type(creds).__name__}",
    "email": creds.service_account_email,
    "access_token": creds.token,
    "claims": id_token.verify_oauth2_token(token, request, audience),
}))
"""

NODE_PROGRAM = """
import { GoogleAuth } from 'google-auth-library';
const audience = process.argv[1];
const auth = new GoogleAuth({scopes: ['https://www.googleapis.com/auth/cloud-platform']});
const client = await auth.getClient();
const access = await client.getAccessToken();
const ids = await auth.getIdTokenClient(audience);
const idToken = await ids.idTokenProvider.fetchIdToken(audience);
console.log(JSON.stringify({email: client.email, access: access.token, id: idToken}));
"""


@dataclass(frozen=True)
class Accounts:
    """``caller`` (the ``--as`` account) and the owner may both impersonate ``target``."""

    owner: str
    caller: str
    target: str
    target_id: str


@pytest.fixture(scope="module")
def accounts(env_server: EnvServer) -> Accounts:
    admin = Admin(env_server.server)
    try:
        caller = admin.create_account("dropin-caller")["email"]
        target = admin.create_account("dropin-target")
        owner = json.loads(env_server.server.owner_credentials.read_text())["account"]
        resource = f"projects/{PROJECT}/serviceAccounts/{target['email']}"
        admin.grant(TOKEN_CREATOR, f"user:{owner}", resource)
        admin.grant(TOKEN_CREATOR, f"serviceAccount:{caller}", resource)
    finally:
        admin.close()
    return Accounts(owner, caller, target["email"], target["uniqueId"])


def run(command: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    completed = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}"
    return completed.stdout


def tokeninfo(env_server: EnvServer, access_token: str) -> dict[str, Any]:
    response = httpx.get(
        f"{env_server.server.url}/tokeninfo",
        params={"access_token": access_token},
        trust_env=False,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def verified(env_server: EnvServer, token: str) -> dict[str, Any]:
    """The claims of an ID token, verified as a receiving service would, at our certs."""
    certs_url = f"{env_server.server.url}/oauth2/v1/certs"
    return dict(id_token.verify_token(token, Request(), audience=AUDIENCE, certs_url=certs_url))


def signed_by(env_server: EnvServer, email: str, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` verifies with one of the account's published x509 certificates."""
    certs = httpx.get(
        f"{env_server.server.url}/service_accounts/v1/metadata/x509/{email}", trust_env=False
    ).json()
    for pem in certs.values():
        public = x509.load_pem_x509_certificate(pem.encode()).public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        try:
            public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return True
    return False


# --- Python google-auth ---------------------------------------------------------------------


@pytest.mark.compat("py-env")
@pytest.mark.compat("py-adc-authorized-user")
@pytest.mark.compat("py-imp-access-token")
@pytest.mark.compat("py-imp-id-token")
@pytest.mark.compat("py-imp-sign-bytes")
@pytest.mark.compat("py-verify-oauth2-token")
def test_python_program_acts_as_the_owner_and_impersonates(
    env_server: EnvServer, accounts: Accounts, tmp_path: Path
) -> None:
    """After eval of env, ADC is the owner's file; the program impersonates the target for an
    access token, an ID token verify_oauth2_token accepts, and a signature, via the proxy."""
    program = tmp_path / "program.py"
    program.write_text(OWNER_PROGRAM)
    since = env_server.log_offset()
    command = [sys.executable, str(program), accounts.target, AUDIENCE, MESSAGE]
    result = json.loads(run(env_server.with_env(command), env_server.client_env()))

    assert result["credentials"] == "google.oauth2.credentials.Credentials"
    assert result["account"] == accounts.owner
    assert tokeninfo(env_server, result["access_token"])["email"] == accounts.target
    for claims in (result["claims"], verified(env_server, result["id_token"])):
        assert claims["aud"] == AUDIENCE
        assert claims["iss"] == "https://accounts.google.com"
        assert claims["sub"] == accounts.target_id
        assert claims["email"] == accounts.target
    signature = base64.b64decode(result["signature"])
    assert signed_by(env_server, accounts.target, MESSAGE.encode(), signature)
    assert {
        "oauth2.googleapis.com",
        "iamcredentials.googleapis.com",
        "www.googleapis.com",
    } <= env_server.tunnels(since)
    assert env_server.trap.requests == []


@pytest.mark.compat("py-adc-service-account")
def test_python_program_as_a_service_account(
    env_server: EnvServer, accounts: Accounts, tmp_path: Path
) -> None:
    """With env --as EMAIL, ADC is that account's key file: its access token and the ID token
    of fetch_id_token are the account's; the grant goes straight to the key's token_uri."""
    program = tmp_path / "program.py"
    program.write_text(SERVICE_ACCOUNT_PROGRAM)
    since = env_server.log_offset()
    command = env_server.with_env([sys.executable, str(program), AUDIENCE], "--as", accounts.caller)
    result = json.loads(run(command, env_server.client_env()))

    assert result["credentials"] == "google.oauth2.service_account.Credentials"
    assert result["email"] == accounts.caller
    assert tokeninfo(env_server, result["access_token"])["email"] == accounts.caller
    assert result["claims"]["email"] == accounts.caller
    assert result["claims"]["aud"] == AUDIENCE
    assert "oauth2.googleapis.com" not in env_server.tunnels(since)
    assert env_server.trap.requests == []


# --- gcloud -----------------------------------------------------------------------------------

GCLOUD_STEPS = """
gcloud auth activate-service-account --key-file="$GOOGLE_APPLICATION_CREDENTIALS" &&
gcloud auth print-access-token --impersonate-service-account="$1" &&
gcloud auth print-identity-token --impersonate-service-account="$1" --audiences="$2" \
    --include-email
"""


@pytest.mark.gcloud
@pytest.mark.compat("gcloud-env")
@pytest.mark.compat("gcloud-key-activate")
@pytest.mark.compat("gcloud-imp-access-token")
@pytest.mark.compat("gcloud-imp-id-token")
def test_gcloud_after_eval_env(env_server: EnvServer, accounts: Accounts, gcloud: Gcloud) -> None:
    """gcloud with only env --as CALLER: activates the key file env names, then impersonates
    the target for an access and an ID token through the IAM override, not the proxy."""
    since = env_server.log_offset()
    steps = ["bash", "-c", GCLOUD_STEPS, "gcloud-steps", accounts.target, AUDIENCE]
    output = run(env_server.with_env(steps, "--as", accounts.caller), gcloud.env)
    access, identity = output.split()

    assert tokeninfo(env_server, access)["email"] == accounts.target
    claims = verified(env_server, identity)
    assert claims["email"] == accounts.target
    assert claims["sub"] == accounts.target_id
    assert "iamcredentials.googleapis.com" not in env_server.tunnels(since)
    assert gcloud.trap.requests == []


# --- Node google-auth-library -----------------------------------------------------------------


@pytest.mark.node
@pytest.mark.compat("node-env")
@pytest.mark.compat("node-jwt-key")
def test_node_after_eval_env(env_server: EnvServer, accounts: Accounts, node: str) -> None:
    """Node's GoogleAuth with only env --as CALLER: the key file's grants go to the hard-coded
    oauth2.googleapis.com through the proxy, and both tokens are the caller's."""
    since = env_server.log_offset()
    command = [node, "--input-type=module", "-e", NODE_PROGRAM, AUDIENCE]
    output = run(
        env_server.with_env(command, "--as", accounts.caller),
        env_server.client_env(),
        cwd=NODE_PROJECT,
    )
    result = json.loads(output)

    assert result["email"] == accounts.caller
    assert tokeninfo(env_server, result["access"])["email"] == accounts.caller
    claims = verified(env_server, result["id"])
    assert claims["email"] == accounts.caller
    assert claims["aud"] == AUDIENCE
    assert "oauth2.googleapis.com" in env_server.tunnels(since)
    assert env_server.trap.requests == []
