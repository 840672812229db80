"""A read-through cache in front of any ``Store``, bounded in time.

The hot path (verify the caller, evaluate policies, find the target account) reads the same few
rows for every request. This decorator serves those reads from memory:

- on this node, every write clears the cache at once, and across the node's worker processes
  through a shared-memory epoch (a change is seen by the very next request);
- while every other writer is known to announce its changes — SQLite (all writers are this
  node's workers), or PostgreSQL with the LISTEN/NOTIFY listener connected — entries live up to
  ``long_ttl``: other nodes' changes arrive as notifications, sent in the writing transaction;
- otherwise (the listener is down, so a notice may be missed) entries live at most ``ttl``
  seconds: the documented propagation bound (2 s) holds as long as ``ttl`` ≤ 2 s.

Only entity lookups are cached; audit appends, key creation and every write pass straight
through. Absence is cached too (a revoked-token check is usually "not revoked").
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tokensmith.clock import Clock
from tokensmith.store.base import (
    AuditRecord,
    KeyRecord,
    OAuthClientRecord,
    OrgPolicyRecord,
    PolicyRecord,
    ProjectRecord,
    RefreshTokenRecord,
    ServiceAccountRecord,
    SigningKeyRecord,
    Store,
    UserRecord,
)

__all__ = ["DEFAULT_TTL", "CachedStore", "SharedEpoch"]

DEFAULT_TTL = 1.0
MAX_ENTRIES = 200_000

T = TypeVar("T")


class SharedEpoch:
    """A counter in shared memory that the worker processes of one server bump on every
    write, so a write made by one worker clears every worker's cache before the writer's
    response leaves (read-your-writes across workers). Create it before forking."""

    def __init__(self) -> None:
        self._value = multiprocessing.get_context("fork").Value("Q", 0, lock=True)

    def bump(self) -> None:
        with self._value.get_lock():
            self._value.value += 1

    def read(self) -> int:
        return int(self._value.value)


class CachedStore:
    def __init__(
        self,
        inner: Store,
        clock: Clock,
        ttl: float = DEFAULT_TTL,
        max_entries: int = MAX_ENTRIES,
        epoch: SharedEpoch | None = None,
        long_ttl: float | None = None,
        announced: bool = False,
    ) -> None:
        self.inner = inner
        self._clock = clock
        self.ttl = ttl
        self.long_ttl = long_ttl if long_ttl is not None else ttl
        self._announced = announced  # every other writer's changes reach us as notices
        self._max = max_entries
        self._entries: dict[tuple[str, str], tuple[float, Any]] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self._epoch = epoch
        self._seen_epoch = epoch.read() if epoch is not None else 0

    # the cache ------------------------------------------------------------------------------

    def _cached(self, kind: str, key: str, load: Callable[[], T]) -> T:
        if self._epoch is not None:
            epoch = self._epoch.read()
            if epoch != self._seen_epoch:  # a sibling worker wrote something
                with self._lock:
                    self._generation += 1
                    self._entries.clear()
                    self._seen_epoch = epoch
        now = self._clock.now()
        entry = self._entries.get((kind, key))
        ttl = self.long_ttl if self._announced else self.ttl
        if entry is not None and now - entry[0] < ttl:
            return entry[1]  # type: ignore[no-any-return]
        generation = self._generation
        value = load()
        with self._lock:
            # A write that happened while we were loading may have made ``value`` stale.
            if generation == self._generation:
                if len(self._entries) >= self._max:
                    self._entries.clear()
                self._entries[(kind, key)] = (now, value)
        return value

    def changes_announced(self, connected: bool) -> None:
        """The change listener connected (notices flow) or went away (they may be missed)."""
        self.invalidate_local()
        self._announced = connected

    def invalidate_local(self) -> None:
        """Another node changed something: forget everything this process cached."""
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
        if self._epoch is not None:
            self._epoch.bump()

    def _write(self, action: Callable[[], T]) -> T:
        try:
            return action()
        finally:
            self.invalidate()

    # projects and users ---------------------------------------------------------------------

    def get_project(self, project_id: str) -> ProjectRecord | None:
        return self._cached("project", project_id, lambda: self.inner.get_project(project_id))

    def get_project_by_number(self, number: str) -> ProjectRecord | None:
        return self._cached("project#", number, lambda: self.inner.get_project_by_number(number))

    def insert_project(self, record: ProjectRecord) -> None:
        self._write(lambda: self.inner.insert_project(record))

    def get_user(self, email: str) -> UserRecord | None:
        return self._cached("user", email, lambda: self.inner.get_user(email))

    def insert_user(self, record: UserRecord) -> None:
        self._write(lambda: self.inner.insert_user(record))

    # OAuth clients and refresh tokens (not on the hot path: straight through) --------------

    def get_oauth_client(self, client_id: str) -> OAuthClientRecord | None:
        return self.inner.get_oauth_client(client_id)

    def insert_oauth_client(self, record: OAuthClientRecord) -> None:
        self._write(lambda: self.inner.insert_oauth_client(record))

    def insert_refresh_token(self, record: RefreshTokenRecord) -> None:
        self.inner.insert_refresh_token(record)

    def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        return self.inner.get_refresh_token(token_hash)

    def revoke_refresh_token(self, token_hash: str, when: float) -> bool:
        return self._write(lambda: self.inner.revoke_refresh_token(token_hash, when))

    # service accounts -----------------------------------------------------------------------

    def insert_service_account(self, record: ServiceAccountRecord) -> None:
        self._write(lambda: self.inner.insert_service_account(record))

    def get_service_account(self, unique_id: str) -> ServiceAccountRecord | None:
        return self._cached("sa#", unique_id, lambda: self.inner.get_service_account(unique_id))

    def find_service_account(self, email: str) -> ServiceAccountRecord | None:
        return self._cached("sa", email, lambda: self.inner.find_service_account(email))

    def list_service_accounts(
        self, project_id: str, *, after: str, limit: int
    ) -> Sequence[ServiceAccountRecord]:
        return self.inner.list_service_accounts(project_id, after=after, limit=limit)

    def update_service_account(self, record: ServiceAccountRecord) -> None:
        self._write(lambda: self.inner.update_service_account(record))

    # service-account keys -------------------------------------------------------------------

    def insert_key(self, record: KeyRecord) -> None:
        self._write(lambda: self.inner.insert_key(record))

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self._cached("key", key_id, lambda: self.inner.get_key(key_id))

    def list_keys(self, account_unique_id: str) -> Sequence[KeyRecord]:
        return self._cached(
            "keys", account_unique_id, lambda: self.inner.list_keys(account_unique_id)
        )

    def update_key(self, record: KeyRecord) -> None:
        self._write(lambda: self.inner.update_key(record))

    # issuer signing keys (the keyrings hold their own copies) -------------------------------

    def insert_signing_key(self, record: SigningKeyRecord) -> None:
        self.inner.insert_signing_key(record)

    def list_signing_keys(self, purpose: str) -> Sequence[SigningKeyRecord]:
        return self.inner.list_signing_keys(purpose)

    # policies -------------------------------------------------------------------------------

    def get_policy(self, resource: str) -> PolicyRecord | None:
        return self._cached("policy", resource, lambda: self.inner.get_policy(resource))

    def put_policy(self, record: PolicyRecord, expected_etag: str | None) -> None:
        self._write(lambda: self.inner.put_policy(record, expected_etag))

    def get_org_policy(self, project_id: str, constraint: str) -> OrgPolicyRecord | None:
        return self._cached(
            "org",
            f"{project_id}\x00{constraint}",
            lambda: self.inner.get_org_policy(project_id, constraint),
        )

    def put_org_policy(self, record: OrgPolicyRecord, expected_etag: str | None) -> None:
        self._write(lambda: self.inner.put_org_policy(record, expected_etag))

    def delete_org_policy(
        self, project_id: str, constraint: str, expected_etag: str | None
    ) -> bool:
        return self._write(
            lambda: self.inner.delete_org_policy(project_id, constraint, expected_etag)
        )

    # revocation and audit -------------------------------------------------------------------

    def revoke_token_id(self, token_id: str, expires_at: float, when: float) -> None:
        self._write(lambda: self.inner.revoke_token_id(token_id, expires_at, when))

    def is_token_id_revoked(self, token_id: str) -> bool:
        return self._cached("revoked", token_id, lambda: self.inner.is_token_id_revoked(token_id))

    def prune_revoked(self, before: float) -> int:
        # Only revocations of expired tokens go: an expired token is refused anyway.
        return self.inner.prune_revoked(before)

    def append_audit(self, records: Sequence[AuditRecord]) -> None:
        self.inner.append_audit(records)

    def query_audit(
        self,
        *,
        principal: str = "",
        resource: str = "",
        account: str = "",
        method: str = "",
        outcome: str = "",
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> Sequence[AuditRecord]:
        return self.inner.query_audit(
            principal=principal,
            resource=resource,
            account=account,
            method=method,
            outcome=outcome,
            since=since,
            until=until,
            limit=limit,
        )

    def exclusive(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self.inner.exclusive(name)

    def close(self) -> None:
        self.inner.close()
