"""The proxy's behaviour on the wire: tunnels to the API, refusals that never leave the
machine, garbage and abandoned connections that cost nothing, and timeouts on idle ones."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.proxy.conftest import (
    ProxyThread,
    json_body,
    open_tunnel,
    read_all,
    read_head,
    send_connect,
    status_and_body,
)
from tokensmith.proxy import LocalCA, ProxyLimits
from tokensmith.testing import LiveServer, free_port

pytestmark = pytest.mark.slow

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
QUICK = ProxyLimits(
    head_timeout=0.5,
    handshake_timeout=0.5,
    idle_timeout=0.5,
    connect_timeout=1.0,
    close_timeout=0.5,
    max_head_bytes=4096,
)
NO_TUNNEL = b"tokensmith does not tunnel to the network"


class EchoUpstream:
    """A stand-in API: counts connections, answers each request with the head it received."""

    def __init__(self) -> None:
        self.connections = 0
        upstream = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                upstream.connections += 1
                head = read_head(self.request)
                body = head
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address: tuple[str, int] = self.server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echo() -> Iterator[EchoUpstream]:
    upstream = EchoUpstream()
    yield upstream
    upstream.close()


@pytest.fixture
def echo_proxy(ca: LocalCA, echo: EchoUpstream, loop_factory: LoopFactory) -> Iterator[ProxyThread]:
    with ProxyThread(ca, echo.address, limits=QUICK, loop_factory=loop_factory) as running:
        yield running


@pytest.fixture
def quick_proxy(ca: LocalCA, live: LiveServer, loop_factory: LoopFactory) -> Iterator[ProxyThread]:
    """A proxy to the live server with half-second timeouts."""
    upstream = ("127.0.0.1", live.port)
    with ProxyThread(ca, upstream, limits=QUICK, loop_factory=loop_factory) as running:
        yield running


def exchange(proxy: ProxyThread, payload: bytes) -> bytes:
    """Send ``payload`` to the proxy, return everything it answers before closing."""
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.sendall(payload)
        return read_all(sock)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settled_fds() -> int:
    """The descriptor count once it has stopped changing (closes in flight have landed)."""
    count, same = open_fds(), 0
    while same < 5:
        time.sleep(0.05)
        now = open_fds()
        same = same + 1 if now == count else 0
        count = now
    return count


def wait_for_fds(expected: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    count = open_fds()
    while count > expected and time.monotonic() < deadline:
        time.sleep(0.05)
        count = open_fds()
    return count


# tunnels --------------------------------------------------------------------------------------


def test_tunnel_relays_the_request_unchanged(
    echo_proxy: ProxyThread, echo: EchoUpstream, ca: LocalCA
) -> None:
    """Inside the tunnel the upstream gets the client's bytes as sent, Host header included."""
    request = (
        b"POST /v1/projects/-/serviceAccounts/a@b:signBlob HTTP/1.1\r\n"
        b"Host: iamcredentials.googleapis.com\r\nContent-Length: 0\r\n\r\n"
    )
    with open_tunnel(echo_proxy, "iamcredentials.googleapis.com", ca.ca_path) as tls:
        assert tls.selected_alpn_protocol() in (None, "http/1.1")
        tls.sendall(request)
        answer = read_all(tls)
    status, body = status_and_body(answer)
    assert status == "HTTP/1.1 200 OK"
    assert body == request
    assert echo.connections == 1


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("evil.example:443", b"evil.example"),
        ("sts.googleapis.com:443", b"sts.googleapis.com"),
        ("www.googleapis.com:8443", b"www.googleapis.com"),
        ("127.0.0.1:{upstream}", b"127.0.0.1:"),
        ("[::1]:443", b"[::1]:443"),
        ("metadata.google.internal:443", b"metadata.google.internal"),
    ],
)
def test_refused_connect_never_reaches_anything(
    echo_proxy: ProxyThread, echo: EchoUpstream, target: str, named: bytes
) -> None:
    """CONNECT to a host tokensmith does not serve is 403, names the host, says the proxy does
    not tunnel to the network, and opens no connection at all (not even to the upstream)."""
    sock, head = send_connect(echo_proxy, target.format(upstream=echo.address[1]))
    with sock:
        answer = head + read_all(sock)
    status, body = status_and_body(answer)
    assert status == "HTTP/1.1 403 Forbidden"
    assert named in body
    assert NO_TUNNEL in body
    assert echo.connections == 0


