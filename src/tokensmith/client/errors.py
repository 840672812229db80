"""``ClientError``: every failure the client reports, as one line a person can act on.

The server speaks two error dialects (https://cloud.google.com/apis/design/errors on the REST
APIs, RFC 6749 §5.2 on ``/token``); both become a ``ClientError`` whose ``str`` reads
``STATUS (HTTP code): message``. Failures that never reached the server (a refused connection,
an unreadable credentials file) carry no status and read as their message alone.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import httpx

__all__ = ["ClientError", "error_from_response", "unreachable"]


class ClientError(Exception):
    """A failed call: ``status`` is Google's code name (or the OAuth ``error``), if any."""

    def __init__(self, message: str, *, status: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        if not self.status:
            return self.message
        where = f" ({self.code})" if self.code is not None else ""
        return f"{self.status}{where}: {self.message}"


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def error_from_response(response: httpx.Response) -> ClientError:
    """The ``ClientError`` for a non-2xx response, in whichever dialect the server used."""
    code = response.status_code
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # Google's {"error": {code, message, status}}
            status = str(error.get("status") or f"HTTP_{code}")
            return ClientError(_one_line(str(error.get("message", ""))), status=status, code=code)
        if isinstance(error, str):  # RFC 6749 {"error", "error_description"}
            message = str(body.get("error_description") or error)
            return ClientError(_one_line(message), status=error, code=code)
    text = _one_line(response.text) or response.reason_phrase or "no response body"
    return ClientError(text, status=f"HTTP_{code}", code=code)


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: where a request was going, without its path."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def unreachable(url: str, exc: httpx.TransportError) -> ClientError:
    """The error for a request that never got an answer (refused, timed out, bad address)."""
    reason = _one_line(str(exc)) or type(exc).__name__
    return ClientError(f"cannot reach tokensmith at {_origin(url)}: {reason}")
