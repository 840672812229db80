"""The servers under load: ``tokensmith serve``, the Node peer, and a throwaway PostgreSQL
database.

``tokensmith serve`` is started as a user would start it (``python -m tokensmith serve``),
optionally pinned with taskset (the whole process, every thread it will ever start), and is
ready when ``/healthz`` answers 200: the time to that answer is the start time the bench
reports. Which flags the installed server has (``--workers``, ``--metadata-port``) is read
from its ``--help``, so the bench runs against older and newer servers alike.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.procs import Processes

__all__ = [
    "PeerServer",
    "TokensmithServer",
    "postgres_database",
    "postgres_reachable",
    "serve_flags",
]

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = ROOT / "bench" / "peer"


@functools.cache
def serve_flags() -> frozenset[str]:
    """The long options ``tokensmith serve --help`` lists."""
    done = subprocess.run(
        [sys.executable, "-m", "tokensmith", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", done.stdout))


def _get(host: str, port: int, path: str, timeout: float = 1.0) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _wait_ready(
    proc: subprocess.Popen[bytes],
    port: int,
    path: str,
    log_path: Path,
    timeout: float,
    started: float,
) -> float:
    """Poll ``path`` every 5 ms until it answers 200; seconds since ``started``."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early; log {log_path}:\n{_tail(log_path)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if _get("127.0.0.1", port, path, timeout=1.0) == 200:
                return time.monotonic() - started
        time.sleep(0.005)
    raise RuntimeError(f"server not ready after {timeout}s; log {log_path}:\n{_tail(log_path)}")


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


class TokensmithServer:
    """One ``tokensmith serve`` process (and its workers) on loopback ports; ``workers`` None
    leaves their number to the server's default."""

    def __init__(
        self,
        processes: Processes,
        data_dir: Path,
        port: int,
        *,
        log_path: Path,
        database: str = "",
        cpus: str | None = None,
        workers: int | None = None,
        metadata_port: int = 0,
    ) -> None:
        self.processes = processes
        self.data_dir = data_dir
        self.port = port
        self.log_path = log_path
        self.database = database
        self.cpus = cpus
        self.workers = workers
        self.metadata_port = metadata_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metadata_url(self) -> str:
        return f"http://127.0.0.1:{self.metadata_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "tokensmith",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
        ]
        if self.database:
            args += ["--database", self.database]
        # None: the server's default. A server without the flag always runs one process.
        if self.workers is not None and "--workers" in serve_flags():
            args += ["--workers", str(self.workers)]
        if self.metadata_port:
            args += ["--metadata-port", str(self.metadata_port)]
        return args

    def start(self, timeout: float = 60.0) -> TokensmithServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
        started = time.monotonic()
        self.proc = self.processes.start(
            self.command(), log_path=self.log_path, env=env, cpus=self.cpus
        )
        self.start_seconds = _wait_ready(
            self.proc, self.port, "/healthz", self.log_path, timeout, started
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.processes.stop(self.proc)
            self.proc = None

    def __enter__(self) -> TokensmithServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class PeerServer:
    """node-oidc-provider (bench/peer/server.mjs) issuing JWT access tokens."""

    client_id = "bench-client"
    client_secret = "bench-client-secret"
    scope = "api:read"

    def __init__(
        self,
        processes: Processes,
        port: int,
        *,
        log_path: Path,
        cpus: str | None = None,
        workers: int = 1,
    ) -> None:
        self.processes = processes
        self.port = port
        self.log_path = log_path
        self.cpus = cpus
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> PeerServer:
        args = ["node", "server.mjs", "--port", str(self.port), "--workers", str(self.workers)]
        env = {**os.environ, "NODE_ENV": "production"}
        started = time.monotonic()
        self.proc = self.processes.start(
            args, log_path=self.log_path, env=env, cwd=PEER_DIR, cpus=self.cpus
        )
        _wait_ready(
            self.proc,
            self.port,
            "/.well-known/openid-configuration",
            self.log_path,
            timeout,
            started,
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.processes.stop(self.proc)
            self.proc = None

    def __enter__(self) -> PeerServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def postgres_reachable(admin_url: str) -> str:
    """Empty if a PostgreSQL server answers at ``admin_url``; otherwise why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        with psycopg.connect(admin_url, connect_timeout=2):
            return ""
    except psycopg.Error as exc:
        return f"no PostgreSQL at {admin_url}: {str(exc).strip().splitlines()[0]}"


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server of ``admin_url``; yields its URL, drops it afterwards."""
    import psycopg

    name = f"tokensmith_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