def test_plain_http_proxying_is_refused(echo_proxy: ProxyThread, echo: EchoUpstream) -> None:
    """``GET http://…`` through the proxy is 403 naming the host; nothing is forwarded."""
    answer = exchange(
        echo_proxy, b"GET http://www.googleapis.com/oauth2/v1/certs HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    status, body = status_and_body(answer)
    assert status == "HTTP/1.1 403 Forbidden"
    assert b"plain HTTP to www.googleapis.com" in body
    assert NO_TUNNEL in body
    assert echo.connections == 0


# bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "status", "says"),
    [
        (b"\x00\xffgarbage\r\n\r\n", "HTTP/1.1 400 Bad Request", b"not ASCII"),
        (b"hello there\r\n\r\n", "HTTP/1.1 400 Bad Request", b"malformed request line"),
        (b"CONNECT www.googleapis.com HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request", b"host:port"),
        (b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n", "HTTP/1.1 400 Bad Request", b"HTTPS_PROXY"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/1.1 400 Bad Request", b"HTTP/1.1 only"),
        (
            b"CONNECT www.googleapis.com:443 HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n",
            "HTTP/1.1 431 Request Header Fields Too Large",
            b"too large",
        ),
        (b"CONNECT www.goog", "HTTP/1.1 408 Request Timeout", b"in time"),
        (
            b"CONNECT www.googleapis.com:443 HTTP/1.1\r\n\r\n\x16\x03\x01\x00\x05hello",
            "HTTP/1.1 400 Bad Request",
            b"before 200 Connection established",
        ),
    ],
)
def test_bad_input_gets_a_clear_answer(
    echo_proxy: ProxyThread, echo: EchoUpstream, payload: bytes, status: str, says: bytes
) -> None:
    """Garbage, HTTP/2, oversized or unfinished heads and early TLS bytes are answered with a
    reason and the connection closed; the proxy keeps serving."""
    answer = exchange(echo_proxy, payload)
    got_status, body = status_and_body(answer)
    assert got_status == status
    assert says in body
    assert echo.connections == 0
    assert echo_proxy.alive


def test_tls_to_the_proxy_itself_is_closed(echo_proxy: ProxyThread, ca: LocalCA) -> None:
    """A client that speaks TLS to the proxy (https:// proxy URL) is disconnected at once."""
    context = ssl.create_default_context(cafile=str(ca.ca_path))
    with socket.create_connection(echo_proxy.address, timeout=5) as sock:
        started = time.monotonic()
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            context.wrap_socket(sock, server_hostname="www.googleapis.com")
        assert time.monotonic() - started < QUICK.head_timeout
    assert echo_proxy.alive


def test_failed_handshake_closes_the_tunnel(
    echo_proxy: ProxyThread, ca: LocalCA, tmp_path: Path
) -> None:
    """After 200, garbage instead of a ClientHello, or a client that does not trust the CA,
    ends that connection only."""
    sock, head = send_connect(echo_proxy, "www.googleapis.com:443")
    with sock:
        assert head.startswith(b"HTTP/1.1 200 Connection established")
        sock.sendall(b"this is not TLS\r\n" * 20)
        assert read_all(sock) == b""
    sock, head = send_connect(echo_proxy, "oauth2.googleapis.com:443")
    untrusting = ssl.create_default_context()  # the system's roots, not the local CA
    with sock, pytest.raises(ssl.SSLCertVerificationError):
        untrusting.wrap_socket(sock, server_hostname="oauth2.googleapis.com")
    sock, head = send_connect(echo_proxy, "oauth2.googleapis.com:443")
    other_name = ssl.create_default_context(cafile=str(ca.ca_path))
    with sock, pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        other_name.wrap_socket(sock, server_hostname="www.googleapis.com")
    with open_tunnel(echo_proxy, "www.googleapis.com", ca.ca_path) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: www.googleapis.com\r\n\r\n")
        assert status_and_body(read_all(tls))[0] == "HTTP/1.1 200 OK"


