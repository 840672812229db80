"""Public test helpers: run a real ``tokensmith serve`` process, and get tokens from it.

Shipped with the package (as ``structlog.testing`` is) so that projects testing their own code
against tokensmith can start a server in their fixtures the same way our tests do.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

__all__ = ["LiveServer", "free_port", "live_server", "owner_access_token"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A ``tokensmith serve`` child process on a loopback port with its own data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def owner_credentials(self) -> Path:
        return self.data_dir / "credentials" / "owner.json"

    def start(self, timeout: float = 20.0) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
        env.update(self.env)
        args = [
            sys.executable,
            "-m",
            "tokensmith",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            *self.extra_args,
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tokensmith exited early:\n{self.log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tokensmith did not start in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def live_server(data_dir: Path, **kwargs: object) -> Iterator[LiveServer]:
    server = LiveServer(data_dir, **kwargs)  # type: ignore[arg-type]
    with server:
        yield server


def owner_access_token(server: LiveServer, scope: str = "") -> str:
    """An access token for the server's owner, via the refresh grant in ``owner.json``."""
    creds = json.loads(server.owner_credentials.read_text())
    form = {
        "grant_type": "refresh_token",
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "refresh_token": creds["refresh_token"],
    }
    if scope:
        form["scope"] = scope
    response = httpx.post(creds["token_uri"], data=form, timeout=10)
    response.raise_for_status()
    return str(response.json()["access_token"])
