"""The store contract: every backend (SQLite, PostgreSQL) passes the same suite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import require_postgres, temporary_database
from tokensmith.errors import Unavailable
from tokensmith.store import migrate
from tokensmith.store.base import (
    AuditRecord,
    Conflict,
    OAuthClientRecord,
    OrgPolicyRecord,
    PolicyRecord,
    ProjectRecord,
    RefreshTokenRecord,
    ServiceAccountRecord,
    SigningKeyRecord,
    UserRecord,
)
from tokensmith.store.sql import SqlStore, make_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'contract.db'}")
        migrate.upgrade(engine)
        yield SqlStore(engine)
        engine.dispose()
        return
    require_postgres()
    with temporary_database() as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield SqlStore(engine)
        engine.dispose()


def project(store: SqlStore, project_id: str = "contract-project") -> ProjectRecord:
    record = ProjectRecord(
        project_id,
        "123456789012" if project_id == "contract-project" else "210987654321",
        project_id,
        1.0,
    )
    store.insert_project(record)
    return record


def account(uid: str, email: str, deleted_at: float | None = None) -> ServiceAccountRecord:
    return ServiceAccountRecord(
        unique_id=uid,
        project_id="contract-project",
        account_id=email.split("@")[0],
        email=email,
        display_name="",
        description="",
        disabled=False,
        created_at=1.0,
        deleted_at=deleted_at,
        etag="e",
    )


def test_projects_round_trip_and_unique(store: SqlStore) -> None:
    """A project reads back by id and by number; a duplicate id is a Conflict."""
    record = project(store)
    assert store.get_project("contract-project") == record
    assert store.get_project_by_number("123456789012") == record
    assert store.get_project("nope") is None
    with pytest.raises(Conflict):
        store.insert_project(record)


def test_one_live_account_per_email(store: SqlStore) -> None:
    """Two live accounts cannot share an email; a deleted one does not block a new one."""
    project(store)
    store.insert_service_account(account("100000000000000000001", "a@x.iam.gserviceaccount.com"))
    with pytest.raises(Conflict):
        store.insert_service_account(
            account("100000000000000000002", "a@x.iam.gserviceaccount.com")
        )
    first = store.get_service_account("100000000000000000001")
    assert first is not None
    store.update_service_account(ServiceAccountRecord(**{**first.__dict__, "deleted_at": 5.0}))
    assert store.find_service_account("a@x.iam.gserviceaccount.com") is None
    store.insert_service_account(account("100000000000000000003", "a@x.iam.gserviceaccount.com"))
    found = store.find_service_account("a@x.iam.gserviceaccount.com")
    assert found is not None
    assert found.unique_id == "100000000000000000003"
    with pytest.raises(Conflict):  # undeleting the old one would make two live accounts
        store.update_service_account(first)


def test_list_accounts_pages_in_id_order(store: SqlStore) -> None:
    """Listing pages by unique id and skips deleted accounts."""
    project(store)
    for i in range(5):
        store.insert_service_account(
            account(
                f"10000000000000000001{i}",
                f"acct{i}@x.iam.gserviceaccount.com",
                deleted_at=9.0 if i == 2 else None,
            )
        )
    first = store.list_service_accounts("contract-project", after="", limit=2)
    assert [a.unique_id[-1] for a in first] == ["0", "1"]
    rest = store.list_service_accounts("contract-project", after=first[-1].unique_id, limit=10)
    assert [a.unique_id[-1] for a in rest] == ["3", "4"]


def test_policy_compare_and_set(store: SqlStore) -> None:
    """put_policy inserts only over the empty etag and updates only over the current one."""
    record = PolicyRecord("projects/p", "{}", "etag-1", 1, 1.0)
    with pytest.raises(Conflict):
        store.put_policy(record, expected_etag="stale")
    store.put_policy(record, expected_etag="ACAB")
    with pytest.raises(Conflict):
        store.put_policy(PolicyRecord("projects/p", "{}", "etag-2", 2, 2.0), "etag-x")
    store.put_policy(PolicyRecord("projects/p", '{"a":1}', "etag-2", 2, 2.0), "etag-1")
    current = store.get_policy("projects/p")
    assert current is not None
    assert current.etag == "etag-2"
    assert current.revision == 2


def test_concurrent_policy_writers_exactly_one_wins(store: SqlStore) -> None:
    """Eight writers racing with the same etag: exactly one succeeds, the rest Conflict."""
    store.put_policy(PolicyRecord("projects/race", "{}", "base", 1, 1.0), "ACAB")
    results: list[str] = []
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        barrier.wait()
        try:
            store.put_policy(PolicyRecord("projects/race", "{}", f"w{n}", 2, 2.0), "base")
            results.append("won")
        except Conflict:
            results.append("lost")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["lost"] * 7 + ["won"]


def test_org_policy_compare_and_set_and_delete(store: SqlStore) -> None:
    """Org policies are compare-and-set on their etag, and deletable with one."""
    project(store)
    record = OrgPolicyRecord("contract-project", "constraints/c", "{}", "o1", 1.0)
    store.put_org_policy(record, None)
    with pytest.raises(Conflict):
        store.put_org_policy(
            OrgPolicyRecord("contract-project", "constraints/c", "{}", "o2", 2.0), "nope"
        )
    with pytest.raises(Conflict):
        store.delete_org_policy("contract-project", "constraints/c", "nope")
    assert store.delete_org_policy("contract-project", "constraints/c", "o1")
    assert store.get_org_policy("contract-project", "constraints/c") is None


def test_refresh_tokens_revoke_once(store: SqlStore) -> None:
    """A refresh token revokes once; a second revocation reports nothing revoked."""
    store.insert_user(UserRecord("u@example.com", "100000000000000000099", False, 1.0))
    store.insert_oauth_client(OAuthClientRecord("client", "hash", "", 1.0))
    store.insert_refresh_token(RefreshTokenRecord("th", "client", "u@example.com", "s", 1.0))
    assert store.revoke_refresh_token("th", 2.0)
    assert not store.revoke_refresh_token("th", 3.0)
    token = store.get_refresh_token("th")
    assert token is not None
    assert token.revoked_at == 2.0


def test_revoked_token_ids(store: SqlStore) -> None:
    """Revoking a token id is idempotent and visible."""
    assert not store.is_token_id_revoked("jti")
    store.revoke_token_id("jti", 10.0, 1.0)
    store.revoke_token_id("jti", 10.0, 2.0)
    assert store.is_token_id_revoked("jti")


def test_expired_revocations_are_pruned(store: SqlStore) -> None:
    """Pruning forgets revocations of tokens expired before the cut-off, and only those."""
    store.revoke_token_id("old", 100.0, 50.0)
    store.revoke_token_id("live", 1000.0, 50.0)
    assert store.prune_revoked(500.0) == 1
    assert not store.is_token_id_revoked("old")
    assert store.is_token_id_revoked("live")


def test_signing_keys_by_purpose(store: SqlStore) -> None:
    """Signing keys list per purpose, ordered by the start of their signing window."""
    for kid, start in (("b", 20.0), ("a", 10.0)):
        store.insert_signing_key(
            SigningKeyRecord(
                kid, "issuer", "RS256", "pub", "cert", b"\x00sealed", 1.0, start, start, 99.0, 199.0
            )
        )
    store.insert_signing_key(
        SigningKeyRecord("c", "sa:1", "RS256", "pub", "cert", b"s", 1.0, 1.0, 1.0, 2.0, 3.0)
    )
    assert [k.key_id for k in store.list_signing_keys("issuer")] == ["a", "b"]
    assert store.list_signing_keys("issuer")[0].private_key_sealed == b"\x00sealed"


def test_audit_append_and_query(store: SqlStore) -> None:
    """Audit records filter by principal (member or bare email), account, method, outcome, time."""
    store.append_audit(
        [
            AuditRecord(
                10.0,
                "generateIdToken",
                "user:a@x.com",
                "projects/p/serviceAccounts/t@p",
                "perm",
                "granted",
                {"audience": "x"},
            ),
            AuditRecord(
                20.0,
                "signBlob",
                "serviceAccount:a@x.com",
                "projects/p/serviceAccounts/u@p",
                "perm",
                "denied",
                {"reason": "no binding"},
            ),
            AuditRecord(
                30.0,
                "signBlob",
                "user:b@x.com",
                "projects/p/serviceAccounts/t@p",
                "perm",
                "granted",
                {},
            ),
        ]
    )
    assert [r.time for r in store.query_audit()] == [30.0, 20.0, 10.0]
    assert len(store.query_audit(principal="a@x.com")) == 2
    assert len(store.query_audit(principal="user:a@x.com")) == 1
    assert [r.time for r in store.query_audit(account="t@p")] == [30.0, 10.0]
    assert [r.time for r in store.query_audit(method="signBlob", outcome="denied")] == [20.0]
    assert [r.time for r in store.query_audit(since=15.0, until=30.0)] == [20.0]
    assert store.query_audit(outcome="denied")[0].detail == {"reason": "no binding"}
    assert len(store.query_audit(limit=1)) == 1
    assert store.query_audit(principal="%") == []


def test_exclusive_serializes_holders(store: SqlStore) -> None:
    """Holders of the same named lock never overlap."""
    inside = 0
    overlaps: list[int] = []
    guard = threading.Lock()

    def worker() -> None:
        nonlocal inside
        with store.exclusive("contract"):
            with guard:
                inside += 1
                overlaps.append(inside)
            threading.Event().wait(0.01)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(overlaps) == 1


def test_unreachable_database_is_unavailable() -> None:
    """A database that cannot be reached raises Unavailable (retryable), never a denial."""
    require_postgres()
    store = SqlStore(make_engine("postgresql://postgres@127.0.0.1:1/none"))
    with pytest.raises(Unavailable):
        store.get_project("p")
    with pytest.raises(Unavailable), store.exclusive("x"):
        pass


def test_schema_check_refuses_unknown_revisions(tmp_path: Path) -> None:
    """A database migrated by a newer tokensmith is refused before anything touches it."""
    from sqlalchemy import text

    engine = make_engine(f"sqlite:///{tmp_path / 'newer.db'}")
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'from-the-future'"))
    with pytest.raises(migrate.SchemaError, match="newer tokensmith"):
        migrate.check(engine)
    with pytest.raises(migrate.SchemaError, match="newer tokensmith"):
        migrate.upgrade(engine)
