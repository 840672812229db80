"""The proxy's request-line parsing and its own answers (sans I/O)."""

from __future__ import annotations

import pytest

from tokensmith.proxy.protocol import (
    BadRequest,
    ConnectRequest,
    OtherRequest,
    parse_head,
    response,
)


@pytest.mark.parametrize(
    ("head", "parsed"),
    [
        (
            b"CONNECT www.googleapis.com:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            ConnectRequest("www.googleapis.com", 443, "HTTP/1.1"),
        ),
        (b"CONNECT [::1]:443 HTTP/1.0\r\n\r\n", ConnectRequest("[::1]", 443, "HTTP/1.0")),
        (
            b"GET http://example.com/ HTTP/1.1\r\n\r\n",
            OtherRequest("GET", "http://example.com/", "HTTP/1.1"),
        ),
        (b"GET / HTTP/1.0\r\n\r\n", OtherRequest("GET", "/", "HTTP/1.0")),
    ],
)
def test_request_lines_parse(head: bytes, parsed: ConnectRequest | OtherRequest) -> None:
    """CONNECT targets split into host and port; other requests keep their target."""
    assert parse_head(head) == parsed


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "not ASCII"),
        (b"CONNECT\r\n\r\n", "malformed request line"),
        (b"CONNECT  www.googleapis.com:443 HTTP/1.1\r\n\r\n", "malformed request line"),
        (b"CONNECT www.googleapis.com HTTP/1.1\r\n\r\n", "host:port"),
        (b"CONNECT www.googleapis.com:https HTTP/1.1\r\n\r\n", "host:port"),
        (b"CONNECT www.googleapis.com:99999 HTTP/1.1\r\n\r\n", "out of range"),
        (b"CONNECT www.googleapis.com:443 HTTP/2\r\n\r\n", "HTTP/1.0 or HTTP/1.1"),
        (b"PRI * HTTP/2.0\r\n\r\n", "HTTP/1.0 or HTTP/1.1"),
    ],
)
def test_bad_request_lines_say_what_is_wrong(head: bytes, message: str) -> None:
    """Garbage, a missing port and HTTP/2 are BadRequest with a reason a person can act on."""
    with pytest.raises(BadRequest, match=message):
        parse_head(head)


def test_absolute_targets_are_recognised() -> None:
    """``GET http://…`` is proxy-form (refused as plain-HTTP proxying); ``GET /`` is not."""
    assert OtherRequest("GET", "http://a.example/", "HTTP/1.1").absolute
    assert not OtherRequest("GET", "/", "HTTP/1.1").absolute


def test_answers_are_complete_and_close_the_connection() -> None:
    """The proxy's own answers carry their length, a text body and Connection: close."""
    answer = response(403, "tokensmith proxy: no")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert body == b"tokensmith proxy: no\n"
