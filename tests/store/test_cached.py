"""The read cache: never older than its TTL, cleared by this node's writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokensmith.clock import FixedClock
from tokensmith.store import migrate
from tokensmith.store.base import PolicyRecord, ProjectRecord
from tokensmith.store.cached import CachedStore
from tokensmith.store.sql import SqlStore, make_engine


@pytest.fixture
def stores(tmp_path: Path) -> tuple[SqlStore, CachedStore, FixedClock]:
    engine = make_engine(f"sqlite:///{tmp_path / 'cache.db'}")
    migrate.upgrade(engine)
    clock = FixedClock(1000.0)
    sql = SqlStore(engine)
    return sql, CachedStore(sql, clock, ttl=1.0), clock


def test_another_nodes_write_is_seen_within_the_ttl(
    stores: tuple[SqlStore, CachedStore, FixedClock],
) -> None:
    """A write made behind the cache (another node) is invisible for at most the TTL."""
    sql, cached, clock = stores
    assert cached.get_policy("projects/p") is None
    sql.put_policy(PolicyRecord("projects/p", "{}", "e1", 1, 1.0), "ACAB")
    clock.advance(0.9)
    assert cached.get_policy("projects/p") is None, "served from the cache within the TTL"
    clock.advance(0.1)
    record = cached.get_policy("projects/p")
    assert record is not None
    assert record.etag == "e1"


def test_own_writes_clear_the_cache_at_once(
    stores: tuple[SqlStore, CachedStore, FixedClock],
) -> None:
    """A write through the cache is visible to the very next read."""
    _, cached, _ = stores
    assert cached.get_project("p1") is None
    cached.insert_project(ProjectRecord("p1", "111111111111", "p1", 1.0))
    assert cached.get_project("p1") is not None


def test_revocation_checks_are_bounded_too(
    stores: tuple[SqlStore, CachedStore, FixedClock],
) -> None:
    """A token revoked on another node is refused here within the TTL."""
    sql, cached, clock = stores
    assert not cached.is_token_id_revoked("jti")
    sql.revoke_token_id("jti", 5000.0, 1000.0)
    clock.advance(1.0)
    assert cached.is_token_id_revoked("jti")


def test_cache_size_is_bounded(tmp_path: Path) -> None:
    """Past its maximum the cache starts over rather than growing without bound."""
    engine = make_engine(f"sqlite:///{tmp_path / 'small.db'}")
    migrate.upgrade(engine)
    cached = CachedStore(SqlStore(engine), FixedClock(), ttl=60.0, max_entries=3)
    for i in range(10):
        cached.get_project(f"p{i}")
    assert len(cached._entries) <= 3


def test_announced_changes_allow_long_entries(
    stores: tuple[SqlStore, CachedStore, FixedClock],
) -> None:
    """With every writer announcing its changes, entries live the long TTL; losing the
    listener forgets everything and falls back to the short one."""
    sql, _, clock = stores
    cached = CachedStore(sql, clock, ttl=1.0, long_ttl=300.0, announced=True)
    assert cached.get_policy("projects/q") is None
    sql.put_policy(PolicyRecord("projects/q", "{}", "e1", 1, 1.0), "ACAB")
    clock.advance(100.0)
    assert cached.get_policy("projects/q") is None, "still the cached absence"
    cached.invalidate_local()  # a notice from another node arrives
    assert cached.get_policy("projects/q") is not None
    sql.put_policy(PolicyRecord("projects/q", "{}", "e2", 2, 2.0), "e1")
    cached.changes_announced(False)  # the listener went away: forget, and trust 1 s only
    record = cached.get_policy("projects/q")
    assert record is not None
    assert record.etag == "e2"
    sql.put_policy(PolicyRecord("projects/q", "{}", "e3", 3, 3.0), "e2")
    clock.advance(1.0)
    record = cached.get_policy("projects/q")
    assert record is not None
    assert record.etag == "e3"


def test_postgres_changes_reach_other_nodes_as_notifications() -> None:
    """A write on one node's store is announced to another's listener when it commits."""
    import threading

    from tests.pg import require_postgres, temporary_database

    require_postgres()
    with temporary_database() as url:
        writer_engine, reader_engine = make_engine(url), make_engine(url)
        migrate.upgrade(writer_engine)
        writer, reader = SqlStore(writer_engine), SqlStore(reader_engine)
        changes, states = threading.Event(), []
        stop = threading.Event()
        listener = threading.Thread(
            target=reader.listen_for_changes, args=(changes.set, states.append, stop)
        )
        listener.start()
        try:
            for _ in range(100):  # until the listener is connected
                if states:
                    break
                stop.wait(0.05)
            assert states == [True]
            writer.put_policy(PolicyRecord("projects/n", "{}", "e1", 1, 1.0), "ACAB")
            assert changes.wait(2.0), "the change notice arrives within the bound"
        finally:
            stop.set()
            listener.join(5)
            writer_engine.dispose()
            reader_engine.dispose()
        assert states[-1] is False
