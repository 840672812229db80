"""Fixtures for the metadata server: in-process on a FixedClock, and live processes.

- ``md``: the embedded metadata server of the in-process ``services`` (FixedClock), spoken to
  through Starlette's in-process transport as ``metadata.google.internal``;
- ``live_md``: one real ``tokensmith serve --metadata-port`` process per module, with the owner
  speaking the REST API (``LiveDeployment``) to create accounts, keys and grants.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.conftest import START
from tokensmith.clock import FixedClock
from tokensmith.config import Settings
from tokensmith.main import Services, build
from tokensmith.metadata.embedded import embedded_servers
from tokensmith.metadata.instance import InstanceSpec, make_spec
from tokensmith.metadata.server import MetadataServer
from tokensmith.services.bootstrap import compute_default_account
from tokensmith.testing import LiveServer, free_port, owner_access_token

PROJECT = "tokensmith-local"
CLOUD = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
V1 = "/computeMetadata/v1"
FLAVOR = {"Metadata-Flavor": "Google"}
LOOPBACK = "127.0.0.1,localhost,::1"


def email(account_id: str, project: str = PROJECT) -> str:
    return f"{account_id}@{project}.iam.gserviceaccount.com"


class Metadata:
    """An in-process metadata server and a client that sends ``Metadata-Flavor: Google``."""

    def __init__(self, server: MetadataServer, services: Services, clock: FixedClock) -> None:
        self.server = server
        self.services = services
        self.clock = clock
        self.client = TestClient(
            server, base_url="http://metadata.google.internal", raise_server_exceptions=False
        )

    @property
    def default_email(self) -> str:
        return compute_default_account(self.services.project.project_number)

    def get(self, path: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
        return self.client.get(
            path,
            params=params or None,
            headers={**FLAVOR, **(headers or {})},
            follow_redirects=False,
        )

    def raw(self, path_and_query: str, headers: dict[str, str] | None = None) -> Any:
        """A request whose query string goes on the wire exactly as written (no encoding)."""
        return self.client.get(
            path_and_query, headers={**FLAVOR, **(headers or {})}, follow_redirects=False
        )


def metadata_for(
    services: Services, clock: FixedClock, spec: InstanceSpec | None = None
) -> Metadata:
    (server,) = embedded_servers(services, [spec or make_spec(port=free_port())])
    return Metadata(server, services, clock)


@pytest.fixture
def md(services: Services, clock: FixedClock) -> Iterator[Metadata]:
    metadata = metadata_for(services, clock)
    with metadata.client:
        yield metadata


@pytest.fixture(scope="module")
def shared_md(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metadata]:
    """One in-process server for a whole module of tests that change nothing."""
    clock = FixedClock(START)
    services = build(Settings(data_dir=tmp_path_factory.mktemp("metadata") / "data"), clock)
    metadata = metadata_for(services, clock)
    with metadata.client:
        yield metadata
    services.close()


@pytest.fixture(scope="session", autouse=True)
def _loopback_bypasses_proxies() -> Iterator[None]:
    """Requests to the servers go straight to loopback even where a proxy is configured."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NO_PROXY", LOOPBACK)
        patch.setenv("no_proxy", LOOPBACK)
        yield


class LiveDeployment:
    """A live ``tokensmith serve --metadata-port`` and its owner speaking the REST API."""

    def __init__(self, server: LiveServer, metadata_port: int, tmp: Path) -> None:
        self.server = server
        self.metadata_port = metadata_port
        self.tmp = tmp
        self.owner = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {owner_access_token(server)}"},
            timeout=10,
            trust_env=False,
        )
        record = json.loads((server.data_dir / "server.json").read_text())
        listeners = record.get("metadata") or [{"service_account": ""}]
        self.default_email: str = listeners[0]["service_account"]

    @property
    def metadata_address(self) -> str:
        return f"127.0.0.1:{self.metadata_port}"

    def client_env(self, **extra: str) -> dict[str, str]:
        """A clean environment pointing Google's clients at the metadata server only."""
        keep = ("PATH", "LANG", "SYSTEMROOT")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(
            {
                "HOME": str(self.tmp / "home"),
                "GCE_METADATA_HOST": self.metadata_address,
                "GCE_METADATA_IP": self.metadata_address,
                "GCE_METADATA_ROOT": self.metadata_address,
                "NO_PROXY": LOOPBACK,
                "no_proxy": LOOPBACK,
            }
        )
        env.update(extra)
        return env

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.owner.request(method, path, json=body)
        assert response.status_code == 200, f"{method} {path}: {response.text}"
        return response.json()

    def create_account(self, account_id: str) -> dict[str, Any]:
        return dict(
            self.api("POST", f"/v1/projects/{PROJECT}/serviceAccounts", {"accountId": account_id})
        )

    def key_file(self, account_email: str) -> Path:
        created = self.api("POST", f"/v1/projects/-/serviceAccounts/{account_email}/keys", {})
        content = base64.b64decode(created["privateKeyData"])
        path = self.tmp / f"{json.loads(content)['private_key_id']}.json"
        path.write_bytes(content)
        path.chmod(0o600)
        return path

    def grant(self, resource_email: str, member: str, role: str = TOKEN_CREATOR) -> None:
        path = f"/v1/projects/-/serviceAccounts/{resource_email}"
        policy = self.api("POST", f"{path}:getIamPolicy", {})
        policy.setdefault("bindings", []).append({"role": role, "members": [member]})
        self.api("POST", f"{path}:setIamPolicy", {"policy": policy})

    def close(self) -> None:
        self.owner.close()


@pytest.fixture(scope="module")
def live_md(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDeployment]:
    tmp = tmp_path_factory.mktemp("metadata-live")
    (tmp / "home").mkdir()
    port = free_port()
    with LiveServer(tmp / "data", extra_args=["--metadata-port", str(port)]) as server:
        deployment = LiveDeployment(server, port, tmp)
        yield deployment
        deployment.close()
