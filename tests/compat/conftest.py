"""Fixtures for driving Google's real clients against a live ``tokensmith serve`` process.

- ``live``: one real server process per test module (loopback port, its own data directory,
  project ``PROJECT``); the owner's credentials are in ``live.owner_credentials``;
- ``admin``: the owner speaking the IAM and Resource Manager REST APIs (httpx), to set up
  accounts, keys and grants that a test then exercises through a Google client;
- ``gcloud``: the installed gcloud CLI, isolated: a fresh ``CLOUDSDK_CONFIG`` per module, no
  prompts, usage reporting, update checks, surveys or metadata-server probe, and every request
  not bound for loopback sent to an ``OutboundTrap`` that refuses it and records it, so that a
  test can show nothing left the machine;
- ``env_server``: one server for the package with the metadata listener and the HTTPS proxy as
  well, for clients configured only by ``eval "$(tokensmith env)"`` (``EnvServer``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_or_skip
from tokensmith.testing import LiveServer, free_port, owner_access_token

PROJECT = "compat-project"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
LOOPBACK = "127.0.0.1,localhost,::1"


@pytest.fixture(scope="session", autouse=True)
def _loopback_bypasses_proxies() -> Iterator[None]:
    """Requests to the server go straight to loopback even where a proxy is configured."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NO_PROXY", LOOPBACK)
        patch.setenv("no_proxy", LOOPBACK)
        yield


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("tokensmith") / "data"
    with LiveServer(data_dir, extra_args=["--project", PROJECT]) as server:
        yield server


class Admin:
    """The server's owner, calling the REST APIs with a token from the refresh grant."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.client = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {owner_access_token(server)}"},
            timeout=10,
            trust_env=False,
        )

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.client.request(method, path, json=body)
        assert response.status_code == 200, f"{method} {path}: {response.text}"
        result: dict[str, Any] = response.json()
        return result

    def create_account(self, account_id: str, display_name: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {"accountId": account_id}
        if display_name:
            body["serviceAccount"] = {"displayName": display_name}
        return self.call("POST", f"/v1/projects/{PROJECT}/serviceAccounts", body)

    def create_key(self, email: str) -> dict[str, Any]:
        """A new user-managed key, as the decoded key file (``privateKeyData``)."""
        created = self.call("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {})
        key_file: dict[str, Any] = json.loads(base64.b64decode(created["privateKeyData"]))
        return key_file

    def grant(
        self, role: str, member: str, resource: str = f"projects/{PROJECT}"
    ) -> dict[str, Any]:
        """Add ``member`` to ``role`` on a project or account policy (read-modify-write)."""
        policy = self.call("POST", f"/v1/{resource}:getIamPolicy", {})
        bindings = policy.setdefault("bindings", [])
        for binding in bindings:
            if binding["role"] == role and "condition" not in binding:
                binding["members"] = sorted({*binding["members"], member})
                break
        else:
            bindings.append({"role": role, "members": [member]})
        return self.call("POST", f"/v1/{resource}:setIamPolicy", {"policy": policy})


@pytest.fixture(scope="module")
def admin(live: LiveServer) -> Iterator[Admin]:
    owner = Admin(live)
    yield owner
    owner.close()


def write_key_file(key_file: dict[str, Any], directory: Path) -> Path:
    path = directory / f"{key_file['private_key_id']}.json"
    path.write_text(json.dumps(key_file))
    path.chmod(0o600)
    return path


class OutboundTrap:
    """A loopback listener standing in for every non-loopback destination.

    Set as the HTTP(S) proxy and as the metadata server address of a client under test, it
    records the first request line of each connection (``CONNECT oauth2.googleapis.com:443
    HTTP/1.1``) and closes it, so an escaping request fails fast and is seen.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self._sock.settimeout(0.1)
        self._stopped = threading.Event()
        self._seen: list[str] = []
        self._thread = threading.Thread(target=self._run, name="outbound-trap", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._sock.getsockname()
        return f"{host}:{port}"

    @property
    def requests(self) -> list[str]:
        return list(self._seen)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    line = conn.recv(4096).split(b"\r\n", 1)[0]
                except OSError as exc:
                    line = f"<{type(exc).__name__} reading the request>".encode()
                self._seen.append(line.decode("latin-1") or "<empty connection>")

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._sock.close()


class Gcloud:
    """Runs the gcloud CLI with an isolated configuration; ``gcloud(*args)`` → CompletedProcess."""

    def __init__(self, executable: str, home: Path, trap: OutboundTrap) -> None:
        self.executable = executable
        self.trap = trap
        config = home / "gcloud-config"
        config.mkdir(parents=True)
        # gcloud's cached answer to "am I on Google Compute Engine?": no, never probe.
        (config / "gce").write_text("False")
        proxy = f"http://{trap.address}"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "CLOUDSDK_CONFIG": str(config),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
            "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
            "CLOUDSDK_SURVEY_DISABLE_PROMPTS": "true",
            "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
            # Without an explicit metrics environment gcloud probes the metadata server (to
            # tag its user agent "GCE"), bypassing proxies, whatever check_gce_metadata says.
            "CLOUDSDK_METRICS_ENVIRONMENT": "tokensmith-tests",
            # Whatever still tries the network outside loopback reaches the trap, not Google.
            "HTTP_PROXY": proxy,
            "HTTPS_PROXY": proxy,
            "http_proxy": proxy,
            "https_proxy": proxy,
            "NO_PROXY": LOOPBACK,
            "no_proxy": LOOPBACK,
            "GCE_METADATA_ROOT": trap.address,
            "GCE_METADATA_HOST": trap.address,
            "GCE_METADATA_IP": trap.address,
        }

    def __call__(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.executable, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def gcloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gcloud]:
    executable = shutil.which("gcloud")
    require_or_skip(executable is not None, "TOKENSMITH_REQUIRE_GCLOUD", "gcloud is not installed")
    assert executable is not None
    trap = OutboundTrap()
    try:
        yield Gcloud(executable, tmp_path_factory.mktemp("gcloud-home"), trap)
    finally:
        trap.close()


