"""The HTTPS proxy: ``CONNECT`` to a Google host tokensmith serves, TLS terminated here with a
certificate from the local CA, and the decrypted HTTP relayed to the local API (COMPAT.md §6).

It exists for the client code paths whose Google host cannot be overridden (Python's
impersonated ID tokens and ``sign_bytes``, ``verify_oauth2_token``, authorized_user files,
Node's service-account grant). Per connection::

    client ── CONNECT iamcredentials.googleapis.com:443 ──▶ proxy   (host allowed? else 403)
    proxy  ── TCP ──▶ the API upstream (127.0.0.1:PORT)             (down? 502)
    proxy  ── 200 Connection established ──▶ client
    client ══ TLS (leaf for the host, chained to the local CA) ══ proxy
    bytes pumped both ways unchanged (the Host header included) until either side closes

The proxy connects to the one configured upstream and nowhere else: a host it does not serve,
another port, an IP literal or plain-HTTP proxying (``GET http://…``) is answered ``403`` by the
proxy itself. Every wait is bounded (request head, TLS handshake, idle tunnel), the number of
open connections is capped, and each connection's sockets are closed on every path out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import urllib.parse
from typing import Any

from tokensmith.proxy.ca import LocalCA, NotPermitted
from tokensmith.proxy.hosts import HostPolicy, printable
from tokensmith.proxy.protocol import (
    ESTABLISHED,
    BadRequest,
    ConnectRequest,
    OtherRequest,
    parse_head,
    response,
)

__all__ = ["ProxyLimits", "loopback_upstream", "serve_proxy"]

log = logging.getLogger("tokensmith.proxy")

_CHUNK = 65536
_TLS_HANDSHAKE = b"\x16"  # the content type of a TLS handshake record (RFC 8446 §5.1)
_NO_TUNNEL = "tokensmith does not tunnel to the network"


@dataclasses.dataclass(frozen=True)
class ProxyLimits:
    """Timeouts (seconds) and sizes that keep a slow or hostile client from holding resources."""

    head_timeout: float = 30.0  # to send the CONNECT request head
    handshake_timeout: float = 10.0  # to finish the TLS handshake after 200
    idle_timeout: float = 120.0  # a tunnel with no bytes either way is closed
    connect_timeout: float = 5.0  # to reach the upstream
    close_timeout: float = 2.0  # for a TLS close_notify exchange before the socket is dropped
    max_head_bytes: int = 16384
    max_connections: int = 512


def loopback_upstream(sock: socket.socket) -> tuple[str, int]:
    """Where to reach an API listening on ``sock``: its address, a wildcard made loopback."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", ""):  # noqa: S104 - recognising the wildcard, not binding it
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return str(host), int(port)


