"""Credentials files, and the access tokens they buy from a tokensmith server.

Two kinds of file, as Google's client libraries read them:

- ``authorized_user`` (the owner's application-default-credentials file): the refresh-token
  grant, RFC 6749 §6 (https://www.rfc-editor.org/rfc/rfc6749#section-6), at its ``token_uri``;
- ``service_account`` (a key file from ``keys create``): the JWT bearer grant, RFC 7523 §2.1
  (https://www.rfc-editor.org/rfc/rfc7523#section-2.1), with an RS256 assertion whose ``kid``
  is the key's id and whose ``aud`` is Google's token URL, which tokensmith accepts as its own.

An access token is cached until shortly before it expires. The HTTP client is passed in, the way
google-auth passes ``request`` to ``refresh``, and time comes from a ``Clock``. Nothing here
imports server code: this is what a program outside the server would write.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tokensmith.client.errors import ClientError, error_from_response, unreachable
from tokensmith.clock import Clock, SystemClock

__all__ = [
    "CLOUD_PLATFORM",
    "GOOGLE_TOKEN_AUDIENCE",
    "JWT_BEARER",
    "AuthorizedUserCredentials",
    "Credentials",
    "ServiceAccountCredentials",
    "credentials_from_info",
    "load_credentials",
]

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600
# Refresh this long before expiry so that a token never expires while a request is in flight.
REFRESH_MARGIN = 120.0


class Credentials(abc.ABC):
    """Something that can obtain (and caches) an access token from a token endpoint."""

    def __init__(self, token_uri: str, clock: Clock | None = None) -> None:
        self.token_uri = token_uri
        self._clock: Clock = clock or SystemClock()
        self._token = ""
        self._refresh_at = 0.0

    @abc.abstractmethod
    def _grant(self, now: float) -> dict[str, str]:
        """The form fields of the token request."""

    def token(self, http: httpx.Client) -> str:
        """A valid access token: the cached one, or a fresh one from ``token_uri``."""
        now = self._clock.now()
        if self._token and now < self._refresh_at:
            return self._token
        try:
            response = http.post(self.token_uri, data=self._grant(now))
        except httpx.TransportError as exc:
            raise unreachable(self.token_uri, exc) from None
        except httpx.InvalidURL as exc:
            raise ClientError(f"invalid token_uri {self.token_uri!r}: {exc}") from None
        if response.status_code != 200:
            raise error_from_response(response)
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise ClientError(
                f"the token endpoint {self.token_uri} answered without an access token"
            ) from None
        if not isinstance(token, str) or not token:
            raise ClientError(f"the token endpoint {self.token_uri} answered with an empty token")
        self._token = token
        self._refresh_at = now + lifetime - min(REFRESH_MARGIN, lifetime / 2)
        return token

    def invalidate(self) -> None:
        """Forget the cached token, so that the next ``token()`` fetches a new one."""
        self._token = ""
        self._refresh_at = 0.0


class AuthorizedUserCredentials(Credentials):
    """A user's refresh token (``type: authorized_user``)."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        token_uri: str,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(token_uri, clock)
        self.client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token

    def _grant(self, now: float) -> dict[str, str]:
        return {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "refresh_token": self._refresh_token,
        }


class ServiceAccountCredentials(Credentials):
    """A service account's user-managed key (``type: service_account``)."""

    def __init__(
        self,
        email: str,
        key_id: str,
        private_key: rsa.RSAPrivateKey,
        token_uri: str,
        scopes: Sequence[str] = (CLOUD_PLATFORM,),
        clock: Clock | None = None,
    ) -> None:
        super().__init__(token_uri, clock)
        self.email = email
        self.key_id = key_id
        self._private_key = private_key
        self.scopes = tuple(scopes)

    def assertion(self, now: float) -> str:
        """The signed RFC 7523 assertion this key presents at ``now``."""
        issued = int(now)
        claims = {
            "iss": self.email,
            "aud": GOOGLE_TOKEN_AUDIENCE,
            "iat": issued,
            "exp": issued + ASSERTION_LIFETIME,
            "scope": " ".join(self.scopes),
        }
        return jwt.encode(
            claims, self._private_key, algorithm="RS256", headers={"kid": self.key_id}
        )

    def _grant(self, now: float) -> dict[str, str]:
        return {"grant_type": JWT_BEARER, "assertion": self.assertion(now)}


def _field(info: Mapping[str, Any], name: str, where: str) -> str:
    value = info.get(name)
    if not isinstance(value, str) or not value:
        raise ClientError(f"{where} has no {name!r}; is it a complete credentials file?")
    return value


def credentials_from_info(
    info: Mapping[str, Any],
    *,
    where: str = "the credentials",
    clock: Clock | None = None,
    scopes: Sequence[str] = (CLOUD_PLATFORM,),
) -> Credentials:
    """Credentials from a parsed ``authorized_user`` or ``service_account`` JSON document."""
    kind = info.get("type")
    if kind == "authorized_user":
        return AuthorizedUserCredentials(
            client_id=_field(info, "client_id", where),
            client_secret=_field(info, "client_secret", where),
            refresh_token=_field(info, "refresh_token", where),
            token_uri=_field(info, "token_uri", where),
            clock=clock,
        )
    if kind == "service_account":
        pem = _field(info, "private_key", where)
        try:
            key = serialization.load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError):
            raise ClientError(f"{where}: private_key is not a readable PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ClientError(f"{where}: private_key must be an RSA key")
        return ServiceAccountCredentials(
            email=_field(info, "client_email", where),
            key_id=_field(info, "private_key_id", where),
            private_key=key,
            token_uri=_field(info, "token_uri", where),
            scopes=scopes,
            clock=clock,
        )
    raise ClientError(f"{where} has type {kind!r}; expected 'authorized_user' or 'service_account'")


def load_credentials(
    path: str | Path,
    *,
    clock: Clock | None = None,
    scopes: Sequence[str] = (CLOUD_PLATFORM,),
) -> Credentials:
    """Credentials from a JSON file; any problem with the file is one ``ClientError``."""
    where = f"credentials file {path}"
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClientError(f"{where} does not exist") from None
    except OSError as exc:
        raise ClientError(f"cannot read {where}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise ClientError(f"{where} is not valid JSON") from None
    if not isinstance(info, dict):
        raise ClientError(f"{where} does not hold a JSON object")
    return credentials_from_info(info, where=where, clock=clock, scopes=scopes)