def test_upstream_down_is_502(ca: LocalCA, loop_factory: LoopFactory) -> None:
    """When the API does not answer, CONNECT gets 502 naming it, not a dangling tunnel."""
    port = free_port()
    with ProxyThread(ca, ("127.0.0.1", port), limits=QUICK, loop_factory=loop_factory) as proxy:
        sock, head = send_connect(proxy, "www.googleapis.com:443")
        with sock:
            status, body = status_and_body(head + read_all(sock))
    assert status == "HTTP/1.1 502 Bad Gateway"
    assert f"127.0.0.1:{port} is not answering".encode() in body


def test_connections_are_capped(ca: LocalCA, echo: EchoUpstream, loop_factory: LoopFactory) -> None:
    """Beyond max_connections, a new client gets 503 at once instead of holding a socket."""
    limits = ProxyLimits(head_timeout=5, max_connections=2)
    with ProxyThread(ca, echo.address, limits=limits, loop_factory=loop_factory) as proxy:
        held = [socket.create_connection(proxy.address, timeout=5) for _ in range(2)]
        try:
            time.sleep(0.2)  # let the proxy accept the two it will hold
            answer = exchange(proxy, b"CONNECT www.googleapis.com:443 HTTP/1.1\r\n\r\n")
            assert status_and_body(answer)[0] == "HTTP/1.1 503 Service Unavailable"
        finally:
            for sock in held:
                sock.close()


# the real API behind the proxy ------------------------------------------------------------------


def test_http10_client_through_the_tunnel(proxy: ProxyThread, ca: LocalCA) -> None:
    """An HTTP/1.0 client (CONNECT and request, no Host header) gets the certificates and the
    connection closes after the answer."""
    with open_tunnel(proxy, "www.googleapis.com", ca.bundle_path, version="HTTP/1.0") as tls:
        tls.sendall(b"GET /oauth2/v1/certs HTTP/1.0\r\n\r\n")
        answer = read_all(tls)
    assert status_and_body(answer)[0] == "HTTP/1.1 200 OK"
    certs = json_body(answer)
    assert certs
    assert all(v.startswith("-----BEGIN CERTIFICATE-----") for v in certs.values())


def test_keep_alive_through_one_tunnel(proxy: ProxyThread, ca: LocalCA) -> None:
    """Several requests share one tunnel (http.client's set_tunnel), as pooled clients do."""
    context = ssl.create_default_context(cafile=str(ca.ca_path))
    conn = http.client.HTTPSConnection(*proxy.address, context=context, timeout=10)
    conn.set_tunnel("accounts.google.com", 443)
    try:
        for _ in range(3):
            conn.request("GET", "/.well-known/openid-configuration")
            response = conn.getresponse()
            assert response.status == 200
            assert b'"issuer":"https://accounts.google.com"' in response.read()
        assert conn.sock is not None
    finally:
        conn.close()


def test_idle_tunnel_is_closed(quick_proxy: ProxyThread, ca: LocalCA) -> None:
    """A tunnel with no traffic either way is closed after idle_timeout."""
    with open_tunnel(quick_proxy, "www.googleapis.com", ca.ca_path) as tls:
        tls.settimeout(5)
        started = time.monotonic()
        assert read_all(tls) == b""
        assert QUICK.idle_timeout * 0.9 <= time.monotonic() - started < 4


