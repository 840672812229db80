"""Claims of the tokens tokensmith issues, as plain functions of their inputs.

- Access tokens follow RFC 9068 (JWT profile for OAuth 2.0 access tokens, header
  ``typ: at+jwt``): ``iss``, ``sub``, ``aud``, ``client_id``, ``scope``, ``iat``, ``exp``, ``jti``,
  plus ``email`` and ``principal_type`` so any node can name the caller without a lookup.
  https://www.rfc-editor.org/rfc/rfc9068
- ID tokens follow Google's shape (COMPAT.md B.2): ``iss``, ``aud``, ``azp``, ``sub`` (the
  account's numeric unique id), ``iat``, ``exp`` (one hour), ``email``/``email_verified`` only
  when asked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ACCESS_TOKEN_AUDIENCE",
    "ACCESS_TOKEN_TYP",
    "ID_TOKEN_LIFETIME",
    "access_token_claims",
    "id_token_claims",
]

ACCESS_TOKEN_TYP = "at+jwt"
ACCESS_TOKEN_AUDIENCE = "https://www.googleapis.com/"
ID_TOKEN_LIFETIME = 3600


def access_token_claims(
    *,
    issuer: str,
    principal_type: str,
    email: str,
    subject: str,
    scopes: Sequence[str],
    client_id: str,
    issued_at: int,
    lifetime: int,
    token_id: str,
    delegation: Sequence[str] = (),
) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": ACCESS_TOKEN_AUDIENCE,
        "client_id": client_id,
        "scope": " ".join(scopes),
        "iat": issued_at,
        "exp": issued_at + lifetime,
        "jti": token_id,
        "email": email,
        "principal_type": principal_type,
    }
    if delegation:
        # RFC 8693 §4.1: the actor chain, innermost actor being the original caller.
        actor: dict[str, Any] | None = None
        for member in delegation:
            actor = {"sub": member} if actor is None else {"sub": member, "act": actor}
        claims["act"] = actor
    return claims


def id_token_claims(
    *,
    issuer: str,
    audience: str,
    subject: str,
    email: str,
    include_email: bool,
    authorized_party: str,
    issued_at: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "aud": audience,
        "azp": authorized_party,
        "exp": issued_at + ID_TOKEN_LIFETIME,
        "iat": issued_at,
        "iss": issuer,
        "sub": subject,
    }
    if include_email:
        claims["email"] = email
        claims["email_verified"] = True
    if extra:
        claims.update(extra)
    return claims
