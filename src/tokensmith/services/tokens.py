"""Minting of the tokens this server issues: RFC 9068 access tokens and Google-shaped ID tokens.

Both are signed by the issuer keyring's current key, with the ``kid`` in the header. A token's
lifetime never outlives the published life of the key that signed it (the keyring keeps keys
published for the longest lifetime plus skew).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from tokensmith.clock import Clock
from tokensmith.core.claims import ACCESS_TOKEN_TYP, access_token_claims, id_token_claims
from tokensmith.core.names import Principal
from tokensmith.crypto import jwt
from tokensmith.services.keyring import IssuerKeyring

__all__ = ["AccessToken", "TokenMinter"]


@dataclasses.dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: int
    scopes: tuple[str, ...]
    token_id: str


class TokenMinter:
    def __init__(self, keyring: IssuerKeyring, clock: Clock, issuer: str) -> None:
        self._keyring = keyring
        self._clock = clock
        self.issuer = issuer

    def access_token(
        self,
        principal: Principal,
        scopes: Sequence[str],
        *,
        lifetime: int = 3600,
        client_id: str = "",
        delegation: Sequence[str] = (),
    ) -> AccessToken:
        now = int(self._clock.now())
        token_id = secrets.token_urlsafe(18)
        claims = access_token_claims(
            issuer=self.issuer,
            principal_type=principal.kind,
            email=principal.email,
            subject=principal.unique_id or principal.email,
            scopes=scopes,
            client_id=client_id or principal.unique_id or principal.email,
            issued_at=now,
            lifetime=lifetime,
            token_id=token_id,
            delegation=delegation,
        )
        token = jwt.encode(claims, self._keyring.signer().private, typ=ACCESS_TOKEN_TYP)
        return AccessToken(token, now + lifetime, tuple(scopes), token_id)

    def id_token(
        self,
        *,
        audience: str,
        subject: str,
        email: str,
        include_email: bool,
        authorized_party: str,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        claims = id_token_claims(
            issuer=self.issuer,
            audience=audience,
            subject=subject,
            email=email,
            include_email=include_email,
            authorized_party=authorized_party,
            issued_at=int(self._clock.now()),
            extra=extra,
        )
        return jwt.encode(claims, self._keyring.signer().private)
