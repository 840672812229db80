"""JSON Web Tokens (RFC 7519) signed with RS256, and their verification with an allow-list.

Encoding is done here with a ``Signer`` so that a local key and a remote signer look the same.
Verification delegates the JWS signature check to PyJWT with a fixed allow-list of algorithms
(RS256, ES256 — never ``none``, never HMAC, whatever the header says) and then checks the
time-based claims against an injected ``now``: PyJWT reads the wall clock itself, so its
own exp/iat checks are switched off.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jwt as pyjwt
import orjson

__all__ = [
    "ALLOWED_ALGORITHMS",
    "InvalidToken",
    "Signer",
    "b64url_decode",
    "b64url_encode",
    "check_times",
    "encode",
    "unverified_claims",
    "unverified_header",
    "verify_signature",
]

ALLOWED_ALGORITHMS = ("RS256", "ES256")


class InvalidToken(Exception):
    """One opaque error for any token that fails to parse or verify; ``reason`` is for logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Signer(Protocol):
    @property
    def key_id(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed base64url") from None


def encode(
    claims: Mapping[str, Any], signer: Signer, *, typ: str = "JWT", with_kid: bool = True
) -> str:
    header: dict[str, str] = {"alg": "RS256"}
    if with_kid:
        header["kid"] = signer.key_id
    header["typ"] = typ
    signing_input = (
        b64url_encode(orjson.dumps(header)) + "." + b64url_encode(orjson.dumps(dict(claims)))
    )
    signature = signer.sign(signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


def _segments(token: str) -> list[str]:
    if not isinstance(token, str) or len(token) > 16_384:
        raise InvalidToken("token is not a compact JWS of sensible size")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("token is not a compact JWS")
    return parts


def _json_object(segment: str) -> dict[str, Any]:
    try:
        value = orjson.loads(b64url_decode(segment))
    except orjson.JSONDecodeError:
        raise InvalidToken("segment is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken("segment is not a JSON object")
    return value


def unverified_header(token: str) -> dict[str, Any]:
    header = _json_object(_segments(token)[0])
    if header.get("alg") not in ALLOWED_ALGORITHMS:
        raise InvalidToken(f"algorithm {str(header.get('alg'))[:20]!r} is not allowed")
    return header


def unverified_claims(token: str) -> dict[str, Any]:
    return _json_object(_segments(token)[1])


def verify_signature(token: str, key: Any) -> dict[str, Any]:
    """Check the signature with ``key`` (a cryptography public key); return the claims."""
    header = unverified_header(token)
    try:
        payload = pyjwt.api_jws.PyJWS().decode_complete(token, key=key, algorithms=[header["alg"]])[
            "payload"
        ]
    except (pyjwt.PyJWTError, TypeError, ValueError) as exc:  # fail closed on any oddity
        raise InvalidToken(f"signature check failed: {type(exc).__name__}") from None
    try:
        claims = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise InvalidToken("claims are not JSON") from None
    if not isinstance(claims, dict):
        raise InvalidToken("claims are not a JSON object")
    return claims


def check_times(
    claims: Mapping[str, Any],
    now: float,
    *,
    leeway: float = 60.0,
    max_lifetime: float | None = None,
    on_error: Callable[[str], Exception] = InvalidToken,
) -> None:
    """``exp`` and ``iat`` present, numeric, ``iat - leeway <= now < exp + leeway``."""
    exp_raw, iat_raw = claims.get("exp"), claims.get("iat")
    if not _is_number(exp_raw) or not _is_number(iat_raw):
        raise on_error("exp and iat must be present and numeric")
    exp, iat = float(exp_raw), float(iat_raw)  # type: ignore[arg-type]
    if now >= exp + leeway:
        raise on_error("token expired")
    if iat - leeway > now:
        raise on_error("token used before its iat")
    if max_lifetime is not None and exp - iat > max_lifetime:
        raise on_error("token lifetime too long")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
