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