class _Activity:
    """When bytes last moved through a tunnel, in the event loop's monotonic time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.last = loop.time()

    def touch(self) -> None:
        self.last = self._loop.time()

    async def until_idle(self, timeout: float) -> None:
        while True:
            remaining = self.last + timeout - self._loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, seen: _Activity) -> None:
    """Copy ``source`` to ``sink`` until end of stream or a broken connection."""
    with contextlib.suppress(OSError):
        while True:
            data = await source.read(_CHUNK)
            if not data:
                return
            seen.touch()
            sink.write(data)
            await sink.drain()


class _Proxy:
    def __init__(
        self,
        ca: LocalCA,
        upstream: tuple[str, int],
        allowed: HostPolicy,
        limits: ProxyLimits,
    ) -> None:
        self.ca = ca
        self.upstream = upstream
        self.allowed = allowed
        self.limits = limits
        self.connections: set[asyncio.Task[Any]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        opened: list[asyncio.StreamWriter] = [writer]
        peer = _peer(writer)
        try:
            if len(self.connections) > self.limits.max_connections:
                log.warning("proxy: %s refused, %d connections open", peer, len(self.connections))
                await _answer(writer, 503, "tokensmith proxy: too many open connections")
                return
            await self._serve(reader, writer, peer, opened)
        except OSError as exc:  # the client or the upstream went away: nothing to answer
            log.debug("proxy: connection from %s ended: %s", peer, _reason(exc))
        except Exception:  # one connection's bug must not stop the proxy
            log.exception("proxy: connection from %s failed", peer)
        except asyncio.CancelledError:  # the proxy is stopping: no goodbyes
            for opened_writer in opened:
                opened_writer.transport.abort()
            raise
        finally:
            try:
                await _close_all(opened, self.limits.close_timeout)
            finally:
                # only now: a shutdown must wait for (or cancel) the closing too
                self.connections.discard(task)

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        opened: list[asyncio.StreamWriter],
    ) -> None:
        """Serve one client connection; every connection it opens goes into ``opened``."""
        request = await self._read_request(reader, writer, peer)
        if request is None:
            return
        if isinstance(request, OtherRequest):
            await self._refuse_other(writer, request, peer)
            return
        refusal = self.allowed.refusal(request.host, request.port)
        if refusal is not None:
            log.info(
                "proxy: refused CONNECT %s:%s from %s", printable(request.host), request.port, peer
            )
            await _answer(writer, 403, f"tokensmith proxy: {refusal}")
            return
        if _buffered(reader):
            await _answer(
                writer,
                400,
                "tokensmith proxy: data arrived before 200 Connection established; "
                "start TLS only after the proxy's answer",
            )
            return
        try:
            leaf = self.ca.leaf(request.host)
        except NotPermitted as exc:
            await _answer(writer, 403, f"tokensmith proxy: {exc}; {_NO_TUNNEL}")
            return
        upstream = await self._open_upstream(writer)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        opened.append(up_writer)
        writer.write(ESTABLISHED)
        await writer.drain()
        try:
            await writer.start_tls(
                leaf.context, ssl_handshake_timeout=self.limits.handshake_timeout
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.info(
                "proxy: TLS handshake with %s for %s failed: %s", peer, leaf.host, _reason(exc)
            )
            return
        log.debug("proxy: tunnel %s -> %s open", peer, leaf.host)
        await self._relay(reader, writer, up_reader, up_writer)
        log.debug("proxy: tunnel %s -> %s closed", peer, leaf.host)

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> ConnectRequest | OtherRequest | None:
        try:
            head = await asyncio.wait_for(_read_head(reader), self.limits.head_timeout)
        except asyncio.IncompleteReadError:
            return None  # the client left before finishing its request: nobody to answer
        except asyncio.LimitOverrunError:
            await _answer(writer, 431, "tokensmith proxy: the request head is too large")
            return None
        except TimeoutError:
            await _answer(writer, 408, "tokensmith proxy: no complete request head in time")
            return None
        except OSError:
            return None
        if head is None:
            log.info(
                "proxy: %s started TLS with the proxy itself; the proxy's URL is http://, "
                "not https:// (HTTPS_PROXY=http://HOST:PORT)",
                peer,
            )
            return None
        try:
            return parse_head(head)
        except BadRequest as exc:
            log.info("proxy: bad request from %s: %s", peer, exc)
            await _answer(writer, 400, f"tokensmith proxy: {exc}")
            return None

    async def _refuse_other(
        self, writer: asyncio.StreamWriter, request: OtherRequest, peer: str
    ) -> None:
        if request.absolute:
            host = printable(urllib.parse.urlsplit(request.target).netloc or request.target)
            method = printable(request.method, 20)
            log.info("proxy: refused plain-HTTP %s %s from %s", method, host, peer)
            await _answer(
                writer,
                403,
                f"tokensmith proxy: refusing to forward plain HTTP to {host}; this proxy only "
                f"answers CONNECT for the Google hosts tokensmith serves, and {_NO_TUNNEL}",
            )
            return
        await _answer(
            writer,
            400,
            "tokensmith proxy: this is an HTTPS proxy, not a web server; point HTTPS_PROXY at it "
            "(and keep NO_PROXY=127.0.0.1,localhost for direct calls)",
        )

    async def _open_upstream(
        self, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        host, port = self.upstream
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(host, port), self.limits.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            log.warning(
                "proxy: the API upstream %s:%s is not answering: %s", host, port, _reason(exc)
            )
            await _answer(
                writer,
                502,
                f"tokensmith proxy: the tokensmith API at {host}:{port} is not answering",
            )
            return None

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """Pump both ways until one side ends (HTTP/1.x over TLS does not half-close) or the
        tunnel has been idle for ``idle_timeout``."""
        seen = _Activity(asyncio.get_running_loop())
        tasks = [
            asyncio.ensure_future(_pump(reader, up_writer, seen)),
            asyncio.ensure_future(_pump(up_reader, writer, seen)),
            asyncio.ensure_future(seen.until_idle(self.limits.idle_timeout)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request head, or None if the client opened with a TLS handshake record instead."""
    first = await reader.readexactly(1)
    if first == _TLS_HANDSHAKE:
        return None
    return first + await reader.readuntil(b"\r\n\r\n")


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _buffered(reader: asyncio.StreamReader) -> bool:
    """Whether the client sent bytes after its CONNECT head without waiting for the answer.

    Those bytes would sit in the reader ahead of the TLS layer and be taken for decrypted
    data; ``StreamReader`` has no public view of its buffer, hence the attribute.
    """
    return bool(getattr(reader, "_buffer", b""))


async def _answer(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    with contextlib.suppress(OSError):
        writer.write(response(status, message))
        await writer.drain()


async def _close(writer: asyncio.StreamWriter, timeout: float) -> None:
    """Close gracefully (TLS close_notify) within ``timeout``, else drop the socket."""
    transport = writer.transport
    if transport.is_closing():  # the peer left, or a failed handshake: nothing to say
        transport.abort()
        return
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), timeout)
    except (OSError, TimeoutError):  # ssl.SSLError is an OSError
        transport.abort()


async def _close_all(writers: list[asyncio.StreamWriter], timeout: float) -> None:
    """Close every connection; if cancelled meanwhile, drop the rest at once and re-raise."""
    try:
        for writer in writers:
            await _close(writer, timeout)
    except asyncio.CancelledError:
        for writer in writers:
            writer.transport.abort()
        raise


async def serve_proxy(
    sock: socket.socket,
    ca: LocalCA,
    upstream: tuple[str, int],
    allowed: HostPolicy,
    limits: ProxyLimits | None = None,
) -> None:
    """Serve the proxy on the listening ``sock`` until cancelled; every hop goes to ``upstream``.

    On cancellation the listening socket is closed and every open connection is cancelled
    (its sockets closed) before this returns.
    """
    proxy = _Proxy(ca, upstream, allowed, limits or ProxyLimits())
    sock.setblocking(False)
    server = await asyncio.start_server(proxy.handle, sock=sock, limit=proxy.limits.max_head_bytes)
    log.info(
        "HTTPS proxy for %s on %s:%s (upstream %s:%s; CA %s)",
        ", ".join(sorted(allowed.hosts)),
        *sock.getsockname()[:2],
        *upstream,
        ca.ca_path,
    )
    try:
        await server.serve_forever()
    finally:
        server.close()
        pending = list(proxy.connections)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()
