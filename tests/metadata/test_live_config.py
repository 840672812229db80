"""Several instances from --metadata-config in a live `tokensmith serve`: one port and one
account each, config edits served live, grants at start, and hanging GETs at shutdown.

The tests share one server and run in file order: the restart test needs the account the
earlier tests left missing, and the shutdown test stops the server.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.metadata.conftest import FLAVOR, V1, LiveDeployment, email
from tokensmith.testing import LiveServer, free_port

CONFIG = """
[project_attributes]
env = "dev"

[[instances]]
port = {web}
name = "web-vm"
[instances.attributes]
role = "{role}"

[[instances]]
port = {worker}
name = "worker-vm"
zone = "europe-west1-b"
service_account = "{worker_email}"
"""


class Fleet:
    """A live server whose settings file lists two instances; the worker's account is absent."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.web_port, self.worker_port = free_port(), free_port()
        self.config = tmp / "metadata.toml"
        self.write_config(role="web")
        self.server = LiveServer(tmp / "data", extra_args=["--metadata-config", str(self.config)])
        self.server.start()
        self.live = LiveDeployment(self.server, self.web_port, tmp)

    def write_config(self, role: str) -> None:
        self.config.write_text(
            CONFIG.format(
                web=self.web_port,
                worker=self.worker_port,
                role=role,
                worker_email=email("worker"),
            )
        )

    def get(self, port: int, path: str, **params: str) -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{port}{path}",
            params=params,
            headers=FLAVOR,
            timeout=10,
            trust_env=False,
        )

    def restart(self) -> None:
        self.live.close()
        self.server.stop()
        self.server.start()
        self.live = LiveDeployment(self.server, self.web_port, self.tmp)

    def close(self) -> None:
        self.live.close()
        self.server.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    (tmp / "home").mkdir()
    running = Fleet(tmp)
    yield running
    running.close()


def test_each_instance_has_its_own_port_account_and_facts(fleet: Fleet) -> None:
    """Both listeners run; each answers with its own name, zone and attached account."""
    web = fleet.get(fleet.web_port, f"{V1}/instance/", recursive="true").json()
    worker = fleet.get(fleet.worker_port, f"{V1}/instance/", recursive="true").json()
    assert (web["name"], web["zone"].rsplit("/", 1)[1]) == ("web-vm", "us-central1-a")
    assert (worker["name"], worker["zone"].rsplit("/", 1)[1]) == ("worker-vm", "europe-west1-b")
    assert web["serviceAccounts"]["default"]["email"] == fleet.live.default_email
    assert worker["serviceAccounts"]["default"]["email"] == email("worker")
    assert web["attributes"] == {"role": "web"}
    assert fleet.get(fleet.worker_port, f"{V1}/project/attributes/env").text == "dev"


def test_env_selects_an_instance_of_the_running_server(fleet: Fleet) -> None:
    """`tokensmith env --instance worker-vm` points clients at the worker's listener."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokensmith",
            "env",
            "--data-dir",
            str(fleet.server.data_dir),
            "--instance",
            "worker-vm",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"export GCE_METADATA_HOST=127.0.0.1:{fleet.worker_port}" in result.stdout
    listed = json.loads((fleet.server.data_dir / "server.json").read_text())["metadata"]
    assert [m["name"] for m in listed] == ["web-vm", "worker-vm"]


def test_editing_the_config_wakes_hanging_gets(fleet: Fleet) -> None:
    """A changed attribute in the settings file is served live and ends a hanging GET."""
    path = f"{V1}/instance/attributes/role"
    etag = fleet.get(fleet.web_port, path).headers["etag"]
    result: list[httpx.Response] = []
    waiter = threading.Thread(
        target=lambda: result.append(
            fleet.get(
                fleet.web_port, path, wait_for_change="true", last_etag=etag, timeout_sec="10"
            )
        )
    )
    waiter.start()
    started = time.monotonic()
    fleet.write_config(role="db")
    waiter.join(5)
    assert time.monotonic() - started < 5  # the hanging GET had 10 s left
    assert result[0].text == "db"
    assert result[0].headers["etag"] != etag


def test_attached_account_created_later_is_granted_at_the_next_start(fleet: Fleet) -> None:
    """A missing attached account: 403 (and a warning); created, then a restart grants it."""
    token = f"{V1}/instance/service-accounts/default/token"
    assert fleet.get(fleet.worker_port, token).status_code == 403
    assert "worker@" in fleet.server.log_path.read_text()
    fleet.live.create_account("worker")
    assert fleet.get(fleet.worker_port, token).status_code == 403
    fleet.restart()
    response = fleet.get(fleet.worker_port, token)
    assert response.status_code == 200, response.text
    info = fleet.live.owner.get(
        "/tokeninfo", params={"access_token": response.json()["access_token"]}
    )
    assert info.json()["email"] == email("worker")
    assert "granted serviceAccount:service-" in fleet.server.log_path.read_text()


def test_sigterm_answers_hanging_gets_and_stops_promptly(fleet: Fleet) -> None:
    """At SIGTERM a hanging GET gets its answer at once and serve exits 0 within seconds."""
    result: list[Any] = []
    waiter = threading.Thread(
        target=lambda: result.append(
            fleet.get(
                fleet.web_port, f"{V1}/instance/name", wait_for_change="true", timeout_sec="60"
            )
        )
    )
    waiter.start()
    time.sleep(0.3)  # let the GET reach the server; no change will come
    process = fleet.server.process
    assert process is not None
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    waiter.join(10)
    assert process.wait(10) == 0
    assert time.monotonic() - started < 4  # not the 5 s graceful-shutdown limit
    assert result[0].status_code == 200
    assert result[0].text == "web-vm"
    assert not (fleet.server.data_dir / "server.json").exists()