def test_silent_client_is_answered_408(quick_proxy: ProxyThread) -> None:
    """A client that connects and says nothing gets 408 after head_timeout, then EOF."""
    with socket.create_connection(quick_proxy.address, timeout=5) as sock:
        started = time.monotonic()
        answer = read_all(sock)
        assert time.monotonic() - started < 4
    assert status_and_body(answer)[0] == "HTTP/1.1 408 Request Timeout"


def _abandon_many(proxy: ProxyThread, ca: LocalCA) -> list[socket.socket]:
    """Every way a client can walk away; returns the sockets it left open (silent ones)."""
    left_open: list[socket.socket] = []
    for round_ in range(15):
        # connect and leave at once; leave mid-head; leave after 200; leave mid-handshake
        socket.create_connection(proxy.address, timeout=5).close()
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"CONNECT www.googleapis.com:4")
        sock, _ = send_connect(proxy, "www.googleapis.com:443")
        sock.close()
        sock, _ = send_connect(proxy, "oauth2.googleapis.com:443")
        sock.sendall(b"\x16\x03\x01\x00\xff")  # a TLS record header, then nothing
        sock.close()
        # a finished handshake dropped without close_notify, and one left idle
        tls = open_tunnel(proxy, "iam.googleapis.com", ca.ca_path)
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: iam.googleapis.com\r\n\r\n")
        tls.recv(1)
        socket.socket.close(tls)  # the raw socket goes, no TLS shutdown
        tls.close()
        left_open.append(open_tunnel(proxy, "www.googleapis.com", ca.ca_path))
        # silent connections and unfinished heads the proxy must time out itself
        left_open.append(socket.create_connection(proxy.address, timeout=5))
        if round_ % 3 == 0:
            partial = socket.create_connection(proxy.address, timeout=5)
            partial.sendall(b"CONNECT ")
            left_open.append(partial)
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"\xff" * 100 + b"\r\n\r\n")
    return left_open


def test_abandoned_connections_leave_no_descriptors(
    ca: LocalCA, live: LiveServer, loop_factory: LoopFactory
) -> None:
    """Many abandoned, silent and half-finished connections: the proxy survives, times out what
    the clients left open, and its open file descriptors return to the baseline."""
    before_proxy = open_fds()
    upstream = ("127.0.0.1", live.port)
    with ProxyThread(ca, upstream, limits=QUICK, loop_factory=loop_factory) as quick:
        # one full round trip first, so that the leaf and the loop's own descriptors exist
        with open_tunnel(quick, "www.googleapis.com", ca.ca_path) as tls:
            tls.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert status_and_body(read_all(tls))[0] == "HTTP/1.1 200 OK"
        baseline = settled_fds()
        left_open = _abandon_many(quick, ca)
        # the proxy closes what the clients left open within its timeouts
        for sock in left_open:
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                read_all(sock)
            sock.close()
        assert wait_for_fds(baseline) == baseline
        assert quick.alive
        with open_tunnel(quick, "www.googleapis.com", ca.ca_path) as tls:
            tls.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert status_and_body(read_all(tls))[0] == "HTTP/1.1 200 OK"
    assert wait_for_fds(before_proxy) == before_proxy


def test_stopping_closes_open_tunnels(
    ca: LocalCA, live: LiveServer, loop_factory: LoopFactory
) -> None:
    """Cancelling serve_proxy closes the listening socket and every open tunnel."""
    before = open_fds()
    proxy = ProxyThread(ca, ("127.0.0.1", live.port), loop_factory=loop_factory).start()
    tunnels = [open_tunnel(proxy, "www.googleapis.com", ca.ca_path) for _ in range(5)]
    proxy.stop()
    for tls in tunnels:
        tls.settimeout(5)
        assert read_all(tls) == b""
        tls.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=2).close()
    assert wait_for_fds(before) == before
