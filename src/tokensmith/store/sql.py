"""The SQL store: SQLAlchemy Core over SQLite (default) or PostgreSQL, one code path for both.

Each method runs in its own short transaction (``engine.begin()``). SQLite runs in WAL mode
with foreign keys on and a busy timeout, so readers never block the writer. Database errors
are translated at this edge: a uniqueness or etag race is ``Conflict``; a database that cannot
be reached is ``Unavailable`` (retryable), so a client never mistakes an outage for a denial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine, create_engine, delete, event, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.pool import StaticPool

from tokensmith.errors import Unavailable
from tokensmith.store import schema as t
from tokensmith.store.base import (
    AuditRecord,
    Conflict,
    KeyRecord,
    OAuthClientRecord,
    OrgPolicyRecord,
    PolicyRecord,
    ProjectRecord,
    RefreshTokenRecord,
    ServiceAccountRecord,
    SigningKeyRecord,
    UserRecord,
)

__all__ = ["CHANGES_CHANNEL", "SqlStore", "make_engine"]

log = logging.getLogger("tokensmith.store")

CHANGES_CHANNEL = "tokensmith_changes"

R = TypeVar("R")


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings tokensmith relies on for that backend."""
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 10},
            poolclass=StaticPool if memory else None,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return create_engine(
        url,
        # No pre-ping (a round trip per checkout): a connection the database dropped fails its
        # statement, the request gets a retryable 503, and the pool replaces every connection.
        pool_pre_ping=False,
        pool_size=10,
        max_overflow=10,
        pool_timeout=5,  # never queue a request for long: fail fast with UNAVAILABLE
        connect_args={
            "connect_timeout": 3,
            # A statement that hangs (a lock, a stalled server) fails instead of hanging.
            "options": "-c statement_timeout=10000 -c lock_timeout=5000",
        },
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _record(cls: type[R], row: Any) -> R:
    return cls(**dict(row._mapping))


class SqlStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local_locks: dict[str, threading.Lock] = {}
        self._local_locks_guard = threading.Lock()

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a named lock across every node sharing this database (PostgreSQL advisory
        lock) or, on SQLite, across this process's threads and its sibling workers (flock)."""
        if self._engine.dialect.name == "postgresql":
            try:
                conn = self._engine.connect()
            except (OperationalError, DBAPIError) as exc:
                raise Unavailable(
                    "The service is currently unavailable: the database could not be reached."
                ) from exc
            try:
                conn.execute(text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": name})
                conn.commit()
                yield
            finally:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": name})
                    conn.commit()
                finally:
                    conn.close()
            return
        with self._local_locks_guard:
            lock = self._local_locks.setdefault(name, threading.Lock())
        with lock, self._file_lock(name):
            yield

    @contextlib.contextmanager
    def _file_lock(self, name: str) -> Iterator[None]:
        """Across the worker processes sharing one SQLite file: an flock beside the database."""
        database = self._engine.url.database
        if not database or database == ":memory:":
            yield
            return
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        path = f"{database}.lock-{digest}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextlib.contextmanager
    def _tx(self, *, changes: bool = False) -> Iterator[Connection]:
        try:
            with self._engine.begin() as conn:
                yield conn
                if changes:
                    self._announce_change(conn)
        except IntegrityError as exc:
            raise Conflict(str(exc.orig)) from None
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                raise Unavailable(
                    "The service is currently unavailable: the database could not be reached."
                ) from exc
            raise

    def _one(self, cls: type[R], stmt: Any) -> R | None:
        with self._tx() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _record(cls, row)

    def _insert(self, table: Any, record: Any) -> None:
        with self._tx(changes=True) as conn:
            conn.execute(insert(table).values(**dataclasses.asdict(record)))

    def _announce_change(self, conn: Connection) -> None:
        """Tell the other nodes' caches (``listen_for_changes``) in the writing transaction,
        so the notice goes out exactly when the change commits."""
        if self._engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANGES_CHANNEL})

    def listen_for_changes(
        self,
        on_change: Callable[[], None],
        on_state: Callable[[bool], None],
        stop: threading.Event,
    ) -> None:
        """Until ``stop``: call ``on_change`` for every change another node commits
        (PostgreSQL LISTEN/NOTIFY), and ``on_state(connected)`` when the listening connection
        comes up or goes away (while it is away, changes may be missed)."""
        import psycopg

        url = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    on_state(True)
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            on_change()
            except psycopg.Error as exc:
                log.warning("change listener lost its database connection: %s", exc)
            on_state(False)
            stop.wait(1.0)

    # projects and users -------------------------------------------------------------------

    def get_project(self, project_id: str) -> ProjectRecord | None:
        return self._one(
            ProjectRecord, select(t.projects).where(t.projects.c.project_id == project_id)
        )

    def get_project_by_number(self, number: str) -> ProjectRecord | None:
        return self._one(
            ProjectRecord, select(t.projects).where(t.projects.c.project_number == number)
        )

    def insert_project(self, record: ProjectRecord) -> None:
        self._insert(t.projects, record)

    def get_user(self, email: str) -> UserRecord | None:
        return self._one(UserRecord, select(t.users).where(t.users.c.email == email))

    def insert_user(self, record: UserRecord) -> None:
        self._insert(t.users, record)

    # OAuth clients and refresh tokens ----------------------------------------------------

    def get_oauth_client(self, client_id: str) -> OAuthClientRecord | None:
        return self._one(
            OAuthClientRecord,
            select(t.oauth_clients).where(t.oauth_clients.c.client_id == client_id),
        )

    def insert_oauth_client(self, record: OAuthClientRecord) -> None:
        self._insert(t.oauth_clients, record)

    def insert_refresh_token(self, record: RefreshTokenRecord) -> None:
        self._insert(t.refresh_tokens, record)

    def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        return self._one(
            RefreshTokenRecord,
            select(t.refresh_tokens).where(t.refresh_tokens.c.token_hash == token_hash),
        )

    def revoke_refresh_token(self, token_hash: str, when: float) -> bool:
        c = t.refresh_tokens.c
        with self._tx(changes=True) as conn:
            result = conn.execute(
                update(t.refresh_tokens)
                .where(c.token_hash == token_hash, c.revoked_at.is_(None))
                .values(revoked_at=when)
            )
        return result.rowcount > 0

    # service accounts ---------------------------------------------------------------------

    def insert_service_account(self, record: ServiceAccountRecord) -> None:
        self._insert(t.service_accounts, record)

    def get_service_account(self, unique_id: str) -> ServiceAccountRecord | None:
        return self._one(
            ServiceAccountRecord,
            select(t.service_accounts).where(t.service_accounts.c.unique_id == unique_id),
        )

    def find_service_account(self, email: str) -> ServiceAccountRecord | None:
        c = t.service_accounts.c
        return self._one(
            ServiceAccountRecord,
            select(t.service_accounts).where(c.email == email, c.deleted_at.is_(None)),
        )

    def list_service_accounts(
        self, project_id: str, *, after: str, limit: int
    ) -> Sequence[ServiceAccountRecord]:
        c = t.service_accounts.c
        stmt = (
            select(t.service_accounts)
            .where(c.project_id == project_id, c.deleted_at.is_(None), c.unique_id > after)
            .order_by(c.unique_id)
            .limit(limit)
        )
        with self._tx() as conn:
            return [_record(ServiceAccountRecord, r) for r in conn.execute(stmt)]

    def update_service_account(self, record: ServiceAccountRecord) -> None:
        values = dataclasses.asdict(record)
        unique_id = values.pop("unique_id")
        with self._tx(changes=True) as conn:
            conn.execute(
                update(t.service_accounts)
                .where(t.service_accounts.c.unique_id == unique_id)
                .values(**values)
            )

    # service-account keys -----------------------------------------------------------------

    def insert_key(self, record: KeyRecord) -> None:
        self._insert(t.service_account_keys, record)

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self._one(
            KeyRecord,
            select(t.service_account_keys).where(t.service_account_keys.c.key_id == key_id),
        )

    def list_keys(self, account_unique_id: str) -> Sequence[KeyRecord]:
        c = t.service_account_keys.c
        stmt = (
            select(t.service_account_keys)
            .where(c.account_unique_id == account_unique_id, c.deleted_at.is_(None))
            .order_by(c.created_at, c.key_id)
        )
        with self._tx() as conn:
            return [_record(KeyRecord, r) for r in conn.execute(stmt)]

    def update_key(self, record: KeyRecord) -> None:
        values = dataclasses.asdict(record)
        key_id = values.pop("key_id")
        with self._tx(changes=True) as conn:
            conn.execute(
                update(t.service_account_keys)
                .where(t.service_account_keys.c.key_id == key_id)
                .values(**values)
            )

    # issuer signing keys ------------------------------------------------------------------

    def insert_signing_key(self, record: SigningKeyRecord) -> None:
        self._insert(t.signing_keys, record)

    def list_signing_keys(self, purpose: str) -> Sequence[SigningKeyRecord]:
        c = t.signing_keys.c
        stmt = select(t.signing_keys).where(c.purpose == purpose).order_by(c.sign_from)
        with self._tx() as conn:
            return [_record(SigningKeyRecord, r) for r in conn.execute(stmt)]

    # IAM and org policies -----------------------------------------------------------------

    def get_policy(self, resource: str) -> PolicyRecord | None:
        return self._one(
            PolicyRecord, select(t.iam_policies).where(t.iam_policies.c.resource == resource)
        )

    def put_policy(self, record: PolicyRecord, expected_etag: str | None) -> None:
        c = t.iam_policies.c
        values = dataclasses.asdict(record)
        with self._tx(changes=True) as conn:
            current = conn.execute(select(c.etag).where(c.resource == record.resource)).first()
            if current is None:
                # An absent policy has the well-known empty etag; inserting races on the PK.
                if expected_etag not in (None, "", "ACAB"):
                    raise Conflict("etag mismatch")
                conn.execute(insert(t.iam_policies).values(**values))
                return
            stmt = update(t.iam_policies).where(c.resource == record.resource)
            if expected_etag is not None:
                stmt = stmt.where(c.etag == expected_etag)
            if conn.execute(stmt.values(**values)).rowcount != 1:
                raise Conflict("etag mismatch")

    def get_org_policy(self, project_id: str, constraint: str) -> OrgPolicyRecord | None:
        c = t.org_policies.c
        return self._one(
            OrgPolicyRecord,
            select(t.org_policies).where(
                c.project_id == project_id, c.constraint_name == constraint
            ),
        )

    def put_org_policy(self, record: OrgPolicyRecord, expected_etag: str | None) -> None:
        c = t.org_policies.c
        values = dataclasses.asdict(record)
        where = (c.project_id == record.project_id, c.constraint_name == record.constraint_name)
        with self._tx(changes=True) as conn:
            current = conn.execute(select(c.etag).where(*where)).first()
            if current is None:
                if expected_etag:
                    raise Conflict("etag mismatch")
                conn.execute(insert(t.org_policies).values(**values))
                return
            stmt = update(t.org_policies).where(*where)
            if expected_etag:
                stmt = stmt.where(c.etag == expected_etag)
            if conn.execute(stmt.values(**values)).rowcount != 1:
                raise Conflict("etag mismatch")

    def delete_org_policy(
        self, project_id: str, constraint: str, expected_etag: str | None
    ) -> bool:
        c = t.org_policies.c
        stmt = delete(t.org_policies).where(
            c.project_id == project_id, c.constraint_name == constraint
        )
        with self._tx(changes=True) as conn:
            if expected_etag:
                exists = conn.execute(
                    select(c.etag).where(
                        c.project_id == project_id, c.constraint_name == constraint
                    )
                ).first()
                if exists is not None and exists.etag != expected_etag:
                    raise Conflict("etag mismatch")
            return conn.execute(stmt).rowcount > 0

    # revocation and audit -----------------------------------------------------------------

    def revoke_token_id(self, token_id: str, expires_at: float, when: float) -> None:
        with self._tx(changes=True) as conn:
            exists = conn.execute(
                select(t.revoked_tokens.c.token_id).where(t.revoked_tokens.c.token_id == token_id)
            ).first()
            if exists is None:
                conn.execute(
                    insert(t.revoked_tokens).values(
                        token_id=token_id, expires_at=expires_at, revoked_at=when
                    )
                )

    def is_token_id_revoked(self, token_id: str) -> bool:
        with self._tx() as conn:
            row = conn.execute(
                select(t.revoked_tokens.c.token_id).where(t.revoked_tokens.c.token_id == token_id)
            ).first()
        return row is not None

    def prune_revoked(self, before: float) -> int:
        with self._tx() as conn:
            result = conn.execute(
                delete(t.revoked_tokens).where(t.revoked_tokens.c.expires_at < before)
            )
        return int(result.rowcount)

    def append_audit(self, records: Sequence[AuditRecord]) -> None:
        if not records:
            return
        rows = [
            {
                "time": r.time,
                "method": r.method,
                "principal": r.principal,
                "resource": r.resource,
                "permission": r.permission,
                "outcome": r.outcome,
                "detail_json": orjson.dumps(r.detail).decode(),
            }
            for r in records
        ]
        with self._tx() as conn:
            conn.execute(insert(t.audit_log), rows)

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
        c = t.audit_log.c
        stmt = select(t.audit_log)
        if principal:
            if ":" in principal:
                stmt = stmt.where(c.principal == principal)
            else:
                stmt = stmt.where(c.principal.endswith(":" + principal, autoescape=True))
        if resource:
            stmt = stmt.where(c.resource == resource)
        if account:
            stmt = stmt.where(c.resource.endswith("/serviceAccounts/" + account, autoescape=True))
        if method:
            stmt = stmt.where(c.method == method)
        if outcome:
            stmt = stmt.where(c.outcome == outcome)
        if since is not None:
            stmt = stmt.where(c.time >= since)
        if until is not None:
            stmt = stmt.where(c.time < until)
        stmt = stmt.order_by(c.id.desc()).limit(limit)
        with self._tx() as conn:
            rows = list(conn.execute(stmt))
        return [
            AuditRecord(
                id=r.id,
                time=r.time,
                method=r.method,
                principal=r.principal,
                resource=r.resource,
                permission=r.permission,
                outcome=r.outcome,
                detail=orjson.loads(r.detail_json),
            )
            for r in rows
        ]

    def close(self) -> None:
        self._engine.dispose()
