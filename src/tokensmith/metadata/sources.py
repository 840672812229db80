"""Where the metadata server's tokens come from, and how long it keeps them.

``TokenSource`` is the seam: mint an access token or an ID token for the instance's attached
account. Two implementations, one per deployment shape (DESIGN.md "Deployment shapes"):

- ``InProcessTokenSource`` (``tokensmith serve --metadata-port``) calls the IAM Credentials
  service directly, as the Compute Engine service agent
  ``serviceAccount:service-PROJECT_NUMBER@compute-system.iam.gserviceaccount.com``: the same IAM
  checks and audit records as ``generateAccessToken`` / ``generateIdToken`` over HTTP. Its
  ``format=full`` ID tokens carry ``google.compute_engine`` (COMPAT.md B.2).
- ``RemoteTokenSource`` (``tokensmith metadata``, the agent) calls a remote server's IAM
  Credentials API with its own credential, which must hold TokenCreator on the attached account.
  That API cannot add ``google.compute_engine``: ``format=full`` gives ``includeEmail`` only.

``CachingTokenSource`` wraps either: one token per (scopes) and per (audience, format,
licenses), handed out until ``REFRESH_MARGIN`` seconds before it expires. Google's clients
count a token with less than 225 s left as stale (google-auth ``REFRESH_THRESHOLD``) and Node
renews ID tokens 5 minutes ahead, so the server renews at 300 s and never hands out a token a
client would consider stale. Concurrent requests for the same key mint once.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import threading
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from tokensmith.client import Client, ClientError
from tokensmith.clock import Clock
from tokensmith.core.names import Principal
from tokensmith.crypto import jwt
from tokensmith.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    TokensmithError,
    Unavailable,
)
from tokensmith.metadata.instance import Instance
from tokensmith.services.authn import CLOUD_PLATFORM, Caller
from tokensmith.services.credentials import Credentials

__all__ = [
    "MAX_CACHED",
    "REFRESH_MARGIN",
    "CachingTokenSource",
    "InProcessTokenSource",
    "MetadataError",
    "Minted",
    "RemoteTokenSource",
    "TokenSource",
]

REFRESH_MARGIN = 300.0
MAX_CACHED = 1024
ACCESS_TOKEN_LIFETIME = "3600s"


class MetadataError(Exception):
    """A failure the metadata server answers with ``status`` and a plain-text ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class Minted:
    token: str
    expires_at: float


class TokenSource(Protocol):
    def access_token(self, scopes: tuple[str, ...]) -> Minted:
        """An access token for the attached account with ``scopes``."""
        ...

    def id_token(self, audience: str, *, full: bool, licenses: bool) -> Minted:
        """An ID token for ``audience``; ``full`` adds email (and instance claims)."""
        ...

    def close(self) -> None:
        """Release what the source holds (connections); it mints no more."""
        ...


def _id_token_expiry(token: str) -> float:
    try:
        exp = jwt.unverified_claims(token).get("exp")
    except jwt.InvalidToken:
        exp = None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise MetadataError(502, "the token service returned an ID token without exp")
    return float(exp)


def _parse_expire_time(text: object) -> float:
    try:
        when = _dt.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise MetadataError(502, "the token service returned an unreadable expireTime") from None
    return when.replace(tzinfo=_dt.UTC).timestamp()


class InProcessTokenSource:
    """Mints through ``Credentials`` in this process, as the Compute Engine service agent."""

    def __init__(self, credentials: Credentials, instance: Instance, agent: Principal) -> None:
        self._credentials = credentials
        self._instance = instance
        self._caller = Caller(principal=agent, scopes=frozenset({CLOUD_PLATFORM}))
        self._name = f"projects/-/serviceAccounts/{instance.service_account}"

    def access_token(self, scopes: tuple[str, ...]) -> Minted:
        try:
            body = self._credentials.generate_access_token(
                self._caller, self._name, {"scope": list(scopes)}
            )
        except TokensmithError as exc:
            raise self._error(exc) from None
        return Minted(body["accessToken"], _parse_expire_time(body["expireTime"]))

    def id_token(self, audience: str, *, full: bool, licenses: bool) -> Minted:
        extra = (
            {"google": {"compute_engine": self._instance.compute_engine_claims(licenses=licenses)}}
            if full
            else None
        )
        try:
            body = self._credentials.generate_id_token(
                self._caller,
                self._name,
                {"audience": audience, "includeEmail": full},
                extra_claims=extra,
            )
        except TokensmithError as exc:
            raise self._error(exc) from None
        token = body["token"]
        return Minted(token, _id_token_expiry(token))

    def close(self) -> None:
        """Nothing to release: minting is a function call."""

    def _error(self, exc: TokensmithError) -> MetadataError:
        if isinstance(exc, PermissionDenied):
            return MetadataError(
                403,
                f"The metadata server cannot mint tokens for {self._instance.service_account}: "
                f"{exc.message} It mints as {self._caller.principal.member}, which needs "
                "roles/iam.serviceAccountTokenCreator on the account (tokensmith serve grants "
                "it at start to an attached account that exists then).",
            )
        if isinstance(exc, InvalidArgument):
            return MetadataError(400, exc.message)
        if isinstance(exc, ResourceExhausted):
            return MetadataError(429, exc.message)
        if isinstance(exc, Unavailable):
            return MetadataError(503, exc.message)
        raise exc


