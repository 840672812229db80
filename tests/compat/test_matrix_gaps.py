"""Flows of the compatibility matrix that no other module drives (docs/compatibility.md).

- ``py-adc-impersonated``: an application-default-credentials file of type
  ``impersonated_service_account`` (COMPAT.md §2d). google-auth ignores the host in its
  ``service_account_impersonation_url`` and the ``token_uri`` of its authorized_user source, so
  both the source's refresh (oauth2.googleapis.com) and generateAccessToken / generateIdToken
  (iamcredentials.googleapis.com) reach tokensmith only through the proxy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from google.auth.transport.requests import Request
from google.oauth2 import id_token

from tests.compat.conftest import PROJECT, Admin, EnvServer

pytestmark = pytest.mark.slow

AUDIENCE = "https://gaps.example.test/"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"

PROGRAM = r"""
import json, sys

import google.auth
from google.auth.transport.requests import Request
from google.oauth2 import id_token

audience = sys.argv[1]
request = Request()
creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
creds.refresh(request)
print(json.dumps({
    "credentials": f"{type(creds).__module__}.{type(creds).__name__}",
    "access_token": creds.token,
    "id_token": id_token.fetch_id_token(request, audience),
}))
"""


@pytest.mark.compat("py-adc-impersonated")
def test_python_adc_impersonated_service_account_file(
    env_server: EnvServer, tmp_path: Path
) -> None:
    """An impersonated_service_account ADC file (owner as source), named by env --credentials:
    default() impersonates the target, and fetch_id_token gets the target's ID token with its
    email, both through the proxy."""
    admin = Admin(env_server.server)
    try:
        target = admin.create_account("gap-adc-target")
        owner = json.loads(env_server.server.owner_credentials.read_text())["account"]
        admin.grant(
            TOKEN_CREATOR, f"user:{owner}", f"projects/{PROJECT}/serviceAccounts/{target['email']}"
        )
    finally:
        admin.close()
    adc = tmp_path / "impersonated.json"
    written = subprocess.run(
        [
            *(sys.executable, "-m", "tokensmith", "auth", "application-default"),
            *("--type", "impersonated_service_account", "-o", str(adc)),
            *("--impersonate-service-account", target["email"]),
            *("--data-dir", str(env_server.data_dir)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    assert json.loads(adc.read_text())["type"] == "impersonated_service_account"
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    since = env_server.log_offset()

    completed = subprocess.run(
        env_server.with_env([sys.executable, str(program), AUDIENCE], "--credentials", str(adc)),
        env=env_server.client_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["credentials"] == "google.auth.impersonated_credentials.Credentials"
    info = httpx.get(
        f"{env_server.server.url}/tokeninfo",
        params={"access_token": result["access_token"]},
        trust_env=False,
    ).json()
    assert info["email"] == target["email"]
    claims = id_token.verify_token(
        result["id_token"],
        Request(),
        audience=AUDIENCE,
        certs_url=f"{env_server.server.url}/oauth2/v1/certs",
    )
    assert claims["sub"] == target["uniqueId"]
    assert claims["email"] == target["email"]
    assert {"oauth2.googleapis.com", "iamcredentials.googleapis.com"} <= env_server.tunnels(since)
    assert env_server.trap.requests == []
