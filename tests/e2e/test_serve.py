"""``tokensmith serve`` as an operator starts it: what it prints, the owner's credentials file,
settings from ``TOKENSMITH_*`` variables and flags, and a clear failure when the port is taken.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from tokensmith.testing import LiveServer, free_port

pytestmark = pytest.mark.slow


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
    env.update(extra)
    return env


def _healthy(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200
    return False


@contextlib.contextmanager
def _serve(args: list[str], env: Mapping[str, str], port: int) -> Iterator[str]:
    """``tokensmith serve ARGS`` with ``env``, expected to listen on ``port``; yields its URL."""
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "tokensmith", "serve", *args],
        env=_clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not _healthy(url):
            assert process.poll() is None, process.communicate()[0].decode()
            assert time.monotonic() < deadline, f"no server on {url}"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _owner_token(owner_file: Path) -> str:
    """The refresh grant with an owner.json file, at the token_uri the file names."""
    creds = json.loads(owner_file.read_text())
    response = httpx.post(
        creds["token_uri"],
        data={
            "grant_type": "refresh_token",
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
            "refresh_token": creds["refresh_token"],
        },
        timeout=10,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _project_status(url: str, token: str, project: str) -> int:
    response = httpx.get(
        f"{url}/v1/projects/{project}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        trust_env=False,
    )
    return response.status_code


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("serve") / "data") as server:
        yield server


def _banner(text: str) -> dict[str, str]:
    """The ``label: value`` lines of the startup banner (first occurrence of each label)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        label, sep, value = line.strip().partition(": ")
        if sep:
            fields.setdefault(label, value.strip())
    return fields


def test_serve_prints_its_address_and_owner_credentials(live: LiveServer) -> None:
    """The startup banner names the URL it listens on and the owner's credentials file."""
    text = live.log_path.read_text()
    assert f"tokensmith listening on {live.url}" in text.splitlines()
    banner = _banner(text)
    assert banner["owner credentials"] == str(live.owner_credentials.resolve())
    assert banner["token endpoint"] == f"{live.url}/token"


def test_owner_credentials_file_is_private_authorized_user(live: LiveServer) -> None:
    """owner.json is mode 0600 and an authorized_user file whose token_uri is this server."""
    mode = stat.S_IMODE(live.owner_credentials.stat().st_mode)
    assert mode == 0o600, oct(mode)
    creds = json.loads(live.owner_credentials.read_text())
    assert creds["type"] == "authorized_user"
    assert creds["token_uri"] == f"{live.url}/token"
    for field in ("client_id", "client_secret", "refresh_token"):
        assert isinstance(creds[field], str), field
        assert creds[field], field
    assert _owner_token(live.owner_credentials)


def test_settings_come_from_tokensmith_environment_variables(tmp_path: Path) -> None:
    """TOKENSMITH_DATA_DIR, TOKENSMITH_PORT and TOKENSMITH_PROJECT configure a flagless serve."""
    port = free_port()
    data_dir = tmp_path / "env-data"
    env = {
        "TOKENSMITH_DATA_DIR": str(data_dir),
        "TOKENSMITH_PORT": str(port),
        "TOKENSMITH_PROJECT": "env-project",
    }
    with _serve([], env, port) as url:
        owner_file = data_dir / "credentials" / "owner.json"
        assert json.loads(owner_file.read_text())["token_uri"] == f"{url}/token"
        token = _owner_token(owner_file)
        assert _project_status(url, token, "env-project") == 200
        assert _project_status(url, token, "tokensmith-local") == 403


def test_flags_win_over_environment_variables(tmp_path: Path) -> None:
    """--data-dir, --port and --project override the TOKENSMITH_* variables of the same name."""
    env_port = free_port()
    env = {
        "TOKENSMITH_DATA_DIR": str(tmp_path / "env-data"),
        "TOKENSMITH_PORT": str(env_port),
        "TOKENSMITH_PROJECT": "env-project",
    }
    with LiveServer(tmp_path / "flag-data", env=env, extra_args=["--project", "flag-project"]) as (
        live
    ):
        assert live.port != env_port
        assert not _healthy(f"http://127.0.0.1:{env_port}")
        assert live.owner_credentials.exists()
        assert not (tmp_path / "env-data").exists()
        token = _owner_token(live.owner_credentials)
        assert _project_status(live.url, token, "flag-project") == 200
        assert _project_status(live.url, token, "env-project") == 403


def test_port_in_use_fails_with_a_clear_message(tmp_path: Path) -> None:
    """A taken port makes serve exit non-zero with a one-line reason, no traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tokensmith",
                "serve",
                "--data-dir",
                str(tmp_path / "data"),
                "--port",
                str(port),
            ],
            env=_clean_env({}),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert "already in use" in result.stderr
    assert str(port) in result.stderr
    assert "listening on" not in result.stdout, "serve claimed to listen on a port it never bound"
