"""Agent mode: the metadata server on its own, minting through a live server's API."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import jwt as pyjwt
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from tests.metadata.conftest import CLOUD, FLAVOR, PROJECT, V1, LiveDeployment, email
from tests.metadata.test_clients import client_env
from tokensmith.cli import operator
from tokensmith.clock import SystemClock
from tokensmith.metadata.agent import build_agent
from tokensmith.metadata.instance import ConfigError, make_spec
from tokensmith.metadata.server import MetadataServer
from tokensmith.testing import LiveServer, free_port

TOKEN = f"{V1}/instance/service-accounts/default/token"
IDENTITY = f"{V1}/instance/service-accounts/default/identity"
IAM = "https://www.googleapis.com/auth/iam"

WORKLOAD_CLIENT = r"""
import json, sys
import google.auth
from google.auth.transport.requests import Request
from google.oauth2 import id_token
creds, project = google.auth.default()
request = Request()
creds.refresh(request)
token = id_token.fetch_id_token(request, sys.argv[1])
print(json.dumps({"email": creds.service_account_email, "project": project,
                  "token": creds.token, "id_token": token}))
"""


class AgentWorld:
    """A live server (no metadata listener), an agent account with a key, a workload account."""

    def __init__(self, live: LiveDeployment) -> None:
        self.live = live
        live.create_account("md-agent")
        live.create_account("workload")
        live.create_account("browser-agent")
        self.agent_key = live.key_file(email("md-agent"))
        self.browser_key = live.key_file(email("browser-agent"))
        live.grant(email("workload"), f"serviceAccount:{email('md-agent')}")
        live.grant(email("workload"), f"serviceAccount:{email('browser-agent')}")
        project = live.api("GET", f"/v1/projects/{PROJECT}")
        self.project_number = str(project["projectNumber"])
        policy = live.api("POST", f"/v1/projects/{PROJECT}:getIamPolicy", {})
        policy["bindings"].append(
            {"role": "roles/browser", "members": [f"serviceAccount:{email('browser-agent')}"]}
        )
        live.api("POST", f"/v1/projects/{PROJECT}:setIamPolicy", {"policy": policy})

        self.servers: list[MetadataServer] = []

    def agent(self, key: Path | None = None, **fields: Any) -> MetadataServer:
        (server,) = build_agent(
            server=self.live.server.url,
            credentials=str(key or self.agent_key),
            specs=[make_spec(port=free_port(), service_account=email("workload"))],
            clock=SystemClock(),
            **fields,
        )
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.close()


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDeployment]:
    tmp = tmp_path_factory.mktemp("agent")
    (tmp / "home").mkdir()
    with LiveServer(tmp / "data") as server:
        deployment = LiveDeployment(server, 0, tmp)
        yield deployment
        deployment.close()


@pytest.fixture(scope="module")
def world(live_api: LiveDeployment) -> Iterator[AgentWorld]:
    agents = AgentWorld(live_api)
    yield agents
    agents.close()


def get(server: MetadataServer, path: str, **params: str) -> httpx.Response:
    with TestClient(server, base_url="http://metadata.google.internal") as client:
        return client.get(path, params=params or None, headers=FLAVOR)


def verify(live: LiveDeployment, token: str, audience: str) -> dict[str, Any]:
    jwks = {k["kid"]: k for k in live.owner.get("/oauth2/v3/certs").json()["keys"]}
    key = pyjwt.PyJWK(jwks[pyjwt.get_unverified_header(token)["kid"]]).key
    return dict(pyjwt.decode(token, key, algorithms=["RS256"], audience=audience))


def test_agent_serves_the_workload_accounts_tokens(world: AgentWorld) -> None:
    """Tokens from the agent are the attached account's, minted by the remote server."""
    server = world.agent(project_number=world.project_number)
    body = get(server, TOKEN, scopes=f"{IAM},{CLOUD}").json()
    assert body["token_type"] == "Bearer"
    assert 3500 < body["expires_in"] <= 3600
    info = world.live.owner.get("/tokeninfo", params={"access_token": body["access_token"]})
    assert info.json()["email"] == email("workload")
    assert set(info.json()["scope"].split()) == {IAM, CLOUD}
    assert get(server, f"{V1}/project/project-id").text == PROJECT
    assert get(server, f"{V1}/project/numeric-project-id").text == world.project_number
    assert get(server, f"{V1}/instance/service-accounts/").text == (
        f"default/\n{email('workload')}/\n"
    )


