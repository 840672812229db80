"""The proxy's HTTP/1.x, sans I/O: parsing a request head and writing the proxy's own answers.

A client configured with ``HTTPS_PROXY`` opens each HTTPS connection with ``CONNECT host:443``
(RFC 9110 §9.3.6, authority-form target, RFC 9112 §3.2.3). Anything else sent to the proxy —
an absolute-form ``GET http://…`` (plain-HTTP proxying) or an origin-form ``GET /`` — is
answered by the proxy itself and never forwarded.
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "ESTABLISHED",
    "BadRequest",
    "ConnectRequest",
    "OtherRequest",
    "parse_head",
    "response",
]

ESTABLISHED = b"HTTP/1.1 200 Connection established\r\nProxy-Agent: tokensmith\r\n\r\n"

_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class BadRequest(ValueError):
    """A request head the proxy cannot read; its message says what was wrong."""


@dataclasses.dataclass(frozen=True)
class ConnectRequest:
    host: str
    port: int
    version: str


@dataclasses.dataclass(frozen=True)
class OtherRequest:
    """Any method but CONNECT; ``absolute`` when the target is a full URL (proxy form)."""

    method: str
    target: str
    version: str

    @property
    def absolute(self) -> bool:
        return "://" in self.target


def _split_authority(target: str) -> tuple[str, int]:
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise BadRequest(f"CONNECT needs a host:port target, got {target[:100]!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise BadRequest(f"CONNECT port {port_text[:10]} is out of range")
    return host, port


def parse_head(head: bytes) -> ConnectRequest | OtherRequest:
    """The request line of ``head`` (everything up to and including the blank line)."""
    line = head.split(b"\r\n", 1)[0]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("the request line is not ASCII; is this an HTTP client?") from None
    parts = text.split(" ")
    if len(parts) != 3 or not all(parts):
        raise BadRequest(f"malformed request line {text[:100]!r}; is this an HTTP client?")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(f"unsupported protocol {version[:20]!r}; HTTP/1.0 or HTTP/1.1 only")
    if method == "CONNECT":
        host, port = _split_authority(target)
        return ConnectRequest(host, port, version)
    return OtherRequest(method, target, version)


def response(status: int, message: str) -> bytes:
    """A complete ``Connection: close`` answer from the proxy, ``message`` as its text body."""
    body = (message.rstrip("\n") + "\n").encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Proxy-Agent: tokensmith\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body