# --- every part running, as `tokensmith env` describes it (docs/compatibility.md) ------------


class EnvServer:
    """A live server with the API, a metadata listener and the HTTPS proxy, and what a client
    process needs to use it configured by nothing but ``eval "$(tokensmith env …)"``.

    The proxy logs each tunnel at debug level into the server's log, so ``tunnels()`` shows
    which of Google's hosts a client reached through it; anything a client sends to another
    destination over plain HTTP goes to ``trap``.
    """

    def __init__(self, server: LiveServer, home: Path) -> None:
        self.server = server
        self.home = home
        self.trap = OutboundTrap()

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    def with_env(self, command: list[str], *env_args: str) -> list[str]:
        """``bash -c`` running ``command`` after ``eval "$(tokensmith env --data-dir D ARGS)"``;
        a failing ``env`` stops it (``eval ""`` alone would succeed)."""
        tokensmith = shlex.join(
            [sys.executable, "-m", "tokensmith", "env", "--data-dir", str(self.data_dir), *env_args]
        )
        script = f'vars="$({tokensmith})" && eval "$vars" && exec "$@"'
        return ["bash", "-c", script, "client", *command]

    def client_env(self, **extra: str) -> dict[str, str]:
        """A clean environment before ``env`` is applied: no Google or tokensmith variable, an
        empty HOME, and every proxy variable at the trap (loopback excepted)."""
        trap = f"http://{self.trap.address}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.home),
            "HTTP_PROXY": trap,
            "HTTPS_PROXY": trap,
            "http_proxy": trap,
            "https_proxy": trap,
            "NO_PROXY": LOOPBACK,
            "no_proxy": LOOPBACK,
        }
        env.update(extra)
        return env

    def log_offset(self) -> int:
        return self.server.log_path.stat().st_size

    def tunnels(self, since: int = 0) -> set[str]:
        """The hosts the proxy opened tunnels to after log offset ``since``."""
        with self.server.log_path.open("rb") as log:
            log.seek(since)
            text = log.read().decode("utf-8", "replace")
        return set(re.findall(r"proxy: tunnel \S+ -> (\S+) open", text))

    def close(self) -> None:
        self.trap.close()


@pytest.fixture(scope="package")
def env_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvServer]:
    tmp = tmp_path_factory.mktemp("env-server")
    (tmp / "home").mkdir()
    args = ["--project", PROJECT, "--metadata-port", str(free_port())]
    args += ["--proxy-port", str(free_port()), "--log-level", "debug"]
    with LiveServer(tmp / "data", extra_args=args) as server:
        running = EnvServer(server, tmp / "home")
        try:
            yield running
        finally:
            running.close()


NODE_PROJECT = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with google-auth-library installed by ``npm ci`` if it is not."""
    node_exe, npm_exe = shutil.which("node"), shutil.which("npm")
    require_or_skip(
        node_exe is not None and npm_exe is not None,
        "TOKENSMITH_REQUIRE_NODE",
        "node and npm are not installed",
    )
    assert node_exe is not None
    assert npm_exe is not None
    if not (NODE_PROJECT / "node_modules" / "google-auth-library").is_dir():
        installed = subprocess.run(
            [npm_exe, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_PROJECT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        require_or_skip(
            installed.returncode == 0,
            "TOKENSMITH_REQUIRE_NODE",
            f"npm ci in {NODE_PROJECT} failed: {installed.stderr.strip()[-500:]}",
        )
    return node_exe


@pytest.fixture(scope="module")
def refusing_address() -> Iterator[str]:
    """A loopback address whose port is bound but never listens: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()
        yield f"{host}:{port}"
