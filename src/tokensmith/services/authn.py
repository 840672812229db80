"""Who is calling: verification of bearer credentials on API requests.

Two kinds of bearer token are accepted (anything else is one opaque UNAUTHENTICATED):

1. access tokens this server issued — RFC 9068 JWTs (``typ: at+jwt``) signed by a published
   issuer key, unexpired, not revoked, whose principal still exists and is enabled;
2. self-signed service-account JWTs (AIP-4111, https://google.aip.dev/auth/4111): signed by one
   of the account's enabled user-managed keys (``kid`` = key id), ``iss`` = ``sub`` = the
   account's email, an ``aud`` or a ``scope``, at most one hour long.

ID tokens are never accepted as access tokens: they carry no ``at+jwt`` type and their ``kid``
is not a service-account key.
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse
from typing import Any

from tokensmith.clock import Clock
from tokensmith.core.names import Principal
from tokensmith.crypto import jwt
from tokensmith.crypto.keys import cached_public_key
from tokensmith.errors import PermissionDenied, Unauthenticated
from tokensmith.services.directory import Directory
from tokensmith.services.keyring import IssuerKeyring
from tokensmith.store.base import Store

__all__ = [
    "CLOUD_PLATFORM",
    "IAM_SCOPE",
    "MISSING_CREDENTIALS",
    "Authenticator",
    "Caller",
    "require_scope",
]

log = logging.getLogger("tokensmith.authn")

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
IAM_SCOPE = "https://www.googleapis.com/auth/iam"

MISSING_CREDENTIALS = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
INVALID_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
SELF_SIGNED_MAX_LIFETIME = 3600
_VERIFIED_CACHE_SIZE = 50_000
_SERVED_APIS = frozenset({"iam", "iamcredentials", "cloudresourcemanager", "oauth2"})
LEEWAY = 30.0


@dataclasses.dataclass(frozen=True)
class Caller:
    principal: Principal
    scopes: frozenset[str]
    token_id: str = ""
    expires_at: float = 0.0
    client_id: str = ""
    self_signed: bool = False


def require_scope(caller: Caller, accepted: frozenset[str]) -> None:
    """Refuse a token that carries none of the scopes an API accepts (as Google does)."""
    if caller.scopes.isdisjoint(accepted):
        raise PermissionDenied("Request had insufficient authentication scopes.")


class Authenticator:
    def __init__(
        self,
        store: Store,
        directory: Directory,
        keyring: IssuerKeyring,
        clock: Clock,
        issuer: str,
        base_url: str = "",
    ) -> None:
        self._store = store
        self._directory = directory
        self._keyring = keyring
        self._clock = clock
        self._issuer = issuer
        self._base_url = base_url
        self._verified: dict[str, dict[str, Any]] = {}

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller named by an ``Authorization`` header value, or UNAUTHENTICATED."""
        if not authorization:
            raise Unauthenticated(MISSING_CREDENTIALS)
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(MISSING_CREDENTIALS)
        try:
            return self.verify(token.strip())
        except jwt.InvalidToken as exc:
            log.info("rejected bearer token: %s", exc.reason)
            raise Unauthenticated(INVALID_CREDENTIALS) from None

    def verify(self, token: str) -> Caller:
        """Verify a bearer token; any failure is ``jwt.InvalidToken`` with a reason for logs."""
        header = jwt.unverified_header(token)
        # Issuer keys and user-managed keys are all RSA: any other alg names the wrong key type
        # (and would reach the verifier with a key it cannot use).
        if header.get("alg") != "RS256":
            raise jwt.InvalidToken("only RS256 tokens are accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise jwt.InvalidToken("token has no kid")
        if str(header.get("typ", "")).lower() in ("at+jwt", "application/at+jwt"):
            return self._verify_access_token(token, kid)
        return self._verify_self_signed(token, kid)

    def _verify_access_token(self, token: str, kid: str) -> Caller:
        claims = self._verified.get(token)
        if claims is None:
            public = self._keyring.verification_key(kid)
            if public is None:
                raise jwt.InvalidToken("unknown or unpublished issuer key")
            claims = jwt.verify_signature(token, public.key)
            # A signature checks out once and for all; expiry, revocation and the principal's
            # state are checked on every use below.
            if len(self._verified) >= _VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = claims
        if claims.get("iss") != self._issuer:
            raise jwt.InvalidToken("wrong issuer")
        jwt.check_times(claims, self._clock.now(), leeway=LEEWAY)
        kind, email, sub = claims.get("principal_type"), claims.get("email"), claims.get("sub")
        if kind not in ("user", "serviceAccount") or not isinstance(email, str):
            raise jwt.InvalidToken("token names no principal")
        if not isinstance(sub, str):
            raise jwt.InvalidToken("token has no subject")
        principal = Principal(
            kind=kind, email=email, unique_id=sub if kind == "serviceAccount" else ""
        )
        token_id = str(claims.get("jti", ""))
        if token_id and self._store.is_token_id_revoked(token_id):
            raise jwt.InvalidToken("token revoked")
        if not self._directory.principal_active(principal):
            raise jwt.InvalidToken("principal deleted or disabled")
        scope = claims.get("scope", "")
        return Caller(
            principal=principal,
            scopes=frozenset(str(scope).split()),
            token_id=token_id,
            expires_at=float(claims["exp"]),
            client_id=str(claims.get("client_id", "")),
        )

    def _accepts_audience(self, audience: object) -> bool:
        """An API this server plays (``https://iamcredentials.googleapis.com/``, any universe
        domain), or this server's own URL (AIP-4111: the audience names the API)."""
        if not isinstance(audience, str):
            return False
        if self._base_url and audience.rstrip("/") == self._base_url.rstrip("/"):
            return True
        parsed = urllib.parse.urlsplit(audience)
        host = parsed.hostname or ""
        return (
            parsed.scheme == "https"
            and host.split(".", 1)[0] in _SERVED_APIS
            and (parsed.path in ("", "/"))
        )

    def _verify_self_signed(self, token: str, kid: str) -> Caller:
        key = self._store.get_key(kid)
        now = self._clock.now()
        if (
            key is None
            or key.key_type != "USER_MANAGED"
            or key.disabled
            or key.deleted_at is not None
            or not key.valid_after <= now < key.valid_before
        ):
            raise jwt.InvalidToken("unknown, disabled or expired service-account key")
        account = self._store.get_service_account(key.account_unique_id)
        if account is None or account.deleted_at is not None or account.disabled:
            raise jwt.InvalidToken("service account deleted or disabled")
        public = cached_public_key(key.key_id, key.public_key_pem)
        claims = jwt.verify_signature(token, public.key)
        if claims.get("iss") != account.email or claims.get("sub") != account.email:
            raise jwt.InvalidToken("iss and sub must be the service account's email")
        jwt.check_times(claims, now, leeway=LEEWAY, max_lifetime=SELF_SIGNED_MAX_LIFETIME)
        audience = claims.get("aud")
        if audience is not None and not self._accepts_audience(audience):
            # A JWT the account signed for some other service must not be replayable here.
            raise jwt.InvalidToken("self-signed JWT is for another audience")
        scope = claims.get("scope")
        if isinstance(scope, str) and scope.strip():
            scopes = frozenset(scope.split())
        elif isinstance(audience, str) and audience:
            # An audience-bound JWT grants access to that API, as cloud-platform would.
            scopes = frozenset({CLOUD_PLATFORM})
        else:
            raise jwt.InvalidToken("self-signed JWT has neither scope nor aud")
        return Caller(
            principal=Principal("serviceAccount", account.email, account.unique_id),
            scopes=scopes,
            expires_at=float(claims["exp"]),
            client_id=account.unique_id,
            self_signed=True,
        )
