"""``/tokeninfo``: what Google's tokeninfo endpoint says about an access token or an ID token.

https://developers.google.com/identity/sign-in/web/backend-auth#calling-the-tokeninfo-endpoint
Values are strings, as Google serves them (``"exp": "1700000000"``, ``"email_verified":
"true"``); Node's ``OAuth2Client.getTokenInfo`` reads ``expires_in`` and ``scope``. A token that
does not verify — expired, revoked, foreign, malformed — is one opaque ``invalid_token``.
"""

from __future__ import annotations

from typing import Any

from tokensmith.clock import Clock
from tokensmith.crypto import jwt
from tokensmith.errors import OAuthError
from tokensmith.services.authn import Authenticator
from tokensmith.services.keyring import Keyring

__all__ = ["TokenInfo"]


def _invalid() -> OAuthError:
    return OAuthError("invalid_token", "Invalid Value")


def _as_string(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value))
    return value


class TokenInfo:
    def __init__(self, authn: Authenticator, keyring: Keyring, clock: Clock, issuer: str) -> None:
        self._authn = authn
        self._keyring = keyring
        self._clock = clock
        self._issuer = issuer

    def access_token(self, token: str) -> dict[str, Any]:
        try:
            caller = self._authn.verify(token)
        except jwt.InvalidToken:
            raise _invalid() from None
        now = self._clock.now()
        principal = caller.principal
        out: dict[str, Any] = {
            "azp": caller.client_id,
            "aud": caller.client_id,
            "sub": principal.unique_id or principal.email,
            "scope": " ".join(sorted(caller.scopes)),
            "exp": str(int(caller.expires_at)),
            "expires_in": str(max(0, int(caller.expires_at - now))),
            "email": principal.email,
            "email_verified": "true",
            "access_type": "online",
        }
        return out

    def id_token(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.unverified_header(token)
            public = self._keyring.verification_key(str(header.get("kid", "")))
            if public is None:
                raise jwt.InvalidToken("unknown key")
            claims = jwt.verify_signature(token, public.key)
            jwt.check_times(claims, self._clock.now(), leeway=0)
        except jwt.InvalidToken:
            raise _invalid() from None
        if claims.get("iss") != self._issuer or str(header.get("typ", "")).lower() == "at+jwt":
            raise _invalid()
        out = {k: _as_string(v) for k, v in claims.items() if not isinstance(v, (dict, list))}
        out.update({"alg": header["alg"], "kid": header["kid"], "typ": "JWT"})
        return out