class RemoteTokenSource:
    """Mints through a remote server's IAM Credentials API with the agent's own credential."""

    def __init__(self, client: Client, service_account: str) -> None:
        self._client = client
        self._email = service_account
        self._lock = threading.Lock()  # one httpx client, shared by the worker threads

    def _call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/v1/projects/-/serviceAccounts/{self._email}:{method}"
        try:
            with self._lock:
                return self._client.post(path, body)
        except ClientError as exc:
            raise self._error(exc) from None

    def access_token(self, scopes: tuple[str, ...]) -> Minted:
        body = self._call(
            "generateAccessToken", {"scope": list(scopes), "lifetime": ACCESS_TOKEN_LIFETIME}
        )
        token = body.get("accessToken")
        if not isinstance(token, str) or not token:
            raise MetadataError(502, "the token service returned no accessToken")
        return Minted(token, _parse_expire_time(body.get("expireTime")))

    def id_token(self, audience: str, *, full: bool, licenses: bool) -> Minted:
        # The remote API cannot add google.compute_engine: format=full means includeEmail.
        body = self._call("generateIdToken", {"audience": audience, "includeEmail": full})
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise MetadataError(502, "the token service returned no token")
        return Minted(token, _id_token_expiry(token))

    def close(self) -> None:
        with self._lock:
            self._client.close()

    def _error(self, exc: ClientError) -> MetadataError:
        where = self._client.base_url
        if exc.code is None or exc.code >= 500:
            # The remote server is down or failing: transient, and clients retry 5xx.
            return MetadataError(503, f"The token service at {where} is unavailable: {exc}")
        if exc.code == 400:
            return MetadataError(400, exc.message)
        if exc.code == 429:
            return MetadataError(429, exc.message)
        return MetadataError(
            403,
            f"The metadata agent cannot mint tokens for {self._email} at {where}: {exc} "
            "Its credential needs roles/iam.serviceAccountTokenCreator on the account.",
        )


class CachingTokenSource:
    """Hands out one token per key until ``margin`` seconds before expiry (bounded LRU)."""

    def __init__(
        self,
        source: TokenSource,
        clock: Clock,
        *,
        margin: float = REFRESH_MARGIN,
        max_entries: int = MAX_CACHED,
    ) -> None:
        self._source = source
        self._clock = clock
        self._margin = margin
        self._max = max_entries
        self._lock = threading.Lock()
        self._tokens: collections.OrderedDict[Hashable, Minted] = collections.OrderedDict()
        self._minting: dict[Hashable, threading.Lock] = {}

    def access_token(self, scopes: tuple[str, ...]) -> Minted:
        key = ("access", tuple(sorted(scopes)))
        return self._get(key, lambda: self._source.access_token(scopes))

    def id_token(self, audience: str, *, full: bool, licenses: bool) -> Minted:
        licenses = licenses and full  # licenses only change a full token
        key = ("identity", audience, full, licenses)
        return self._get(key, lambda: self._source.id_token(audience, full=full, licenses=licenses))

    def close(self) -> None:
        with self._lock:
            self._tokens.clear()
        self._source.close()

    def _fresh(self, key: Hashable) -> Minted | None:
        minted = self._tokens.get(key)
        if minted is None or minted.expires_at - self._clock.now() <= self._margin:
            return None
        self._tokens.move_to_end(key)
        return minted

    def _get(self, key: Hashable, mint: Callable[[], Minted]) -> Minted:
        with self._lock:
            cached = self._fresh(key)
            if cached is not None:
                return cached
            minting = self._minting.setdefault(key, threading.Lock())
        with minting:
            with self._lock:
                cached = self._fresh(key)
            if cached is not None:
                return cached
            try:
                minted = mint()
            except BaseException:
                with self._lock:
                    if key not in self._tokens:  # keep no lock for keys that hold nothing
                        self._minting.pop(key, None)
                raise
            with self._lock:
                self._tokens[key] = minted
                self._tokens.move_to_end(key)
                while len(self._tokens) > self._max:
                    evicted, _ = self._tokens.popitem(last=False)
                    self._minting.pop(evicted, None)
            return minted
