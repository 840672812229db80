"""Query strings as the metadata server's clients write them; pure functions.

Python's google-auth URL-encodes its parameters; Node's gcp-metadata and gcloud concatenate the
``audience`` of an ``identity`` request into the URL as it is (COMPAT.md §1b, §1c, §7.4), so
``audience=https://x.example/p?a=b&c=d`` must read as one audience. ``identity_query`` therefore
takes everything after ``audience=`` up to a following ``&format=`` or ``&licenses=`` (the
other identity parameters) as the audience, then percent-decodes it. An audience that itself
contains ``&format=`` or ``&licenses=`` is ambiguous and is cut there; one with any other ``&``
arrives whole. ``+`` stays ``+`` (clients that concatenate do not encode it), so an audience
with a space must be sent percent-encoded (``%20``), as Python does not: it sends ``+``.
"""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["QueryError", "flag", "identity_query", "parse_query", "scopes_param"]

_AUDIENCE = re.compile(r"(?:^|&)audience=")
_AFTER_AUDIENCE = ("&format=", "&licenses=")
_TRUE = {"true", "1"}
_FALSE = {"false", "0", ""}


class QueryError(ValueError):
    """A parameter the server cannot use; the message is the 400 body."""


def parse_query(raw: str) -> dict[str, str]:
    """Parameters by name (the first occurrence wins), percent-decoded."""
    params: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(raw, keep_blank_values=True):
        params.setdefault(name, value)
    return params


def identity_query(raw: str) -> tuple[str | None, dict[str, str]]:
    """``(audience, other parameters)`` of an ``identity`` request, read leniently."""
    match = _AUDIENCE.search(raw)
    if match is None:
        return None, parse_query(raw)
    start = match.end()
    ends = [i for i in (raw.find(marker, start) for marker in _AFTER_AUDIENCE) if i != -1]
    end = min(ends) if ends else len(raw)
    audience = urllib.parse.unquote(raw[start:end])
    rest = raw[: match.start()] + raw[end:]
    return audience, parse_query(rest)


def flag(params: dict[str, str], name: str) -> bool:
    """A boolean parameter: ``true``/``false`` in any case, or ``1``/``0``; absent is false."""
    value = params.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise QueryError(f"invalid value for {name}: {params[name][:60]!r} (expected true or false)")


def scopes_param(params: dict[str, str]) -> tuple[str, ...]:
    """``scopes=a,b`` (commas or spaces) as a tuple without repeats; empty if absent."""
    raw = params.get("scopes", "")
    return tuple(dict.fromkeys(s for s in re.split(r"[,\s]+", raw) if s))
