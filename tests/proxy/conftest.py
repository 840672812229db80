"""Fixtures for the HTTPS proxy: a local CA, a proxy on a background thread, raw clients.

- ``live``: one real ``tokensmith serve`` process for the package (the proxy's upstream);
- ``ca``: a ``LocalCA`` (extra domain ``example.test``) in a temporary data directory;
- ``ProxyThread``: ``serve_proxy`` on a loopback port, in its own event loop on a thread of the
  test process (so that ``/proc/self/fd`` counts its sockets);
- ``open_tunnel`` and friends: a client that speaks CONNECT and TLS by hand, to send exactly the
  bytes a test means (garbage, HTTP/1.0, abandoned handshakes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tokensmith.proxy import HostPolicy, LocalCA, ProxyLimits, serve_proxy
from tokensmith.testing import LiveServer


def _loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """asyncio's loop, and uvloop's, which ``tokensmith serve`` runs on where installed."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


LOOPS = _loop_factories()
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
EXTRA_DOMAIN = "example.test"
POLICY = HostPolicy.with_domains([EXTRA_DOMAIN])


class ProxyThread:
    """``serve_proxy`` on ``127.0.0.1:<free port>`` in an event loop on a daemon thread."""

    def __init__(
        self,
        ca: LocalCA,
        upstream: tuple[str, int],
        policy: HostPolicy = POLICY,
        limits: ProxyLimits | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self._args = (self.sock, ca, upstream, policy, limits)
        self._loop = (loop_factory or asyncio.new_event_loop)()
        self._task: asyncio.Task[None] | None = None
        self._started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(serve_proxy(*self._args))
        self._loop.call_soon(self._started.set_result, None)
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    def start(self) -> ProxyThread:
        self._thread.start()
        self._started.result(timeout=5)
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._task is not None and not self._task.done()

    def stop(self) -> None:
        if self._task is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)
        self.sock.close()

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@pytest.fixture(scope="package")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("proxy-live") / "data") as server:
        yield server


@pytest.fixture(scope="package")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA.load_or_create(tmp_path_factory.mktemp("proxy-ca") / "ca", POLICY.ca_domains)


@pytest.fixture(params=sorted(LOOPS))
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    """Each event loop the proxy may run on, in turn."""
    return LOOPS[request.param]


@pytest.fixture(scope="package")
def proxy(ca: LocalCA, live: LiveServer) -> Iterator[ProxyThread]:
    """The proxy to the live server, on the loop ``tokensmith serve`` uses (uvloop if any)."""
    factory = LOOPS.get("uvloop", asyncio.new_event_loop)
    with ProxyThread(ca, ("127.0.0.1", live.port), loop_factory=factory) as running:
        yield running


def read_head(sock: socket.socket | ssl.SSLSocket) -> bytes:
    """Bytes up to and including the first blank line (or whatever came before EOF)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_all(sock: socket.socket | ssl.SSLSocket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError, ssl.SSLError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def send_connect(
    proxy: ProxyThread, target: str, version: str = "HTTP/1.1"
) -> tuple[socket.socket, bytes]:
    """A connection to the proxy that sent ``CONNECT target``; returns it and the answer head."""
    sock = socket.create_connection(proxy.address, timeout=10)
    host = target.rpartition(":")[0]
    sock.sendall(f"CONNECT {target} {version}\r\nHost: {host}\r\n\r\n".encode())
    return sock, read_head(sock)


def open_tunnel(
    proxy: ProxyThread, host: str, cafile: Path, version: str = "HTTP/1.1"
) -> ssl.SSLSocket:
    """A TLS connection to ``host`` through the proxy, verified against ``cafile`` only."""
    sock, head = send_connect(proxy, f"{host}:443", version)
    assert head.startswith(b"HTTP/1.1 200 "), head
    context = ssl.create_default_context(cafile=str(cafile))
    return context.wrap_socket(sock, server_hostname=host)


def status_and_body(answer: bytes) -> tuple[str, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), body


def json_body(answer: bytes) -> Any:
    return json.loads(status_and_body(answer)[1])


def run_google_auth(script: str, proxy: ProxyThread, ca: LocalCA, **args: Any) -> Any:
    """Run ``script`` in a fresh Python with google-auth behind the proxy; ``args`` arrive as
    the dict ``ARGS``; what the script prints is JSON and is returned parsed.

    Every proxy variable points at the proxy (loopback excepted), ``REQUESTS_CA_BUNDLE`` at the
    CA's bundle, and no Google or tokensmith variable leaks in from the test's environment.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in _PROXY_VARIABLES
        and not k.startswith(("GOOGLE_", "GCE_", "TOKENSMITH_"))
    }
    env.update(
        HTTPS_PROXY=proxy.url,
        https_proxy=proxy.url,
        HTTP_PROXY=proxy.url,
        http_proxy=proxy.url,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        REQUESTS_CA_BUNDLE=str(ca.bundle_path),
        NO_GCE_CHECK="true",
    )
    prelude = "import json, sys\nARGS = json.loads(sys.argv[1])\n"
    completed = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script), json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def tunnelled_hosts(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The hosts the proxy opened tunnels to, from its debug log (caplog at DEBUG)."""
    return {
        str(r.args[1])
        for r in caplog.records
        if r.name == "tokensmith.proxy"
        and r.msg.startswith("proxy: tunnel %s -> %s open")
        and isinstance(r.args, tuple)
    }


def signed_by_one_of(pems: Any, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is an RS256 signature of ``message`` by one of the PEM certs."""
    for pem in pems:
        public = x509.load_pem_x509_certificate(pem.encode()).public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        try:
            public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return True
    return False
