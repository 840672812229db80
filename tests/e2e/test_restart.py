"""A real server process stopped by a signal and started again on the same data directory.

Everything a first process created — accounts, keys, IAM policies (one conditional), an org
policy, the owner's credentials — is there for the second, unchanged (same etags); tokens the
first process issued are still accepted and still verify, because the issuer keys persist.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from google.auth.transport.requests import Request
from google.oauth2 import id_token, service_account

from tokensmith.testing import LiveServer

pytestmark = pytest.mark.slow

PROJECT = "restart-project"
AUDIENCE = "https://svc.example.com"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
LIFETIME_EXTENSION = "constraints/iam.allowServiceAccountCredentialLifetimeExtension"
CONDITION = {
    "title": "until 2100",
    "description": "expires with the century",
    "expression": 'request.time < timestamp("2100-01-01T00:00:00Z")',
}


def _json(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, f"{response.request.url}: {response.text}"
    body: dict[str, Any] = response.json()
    return body


def _refresh_grant(server: LiveServer, owner: dict[str, str]) -> str:
    """An owner access token from the refresh grant, with credentials read before a restart."""
    response = httpx.post(
        f"{server.url}/token",
        data={
            "grant_type": "refresh_token",
            "client_id": owner["client_id"],
            "client_secret": owner["client_secret"],
            "refresh_token": owner["refresh_token"],
        },
        timeout=10,
        trust_env=False,
    )
    return str(_json(response)["access_token"])


def _client(server: LiveServer, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        trust_env=False,
    )


@dataclasses.dataclass
class Snapshot:
    """What the first process handed out, read back before it stopped."""

    owner_file: str
    owner_token: str
    alpha: dict[str, Any]
    beta: dict[str, Any]
    alpha_keys: dict[str, Any]
    key_path: Path
    project_policy: dict[str, Any]
    beta_policy: dict[str, Any]
    org_policy: dict[str, Any]
    alpha_token: str
    alpha_id_token: str
    certs: dict[str, str]


def _populate(server: LiveServer, workdir: Path) -> Snapshot:
    owner_file = server.owner_credentials.read_text()
    owner_token = _refresh_grant(server, json.loads(owner_file))
    api = f"/v1/projects/{PROJECT}"
    with _client(server, owner_token) as owner:
        alpha = _json(owner.post(f"{api}/serviceAccounts", json={"accountId": "restart-alpha"}))
        beta = _json(
            owner.post(
                f"{api}/serviceAccounts",
                json={"accountId": "restart-beta", "serviceAccount": {"description": "b"}},
            )
        )
        created = _json(owner.post(f"{api}/serviceAccounts/{alpha['email']}/keys", json={}))
        key_path = workdir / "alpha-key.json"
        key_path.write_bytes(base64.b64decode(created["privateKeyData"]))
        alpha_keys = _json(owner.get(f"{api}/serviceAccounts/{alpha['email']}/keys"))

        policy = _json(owner.post(f"{api}:getIamPolicy", json={}))
        policy["version"] = 3
        policy["bindings"].append(
            {
                "role": "roles/iam.serviceAccountViewer",
                "members": [f"serviceAccount:{alpha['email']}"],
                "condition": CONDITION,
            }
        )
        _json(owner.post(f"{api}:setIamPolicy", json={"policy": policy}))
        project_policy = _json(
            owner.post(f"{api}:getIamPolicy", json={"options": {"requestedPolicyVersion": 3}})
        )

        beta_resource = f"{api}/serviceAccounts/{beta['email']}"
        _json(
            owner.post(
                f"{beta_resource}:setIamPolicy",
                json={
                    "policy": {
                        "bindings": [
                            {
                                "role": "roles/iam.serviceAccountTokenCreator",
                                "members": [f"serviceAccount:{alpha['email']}"],
                            }
                        ]
                    }
                },
            )
        )
        beta_policy = _json(owner.post(f"{beta_resource}:getIamPolicy", json={}))

        _json(
            owner.post(
                f"{api}:setOrgPolicy",
                json={
                    "policy": {
                        "constraint": LIFETIME_EXTENSION,
                        "listPolicy": {"allowedValues": [alpha["email"]]},
                    }
                },
            )
        )
        org_policy = _json(
            owner.post(f"{api}:getOrgPolicy", json={"constraint": LIFETIME_EXTENSION})
        )

        certs = _json(owner.get("/oauth2/v1/certs"))

    with requests.Session() as session:
        request = Request(session)
        access = service_account.Credentials.from_service_account_file(
            str(key_path), scopes=[CLOUD_PLATFORM]
        )
        access.refresh(request)
        identity = service_account.IDTokenCredentials.from_service_account_file(
            str(key_path), target_audience=AUDIENCE
        )
        identity.refresh(request)
    return Snapshot(
        owner_file=owner_file,
        owner_token=owner_token,
        alpha=alpha,
        beta=beta,
        alpha_keys=alpha_keys,
        key_path=key_path,
        project_policy=project_policy,
        beta_policy=beta_policy,
        org_policy=org_policy,
        alpha_token=access.token,
        alpha_id_token=identity.token,
        certs=certs,
    )


@dataclasses.dataclass
class Restarted:
    before: Snapshot
    exit_code: int | None
    first_log: str
    server: LiveServer


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restarted]:
    workdir = tmp_path_factory.mktemp("restart")
    first = LiveServer(workdir / "data", extra_args=["--project", PROJECT]).start()
    try:
        before = _populate(first, workdir)
    finally:
        exit_code = first.stop()  # SIGTERM
    first_log = first.log_path.read_text()
    second = LiveServer(workdir / "data", port=first.port, extra_args=["--project", PROJECT])
    with second:
        yield Restarted(before, exit_code, first_log, second)


@pytest.fixture
def owner(restarted: Restarted) -> Iterator[httpx.Client]:
    with _client(restarted.server, _refresh_grant(restarted.server, _owner(restarted))) as client:
        yield client


def _owner(restarted: Restarted) -> dict[str, str]:
    owner: dict[str, str] = json.loads(restarted.before.owner_file)
    return owner


def test_sigterm_stops_the_server_cleanly(restarted: Restarted) -> None:
    """SIGTERM ends `tokensmith serve` with exit code 0 after printing "tokensmith stopped"."""
    assert restarted.exit_code == 0, restarted.first_log[-2000:]
    assert "tokensmith stopped" in restarted.first_log
    assert "Traceback" not in restarted.first_log


def test_accounts_and_keys_survive_a_restart(restarted: Restarted, owner: httpx.Client) -> None:
    """Both accounts and the key read back the same after a restart, and the key still works."""
    before = restarted.before
    api = f"/v1/projects/{PROJECT}/serviceAccounts"
    assert _json(owner.get(f"{api}/{before.alpha['email']}")) == before.alpha
    assert _json(owner.get(f"{api}/{before.beta['email']}")) == before.beta
    assert _json(owner.get(f"{api}/{before.alpha['email']}/keys")) == before.alpha_keys
    listed = _json(owner.get(api))["accounts"]
    created = {
        a["email"] for a in listed if not a["email"].endswith("developer.gserviceaccount.com")
    }
    assert created == {before.alpha["email"], before.beta["email"]}  # (and the default compute)

    creds = service_account.Credentials.from_service_account_file(
        str(before.key_path), scopes=[CLOUD_PLATFORM]
    )
    with requests.Session() as session:
        creds.refresh(Request(session))
    assert creds.token


def test_policies_survive_with_the_same_etag(restarted: Restarted, owner: httpx.Client) -> None:
    """The conditional project policy and the account policy read back identical, etag too."""
    before = restarted.before
    api = f"/v1/projects/{PROJECT}"
    project_policy = _json(
        owner.post(f"{api}:getIamPolicy", json={"options": {"requestedPolicyVersion": 3}})
    )
    assert project_policy == before.project_policy
    assert project_policy["version"] == 3
    assert {
        "role": "roles/iam.serviceAccountViewer",
        "members": [f"serviceAccount:{before.alpha['email']}"],
        "condition": CONDITION,
    } in project_policy["bindings"]
    beta_policy = _json(
        owner.post(f"{api}/serviceAccounts/{before.beta['email']}:getIamPolicy", json={})
    )
    assert beta_policy == before.beta_policy


def test_org_policy_survives_a_restart(restarted: Restarted, owner: httpx.Client) -> None:
    """The lifetime-extension org policy reads back the same, etag and update time included."""
    before = restarted.before
    org_policy = _json(
        owner.post(f"/v1/projects/{PROJECT}:getOrgPolicy", json={"constraint": LIFETIME_EXTENSION})
    )
    assert org_policy == before.org_policy
    assert org_policy["listPolicy"]["allowedValues"] == [before.alpha["email"]]


def test_owner_credentials_still_work_after_a_restart(restarted: Restarted) -> None:
    """owner.json is untouched by the restart and its refresh token still gets an access token."""
    assert restarted.server.owner_credentials.read_text() == restarted.before.owner_file
    token = _refresh_grant(restarted.server, _owner(restarted))
    with _client(restarted.server, token) as client:
        assert _json(client.get(f"/v1/projects/{PROJECT}"))["projectId"] == PROJECT


def test_access_tokens_from_before_a_restart_are_accepted(restarted: Restarted) -> None:
    """Access tokens the first process issued (owner's and an account's) work on the second."""
    before = restarted.before
    api = f"/v1/projects/{PROJECT}/serviceAccounts"
    with _client(restarted.server, before.owner_token) as client:
        assert _json(client.get(api))["accounts"]
    with _client(restarted.server, before.alpha_token) as client:
        # alpha reads beta through the conditional viewer binding made before the restart
        assert _json(client.get(f"{api}/{before.beta['email']}"))["email"] == before.beta["email"]


def test_id_tokens_from_before_a_restart_still_verify(restarted: Restarted) -> None:
    """An ID token signed before the restart verifies against the certs published after it."""
    before = restarted.before
    kid = json.loads(base64.urlsafe_b64decode(before.alpha_id_token.split(".")[0] + "=="))["kid"]
    certs_url = f"{restarted.server.url}/oauth2/v1/certs"
    after = httpx.get(certs_url, timeout=10, trust_env=False).json()
    assert kid in before.certs
    assert after[kid] == before.certs[kid]
    with requests.Session() as session:
        claims = id_token.verify_token(
            before.alpha_id_token, Request(session), audience=AUDIENCE, certs_url=certs_url
        )
    assert claims["sub"] == before.alpha["uniqueId"]
    assert claims["email"] == before.alpha["email"]


def test_sigint_stops_the_server_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) ends the server with exit code 0, and a restart serves the same owner."""
    first = LiveServer(tmp_path / "data").start()
    owner = json.loads(first.owner_credentials.read_text())
    assert first.process is not None
    first.process.send_signal(signal.SIGINT)
    first.process.wait(10)
    exit_code = first.stop()
    log = first.log_path.read_text()

    with LiveServer(tmp_path / "data", port=first.port) as second:
        token = _refresh_grant(second, owner)
        with _client(second, token) as client:
            assert _json(client.get("/v1/projects/tokensmith-local"))["projectId"] == (
                "tokensmith-local"
            )
    assert exit_code == 0, log[-2000:]
    assert "tokensmith stopped" in log
    assert "Traceback" not in log
    assert "Aborted!" not in log
