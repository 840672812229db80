"""The installed gcloud CLI with a service-account key file issued by a live tokensmith server.

gcloud honours the key's ``token_uri`` (COMPAT.md §3c): activation posts an ID-token grant for
gcloud's own client id and an access-token grant; ``print-identity-token`` makes a fresh
``target_audience`` grant. The gcloud configuration is isolated per module and every request
not bound for loopback is trapped (``tests/compat/conftest.py``); the last test shows none was.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from google.auth.transport.requests import Request
from google.oauth2 import id_token

from tests.compat.conftest import PROJECT, Admin, Gcloud, write_key_file
from tokensmith.testing import LiveServer

pytestmark = [pytest.mark.gcloud, pytest.mark.slow]

AUDIENCE = "https://svc.example.com"


@pytest.fixture(scope="module")
def account(admin: Admin) -> dict[str, Any]:
    return admin.create_account("gcloud-runner", "Runs gcloud")


@pytest.fixture(scope="module")
def activation(
    gcloud: Gcloud, admin: Admin, account: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> subprocess.CompletedProcess[str]:
    key_path = write_key_file(admin.create_key(account["email"]), tmp_path_factory.mktemp("keys"))
    return gcloud("auth", "activate-service-account", f"--key-file={key_path}")


@pytest.fixture
def google_request() -> Iterator[Request]:
    with requests.Session() as session:
        yield Request(session)


@pytest.mark.compat("gcloud-key-activate")
def test_activate_service_account_with_server_key(
    activation: subprocess.CompletedProcess[str], account: dict[str, Any]
) -> None:
    """gcloud activates a key file whose token_uri points at the server."""
    assert activation.returncode == 0, activation.stderr
    assert f"Activated service account credentials for: [{account['email']}]" in (activation.stderr)


@pytest.mark.compat("gcloud-key-access-token")
def test_print_access_token_is_accepted_by_the_server(
    live: LiveServer,
    gcloud: Gcloud,
    admin: Admin,
    activation: subprocess.CompletedProcess[str],
    account: dict[str, Any],
) -> None:
    """The token gcloud prints authenticates the account: 403 before a grant, 200 after."""
    assert activation.returncode == 0, activation.stderr
    printed = gcloud("auth", "print-access-token")
    assert printed.returncode == 0, printed.stderr
    token = printed.stdout.strip()
    url = f"{live.url}/v1/projects/{PROJECT}/serviceAccounts/{account['email']}"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=10, trust_env=False) as client:
        denied = client.get(url, headers=headers)
        assert denied.status_code == 403, denied.text
        assert denied.json()["error"]["status"] == "PERMISSION_DENIED"

        admin.grant("roles/iam.serviceAccountViewer", f"serviceAccount:{account['email']}")

        allowed = client.get(url, headers=headers)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["uniqueId"] == account["uniqueId"]


@pytest.mark.compat("gcloud-key-id-token")
def test_print_identity_token_verifies_against_server_certs(
    live: LiveServer,
    gcloud: Gcloud,
    activation: subprocess.CompletedProcess[str],
    account: dict[str, Any],
    google_request: Request,
) -> None:
    """The ID token gcloud prints for an audience verifies against the server's certs."""
    assert activation.returncode == 0, activation.stderr
    printed = gcloud("auth", "print-identity-token", f"--audiences={AUDIENCE}")
    assert printed.returncode == 0, printed.stderr

    claims = id_token.verify_token(
        printed.stdout.strip(),
        google_request,
        audience=AUDIENCE,
        certs_url=f"{live.url}/oauth2/v1/certs",
    )

    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == account["uniqueId"]
    assert claims["email"] == account["email"]


def test_gcloud_sent_nothing_beyond_loopback(
    gcloud: Gcloud, activation: subprocess.CompletedProcess[str]
) -> None:
    """No gcloud request in this module tried to reach a host other than the local server."""
    assert activation.returncode == 0, activation.stderr
    assert gcloud.trap.requests == []
