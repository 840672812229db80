"""JWT encoding and verification: allow-listed algorithms, one opaque error, time checks."""

from __future__ import annotations

import base64
import json

import pytest

from tokensmith.crypto import jwt
from tokensmith.crypto.keys import generate_rsa_key

KEY = generate_rsa_key("kid-test")
OTHER = generate_rsa_key("kid-other")


def forge(header: dict[str, object], claims: dict[str, object], signature: bytes = b"") -> str:
    def part(value: dict[str, object]) -> str:
        return jwt.b64url_encode(json.dumps(value).encode())

    return f"{part(header)}.{part(claims)}.{jwt.b64url_encode(signature)}"


def test_encode_then_verify() -> None:
    """A token we sign verifies with its public key and carries kid and typ."""
    token = jwt.encode({"sub": "x", "iat": 1, "exp": 2}, KEY, typ="at+jwt")
    assert jwt.unverified_header(token) == {"alg": "RS256", "kid": "kid-test", "typ": "at+jwt"}
    assert jwt.verify_signature(token, KEY.public.key) == {"sub": "x", "iat": 1, "exp": 2}
    with pytest.raises(jwt.InvalidToken):
        jwt.verify_signature(token, OTHER.public.key)


@pytest.mark.parametrize("alg", ["none", "HS256", "RS512", "PS256", "", None])
def test_security_regression_only_rs256_and_es256_headers(alg: object) -> None:
    """Security regression: alg none, HMAC or any other algorithm is refused before any key is
    looked at."""
    token = forge({"alg": alg, "kid": "kid-test"}, {"sub": "x"}, b"sig")
    with pytest.raises(jwt.InvalidToken, match="not allowed"):
        jwt.unverified_header(token)


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c.d", "!!!.e30.e30", base64.b64encode(b"[]").decode() + ".e30.", "x" * 20000],
)
def test_malformed_tokens_are_one_opaque_error(token: str) -> None:
    """Anything that is not a compact JWS of sensible size is InvalidToken, never a crash."""
    with pytest.raises(jwt.InvalidToken):
        jwt.verify_signature(token, KEY.public.key)


@pytest.mark.parametrize(
    ("claims", "now", "ok"),
    [
        ({"iat": 100, "exp": 200}, 150, True),
        ({"iat": 100, "exp": 200}, 259, True),  # within the 60 s leeway
        ({"iat": 100, "exp": 200}, 260, False),
        ({"iat": 100, "exp": 200}, 40, True),
        ({"iat": 100, "exp": 200}, 39, False),
        ({"iat": 100}, 150, False),
        ({"iat": "100", "exp": 200}, 150, False),
        ({"iat": True, "exp": 200}, 150, False),
    ],
)
def test_check_times(claims: dict[str, object], now: float, ok: bool) -> None:
    """exp and iat are required numbers, checked against the injected now with leeway."""
    if ok:
        jwt.check_times(claims, now)
    else:
        with pytest.raises(jwt.InvalidToken):
            jwt.check_times(claims, now)


def test_max_lifetime() -> None:
    """A token living longer than allowed is refused even while unexpired."""
    with pytest.raises(jwt.InvalidToken, match="lifetime"):
        jwt.check_times({"iat": 0, "exp": 3601}, 10, max_lifetime=3600)
