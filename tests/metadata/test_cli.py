"""`tokensmith env`, `tokensmith metadata` argument handling, and serve's --metadata-* flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from tokensmith.cli import metadata
from tokensmith.testing import free_port


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("tokensmith")
    metadata.register(group)
    return group


def write_server_json(data_dir: Path, **fields: Any) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": os.getpid(),
        "api": "http://127.0.0.1:8080",
        "token_uri": "http://127.0.0.1:8080/token",
        "metadata": [
            {
                "url": "http://127.0.0.1:8081",
                "address": "127.0.0.1:8081",
                "name": "instance-1",
                "service_account": "1-compute@developer.gserviceaccount.com",
            },
            {
                "url": "http://127.0.0.1:8082",
                "address": "127.0.0.1:8082",
                "name": "web",
                "service_account": "web@p-roject.iam.gserviceaccount.com",
            },
        ],
        **fields,
    }
    (data_dir / "server.json").write_text(json.dumps(record))


def exports(output: str) -> dict[str, str]:
    lines = [line for line in output.splitlines() if line.startswith("export ")]
    return dict(line.removeprefix("export ").split("=", 1) for line in lines)


def test_env_points_every_client_at_the_first_metadata_listener(
    cli: click.Group, tmp_path: Path
) -> None:
    """env prints GCE_METADATA_HOST, _IP and _ROOT (Python, Node, gcloud) for the server."""
    write_server_json(tmp_path)
    result = CliRunner().invoke(cli, ["env", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    metadata = {k: v for k, v in exports(result.output).items() if k.startswith("GCE_")}
    assert metadata == {
        "GCE_METADATA_HOST": "127.0.0.1:8081",
        "GCE_METADATA_IP": "127.0.0.1:8081",
        "GCE_METADATA_ROOT": "127.0.0.1:8081",
    }
    assert all(line.startswith(("export ", "#")) for line in result.output.splitlines())


def test_env_reads_the_data_dir_from_the_environment(cli: click.Group, tmp_path: Path) -> None:
    """Without --data-dir, env uses TOKENSMITH_DATA_DIR like every other command."""
    write_server_json(tmp_path)
    result = CliRunner().invoke(cli, ["env"], env={"TOKENSMITH_DATA_DIR": str(tmp_path)})
    assert exports(result.output)["GCE_METADATA_HOST"] == "127.0.0.1:8081"


def test_env_selects_an_instance_by_name_or_address(cli: click.Group, tmp_path: Path) -> None:
    """--instance picks one of several metadata listeners; an unknown one lists the names."""
    write_server_json(tmp_path)
    by_name = CliRunner().invoke(cli, ["env", "--data-dir", str(tmp_path), "--instance", "web"])
    assert exports(by_name.output)["GCE_METADATA_ROOT"] == "127.0.0.1:8082"
    by_address = CliRunner().invoke(
        cli, ["env", "--data-dir", str(tmp_path), "--instance", "127.0.0.1:8082"]
    )
    assert exports(by_address.output)["GCE_METADATA_IP"] == "127.0.0.1:8082"
    unknown = CliRunner().invoke(cli, ["env", "--data-dir", str(tmp_path), "--instance", "db"])
    assert unknown.exit_code != 0
    assert "no metadata instance 'db' (instances: instance-1, web)" in unknown.output


def test_env_for_an_agent_address(cli: click.Group) -> None:
    """--metadata HOST:PORT points at a stand-alone agent without any data directory."""
    result = CliRunner().invoke(cli, ["env", "--metadata", "http://127.0.0.1:9999/"])
    assert exports(result.output)["GCE_METADATA_HOST"] == "127.0.0.1:9999"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (None, "no tokensmith server is running on"),
        ({"pid": 2**22 + 12345}, "no longer running"),
    ],
)
def test_env_explains_why_it_cannot_help(
    cli: click.Group, tmp_path: Path, fields: dict[str, Any] | None, message: str
) -> None:
    """No server, a stale server.json, or a server without metadata: an error saying so."""
    if fields is not None:
        write_server_json(tmp_path, **fields)
    result = CliRunner().invoke(cli, ["env", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "http://127.0.0.1:1", "--credentials", "KEY"], "give --port"),
        (
            [
                "--server",
                "http://127.0.0.1:1",
                "--credentials",
                "ABSENT",
                "--port",
                "1",
                "--service-account",
                "a@p-roject.iam.gserviceaccount.com",
            ],
            "does not exist",
        ),
        (
            ["--server", "http://127.0.0.1:1", "--credentials", "KEY", "--port", "1"],
            "--service-account",
        ),
    ],
)
def test_agent_refuses_incomplete_arguments(
    cli: click.Group, tmp_path: Path, args: list[str], message: str
) -> None:
    """The agent needs a port and an account, and a readable credentials file."""
    key = tmp_path / "key.json"
    key.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "c",
                "client_secret": "s",
                "refresh_token": "r",
                "token_uri": "http://127.0.0.1:1/token",
            }
        )
    )
    values = [
        str(key) if a == "KEY" else str(tmp_path / "absent") if a == "ABSENT" else a for a in args
    ]
    result = CliRunner().invoke(cli, ["metadata", *values])
    assert result.exit_code == 1
    assert message in result.output


def test_serve_has_the_metadata_flags() -> None:
    """`tokensmith serve --help` documents --metadata-port/-host/-service-account/-config."""
    result = subprocess.run(
        [sys.executable, "-m", "tokensmith", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for flag in (
        "--metadata-port",
        "--metadata-host",
        "--metadata-service-account",
        "--metadata-config",
    ):
        assert flag in result.stdout


def test_serve_refuses_the_api_port_for_metadata(tmp_path: Path) -> None:
    """serve --metadata-port equal to --port fails at once with a clear error."""
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokensmith",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            port,
            "--metadata-port",
            port,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 1
    assert "cannot share the API's port" in result.stderr
