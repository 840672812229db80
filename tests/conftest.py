"""Shared fixtures: an in-process server on a FixedClock, and HTTP clients acting as callers.

``server`` builds the whole composition root (SQLite in a temporary directory) and serves it
through Starlette's in-process transport; tests speak real HTTP semantics to it without a
socket. Tests that need a real process use ``tokensmith.testing.LiveServer``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tokensmith.api.app import create_app
from tokensmith.clock import FixedClock
from tokensmith.config import Settings
from tokensmith.main import Services, build

START = 1_800_000_000.0


def _require(env: str) -> bool:
    return os.environ.get(env, "") in ("1", "true", "yes")


def require_or_skip(available: bool, env: str, reason: str) -> None:
    """Skip with ``reason`` where a tool is absent, unless ``env`` makes it mandatory (CI)."""
    if available:
        return
    if _require(env):
        pytest.fail(f"{reason}, but {env}=1 makes this test mandatory")
    pytest.skip(reason)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", port=18080)


@pytest.fixture
def services(settings: Settings, clock: FixedClock) -> Iterator[Services]:
    built = build(settings, clock)
    yield built
    built.close()


class Api:
    """A TestClient bound to a caller: ``api.post(path, json=…)`` with its bearer token."""

    def __init__(self, client: TestClient, token: str | None) -> None:
        self.client = client
        self.token = token

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        out = dict(headers or {})
        if self.token is not None:
            out.setdefault("Authorization", f"Bearer {self.token}")
        return out

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs["headers"] = self._headers(kwargs.get("headers"))
        return self.client.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)


@pytest.fixture
def http(services: Services) -> Iterator[TestClient]:
    with TestClient(
        create_app(services), base_url="http://127.0.0.1:18080", raise_server_exceptions=False
    ) as client:
        yield client


def owner_token(http: TestClient, services: Services, scope: str = "") -> str:
    creds = json.loads(services.owner_credentials_path.read_text())
    form = {
        "grant_type": "refresh_token",
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "refresh_token": creds["refresh_token"],
    }
    if scope:
        form["scope"] = scope
    response = http.post("/token", data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
def owner(http: TestClient, services: Services) -> Api:
    return Api(http, owner_token(http, services))


@pytest.fixture
def anonymous(http: TestClient) -> Api:
    return Api(http, None)


def service_account_token(
    http: TestClient,
    key_file: dict[str, Any],
    clock: FixedClock,
    scope: str = "https://www.googleapis.com/auth/cloud-platform",
) -> str:
    """Exchange a key file for an access token with the jwt-bearer grant, as google-auth does."""
    from cryptography.hazmat.primitives import serialization

    from tokensmith.crypto import jwt
    from tokensmith.crypto.keys import PrivateKey

    key = serialization.load_pem_private_key(key_file["private_key"].encode(), None)
    signer = PrivateKey(key_file["private_key_id"], key)  # type: ignore[arg-type]
    now = int(clock.now())
    assertion = jwt.encode(
        {
            "iss": key_file["client_email"],
            "aud": "https://oauth2.googleapis.com/token",
            "iat": now,
            "exp": now + 3600,
            "scope": scope,
        },
        signer,
    )
    response = http.post(
        "/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@dataclasses.dataclass
class SharedServer:
    """An in-process server shared by a module's tests (its clock must not be moved)."""

    services: Services
    clock: FixedClock
    http: TestClient
    owner: Api


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServer]:
    """One server for the module's tests that neither move its clock nor need it to themselves
    (each creates its own accounts, with names of its own)."""
    clock = FixedClock(START)
    services = build(
        Settings(data_dir=tmp_path_factory.mktemp("shared") / "data", port=18080), clock
    )
    try:
        with TestClient(
            create_app(services), base_url="http://127.0.0.1:18080", raise_server_exceptions=False
        ) as http:
            yield SharedServer(services, clock, http, Api(http, owner_token(http, services)))
    finally:
        services.close()


@pytest.fixture
def gcloud_path() -> str | None:
    return shutil.which("gcloud")
