"""The OAuth 2.0 token endpoint's grants, and revocation.

- ``refresh_token`` (RFC 6749 §6) for user credentials (the owner's ``authorized_user`` file);
- ``urn:ietf:params:oauth:grant-type:jwt-bearer`` (RFC 7523) for service-account key files: a
  ``scope`` claim yields an access token, a ``target_audience`` claim an ID token;
- revocation (RFC 7009) of refresh tokens and access tokens.

Errors are ``OAuthError`` with Google's codes and texts (COMPAT.md B.5), rendered by the edge
as ``{"error", "error_description"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tokensmith.clock import Clock
from tokensmith.core.names import Principal
from tokensmith.crypto import jwt
from tokensmith.crypto.keys import cached_public_key
from tokensmith.errors import OAuthError
from tokensmith.services.audit import Auditor
from tokensmith.services.authn import CLOUD_PLATFORM, Authenticator
from tokensmith.services.ids import hash_secret, new_secret, secrets_equal
from tokensmith.services.tokens import TokenMinter
from tokensmith.store.base import KeyRecord, RefreshTokenRecord, ServiceAccountRecord, Store

__all__ = [
    "DEFAULT_USER_SCOPES",
    "GOOGLE_TOKEN_AUDIENCES",
    "JWT_BEARER",
    "OAuth",
]

log = logging.getLogger("tokensmith.oauth")

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCES = frozenset(
    {
        "https://oauth2.googleapis.com/token",
        "https://www.googleapis.com/oauth2/v4/token",
        "https://www.googleapis.com/oauth2/v3/token",
        "https://accounts.google.com/o/oauth2/token",
    }
)
DEFAULT_USER_SCOPES = (
    "openid",
    "https://www.googleapis.com/auth/userinfo.email",
    CLOUD_PLATFORM,
)
ACCESS_TOKEN_LIFETIME = 3600
ASSERTION_MAX_LIFETIME = 3600
ASSERTION_SKEW = 300

_BAD_SIGNATURE = "Invalid JWT Signature."
_BAD_TIMES = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
    "timeframe. Check your iat and exp values in the JWT claim."
)


def _grant_error(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


class OAuth:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        minter: TokenMinter,
        authenticator: Authenticator,
        auditor: Auditor,
        own_audiences: frozenset[str],
    ) -> None:
        self._store = store
        self._clock = clock
        self._minter = minter
        self._authn = authenticator
        self._auditor = auditor
        self._audiences = GOOGLE_TOKEN_AUDIENCES | own_audiences

    def token(self, form: Mapping[str, str]) -> dict[str, Any]:
        grant_type = form.get("grant_type", "")
        if grant_type == "refresh_token":
            return self._refresh_grant(form)
        if grant_type == JWT_BEARER:
            return self._jwt_bearer_grant(form)
        if not grant_type:
            raise OAuthError("invalid_request", "Missing required parameter: grant_type")
        raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant_type[:100]}")

    # refresh_token ------------------------------------------------------------------------

    def issue_refresh_token(self, user_email: str, client_id: str, scopes: tuple[str, ...]) -> str:
        token = new_secret("1//")
        self._store.insert_refresh_token(
            RefreshTokenRecord(
                token_hash=hash_secret(token),
                client_id=client_id,
                user_email=user_email,
                scopes=" ".join(scopes),
                created_at=self._clock.now(),
            )
        )
        return token

    def _refresh_grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        client = self._store.get_oauth_client(client_id) if client_id else None
        if client is None:
            raise OAuthError("invalid_client", "The OAuth client was not found.", http_status=401)
        if not secrets_equal(client_secret, client.secret_hash):
            raise OAuthError("invalid_client", "Unauthorized", http_status=401)
        refresh = form.get("refresh_token", "")
        if not refresh:
            raise OAuthError("invalid_request", "Missing required parameter: refresh_token")
        record = self._store.get_refresh_token(hash_secret(refresh))
        if record is None or record.revoked_at is not None or record.client_id != client_id:
            raise _grant_error("Token has been expired or revoked.")
        user = self._store.get_user(record.user_email)
        if user is None or user.disabled:
            raise _grant_error("Account has been deleted or disabled.")
        granted = tuple(record.scopes.split())
        requested = tuple(form.get("scope", "").split()) or granted
        if not set(requested) <= set(granted):
            raise OAuthError("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        principal = Principal("user", user.email, user.unique_id)
        access = self._minter.access_token(
            principal, requested, lifetime=ACCESS_TOKEN_LIFETIME, client_id=client_id
        )
        id_token = self._minter.id_token(
            audience=client_id,
            subject=user.unique_id,
            email=user.email,
            include_email=True,
            authorized_party=client_id,
        )
        self._audit_grant(principal, "refresh_token", requested, "")
        return {
            "access_token": access.token,
            "expires_in": ACCESS_TOKEN_LIFETIME - 1,
            "scope": " ".join(requested),
            "token_type": "Bearer",
            "id_token": id_token,
        }

    # jwt-bearer ---------------------------------------------------------------------------

    def _jwt_bearer_grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        assertion = form.get("assertion", "")
        if not assertion:
            raise OAuthError("invalid_request", "Missing required parameter: assertion")
        account, claims = self._verify_assertion(assertion)
        principal = Principal("serviceAccount", account.email, account.unique_id)
        target_audience = claims.get("target_audience")
        if isinstance(target_audience, str) and target_audience:
            token = self._minter.id_token(
                audience=target_audience,
                subject=account.unique_id,
                email=account.email,
                include_email=True,
                authorized_party=account.email,
            )
            self._audit_grant(principal, "jwt-bearer", (), target_audience)
            return {"id_token": token}
        scope = claims.get("scope")
        scopes = tuple(scope.split()) if isinstance(scope, str) else ()
        if not scopes:
            raise OAuthError("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        access = self._minter.access_token(
            principal, scopes, lifetime=ACCESS_TOKEN_LIFETIME, client_id=account.unique_id
        )
        self._audit_grant(principal, "jwt-bearer", scopes, "")
        return {
            "access_token": access.token,
            "expires_in": ACCESS_TOKEN_LIFETIME - 1,
            "token_type": "Bearer",
        }

    def _verify_assertion(self, assertion: str) -> tuple[ServiceAccountRecord, dict[str, Any]]:
        try:
            header = jwt.unverified_header(assertion)
            unverified = jwt.unverified_claims(assertion)
        except jwt.InvalidToken:
            raise _grant_error(_BAD_SIGNATURE) from None
        if header.get("alg") != "RS256":
            raise _grant_error(_BAD_SIGNATURE)
        issuer = unverified.get("iss")
        account = (
            self._store.find_service_account(issuer.lower()) if isinstance(issuer, str) else None
        )
        if account is None:
            raise _grant_error("Invalid grant: account not found")
        if account.disabled:
            raise _grant_error("Robot is disabled.")
        claims = self._verify_with_account_keys(assertion, account, header.get("kid"))
        if not self._audience_ok(claims.get("aud")):
            raise _grant_error("Invalid JWT: Failed audience check.")
        now = self._clock.now()
        try:
            jwt.check_times(claims, now, leeway=ASSERTION_SKEW, max_lifetime=ASSERTION_MAX_LIFETIME)
        except jwt.InvalidToken:
            raise _grant_error(_BAD_TIMES) from None
        subject = claims.get("sub")
        if subject not in (None, "", account.email):
            # Domain-wide delegation has no meaning without a Workspace domain.
            raise OAuthError(
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client "
                "not authorized for any of the scopes requested.",
            )
        return account, claims

    def _audience_ok(self, aud: object) -> bool:
        """RFC 7519 §4.1.3: ``aud`` is one string or a list of them; one must be a token URL."""
        values = aud if isinstance(aud, list) else [aud]
        return any(isinstance(v, str) and v in self._audiences for v in values)

    def _verify_with_account_keys(
        self, assertion: str, account: ServiceAccountRecord, kid: object
    ) -> dict[str, Any]:
        now = self._clock.now()
        keys = [
            k
            for k in self._store.list_keys(account.unique_id)
            if _usable(k, now) and (not kid or k.key_id == kid)
        ]
        for key in keys:
            public = cached_public_key(key.key_id, key.public_key_pem)
            try:
                return jwt.verify_signature(assertion, public.key)
            except jwt.InvalidToken:
                continue
        raise _grant_error(_BAD_SIGNATURE)

    def _audit_grant(
        self, principal: Principal, grant: str, scopes: tuple[str, ...], audience: str
    ) -> None:
        detail: dict[str, Any] = {"grant": grant}
        if scopes:
            detail["scopes"] = list(scopes)
        if audience:
            detail["audience"] = audience
        self._auditor.record(
            method="Token",
            principal=principal.member,
            resource=principal.member,
            permission="",
            outcome="granted",
            detail=detail,
        )

    # revocation ---------------------------------------------------------------------------

    def revoke(self, token: str) -> None:
        """Revoke a refresh token or an access token; unknown tokens are ``invalid_token``."""
        if not token:
            raise OAuthError("invalid_request", "Missing required parameter: token")
        now = self._clock.now()
        if self._store.revoke_refresh_token(hash_secret(token), now):
            return
        try:
            caller = self._authn.verify(token)
        except jwt.InvalidToken:
            raise OAuthError("invalid_token", "Token expired or revoked") from None
        if not caller.token_id:
            raise OAuthError("invalid_token", "Token expired or revoked")
        self._store.revoke_token_id(caller.token_id, caller.expires_at, now)


def _usable(key: KeyRecord, now: float) -> bool:
    return (
        key.key_type == "USER_MANAGED"
        and not key.disabled
        and key.deleted_at is None
        and key.valid_after - ASSERTION_SKEW <= now < key.valid_before
    )