def test_agent_full_id_token_has_email_but_no_instance_claims(world: AgentWorld) -> None:
    """format=full through the remote API: includeEmail, no google.compute_engine (documented)."""
    server = world.agent(project_number=world.project_number)
    token = get(server, IDENTITY, audience="https://svc.example", format="full").text
    claims = verify(world.live, token, "https://svc.example")
    assert claims["email"] == email("workload")
    assert "google" not in claims
    standard = get(server, IDENTITY, audience="https://svc.example").text
    assert "email" not in verify(world.live, standard, "https://svc.example")


def test_agent_mints_through_the_same_iam_checks_and_audit(
    world: AgentWorld, live_api: LiveDeployment
) -> None:
    """The server's audit log shows the agent's own account minting for the workload."""
    server = world.agent(project_number=world.project_number)
    get(server, IDENTITY, audience="https://audited.example")
    group = click.Group("tokensmith")
    operator.register(group)
    result = CliRunner().invoke(
        group,
        [
            "audit",
            "--data-dir",
            str(live_api.server.data_dir),
            "--account",
            email("workload"),
            "--method",
            "generateIdToken",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert any(
        r["principal"] == f"serviceAccount:{email('md-agent')}"
        and r["detail"].get("audience") == "https://audited.example"
        for r in records
    )


def test_agent_reads_the_project_number_when_allowed(world: AgentWorld) -> None:
    """With roles/browser on the project the agent learns the project number from the API."""
    server = world.agent(key=world.browser_key)
    assert get(server, f"{V1}/project/numeric-project-id").text == world.project_number


def test_agent_asks_for_the_project_number_it_cannot_read(world: AgentWorld) -> None:
    """Without resourcemanager.projects.get the agent says to pass --project-number."""
    with pytest.raises(ConfigError, match="--project-number"):
        world.agent()


def test_agent_without_token_creator_does_not_start(
    world: AgentWorld, live_api: LiveDeployment
) -> None:
    """A credential that may not mint for the account is a start-up error that says why."""
    live_api.create_account("powerless")
    key = live_api.key_file(email("powerless"))
    with pytest.raises(ConfigError, match=r"roles/iam\.serviceAccountTokenCreator"):
        world.agent(key=key, project_number=world.project_number)


def test_unreachable_server_is_a_retryable_503(world: AgentWorld, tmp_path: Path) -> None:
    """If the remote server cannot be reached, token requests get 503 (clients retry)."""
    (server,) = build_agent(
        server=f"http://127.0.0.1:{free_port()}",
        credentials=str(world.agent_key),
        specs=[make_spec(port=free_port(), service_account=email("workload"))],
        clock=SystemClock(),
        project_number="123456789012",
    )
    world.servers.append(server)
    response = get(server, TOKEN)
    assert response.status_code == 503
    assert "unavailable" in response.text
    assert get(server, f"{V1}/project/project-id").text == PROJECT


def test_tokensmith_metadata_command_serves_a_python_workload(
    world: AgentWorld, live_api: LiveDeployment
) -> None:
    """`tokensmith metadata` next to a workload: google-auth gets the workload's tokens."""
    port = free_port()
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokensmith",
            "metadata",
            "--server",
            live_api.server.url,
            "--credentials",
            str(world.agent_key),
            "--service-account",
            email("workload"),
            "--port",
            str(port),
            "--project-number",
            world.project_number,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert agent.poll() is None, agent.communicate()[0]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "agent did not start"
            time.sleep(0.05)
        address = f"127.0.0.1:{port}"
        env = {**client_env(live_api), "GCE_METADATA_HOST": address, "GCE_METADATA_IP": address}
        result = subprocess.run(
            [sys.executable, "-c", WORKLOAD_CLIENT, "https://svc.example"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        got = json.loads(result.stdout)
        assert got["email"] == email("workload")
        assert got["project"] == PROJECT
        assert verify(live_api, got["id_token"], "https://svc.example")["email"] == email(
            "workload"
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        output = agent.communicate(timeout=10)[0]
    assert agent.returncode == 0, output
    assert "tokensmith metadata agent stopped" in output
