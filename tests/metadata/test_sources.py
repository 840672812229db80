"""The token cache: one token per key until 300 s before expiry, single-flight, bounded."""

from __future__ import annotations

import threading

import pytest

from tokensmith.clock import FixedClock
from tokensmith.metadata.sources import CachingTokenSource, MetadataError, Minted

START = 1_800_000_000.0


class CountingSource:
    """Mints numbered tokens that live ``lifetime`` seconds; can be told to fail or block."""

    def __init__(self, clock: FixedClock, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls: list[tuple[object, ...]] = []
        self.fail: MetadataError | None = None
        self.gate: threading.Event | None = None
        self.closed = False

    def _mint(self, *key: object) -> Minted:
        if self.gate is not None:
            self.gate.wait(5)
        self.calls.append(key)
        if self.fail is not None:
            raise self.fail
        return Minted(f"token-{len(self.calls)}", self.clock.now() + self.lifetime)

    def access_token(self, scopes: tuple[str, ...]) -> Minted:
        return self._mint("access", scopes)

    def id_token(self, audience: str, *, full: bool, licenses: bool) -> Minted:
        return self._mint("identity", audience, full, licenses)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def source() -> CountingSource:
    return CountingSource(FixedClock(START))


def test_same_scopes_in_any_order_share_one_token(source: CountingSource) -> None:
    """Access tokens are cached per set of scopes: the order of the scopes does not matter."""
    cache = CachingTokenSource(source, source.clock)
    first = cache.access_token(("a", "b"))
    assert cache.access_token(("b", "a")) == first
    assert cache.access_token(("a",)) != first
    assert len(source.calls) == 2


def test_token_is_renewed_when_300_seconds_or_less_remain(source: CountingSource) -> None:
    """A cached token is handed out until 300 s before expiry, then a new one is minted."""
    cache = CachingTokenSource(source, source.clock)
    first = cache.access_token(("s",))
    source.clock.advance(3600 - 301)
    assert cache.access_token(("s",)) == first
    source.clock.advance(1)
    renewed = cache.access_token(("s",))
    assert renewed != first
    assert renewed.expires_at == source.clock.now() + 3600


def test_id_tokens_are_cached_per_audience_format_and_licenses(source: CountingSource) -> None:
    """ID tokens are keyed by audience, format and licenses (licenses only matter when full)."""
    cache = CachingTokenSource(source, source.clock)
    standard = cache.id_token("aud", full=False, licenses=False)
    assert cache.id_token("aud", full=False, licenses=True) == standard
    full = cache.id_token("aud", full=True, licenses=False)
    with_licenses = cache.id_token("aud", full=True, licenses=True)
    other = cache.id_token("other", full=False, licenses=False)
    assert len({standard.token, full.token, with_licenses.token, other.token}) == 4
    assert source.calls[0] == ("identity", "aud", False, False)


def test_concurrent_requests_for_one_key_mint_once(source: CountingSource) -> None:
    """Many threads asking for the same token at once cause a single mint."""
    cache = CachingTokenSource(source, source.clock)
    source.gate = threading.Event()
    results: list[Minted] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.access_token(("s",))))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    source.gate.set()
    for thread in threads:
        thread.join(5)
    assert len(source.calls) == 1
    assert len(results) == 8
    assert len({r.token for r in results}) == 1


def test_failures_are_not_cached(source: CountingSource) -> None:
    """A failed mint raises to the caller and the next request tries again."""
    cache = CachingTokenSource(source, source.clock)
    source.fail = MetadataError(403, "denied")
    with pytest.raises(MetadataError, match="denied"):
        cache.id_token("aud", full=False, licenses=False)
    source.fail = None
    assert cache.id_token("aud", full=False, licenses=False).token == "token-2"


def test_cache_is_bounded_least_recently_used_first(source: CountingSource) -> None:
    """Caller-chosen audiences cannot grow the cache without bound: the LRU entry goes."""
    cache = CachingTokenSource(source, source.clock, max_entries=2)
    a = cache.id_token("a", full=False, licenses=False)
    cache.id_token("b", full=False, licenses=False)
    assert cache.id_token("a", full=False, licenses=False) == a  # a is now the most recent
    cache.id_token("c", full=False, licenses=False)  # evicts b
    assert cache.id_token("a", full=False, licenses=False) == a
    calls = len(source.calls)
    cache.id_token("b", full=False, licenses=False)
    assert len(source.calls) == calls + 1


def test_short_lived_tokens_are_minted_every_time(source: CountingSource) -> None:
    """A token living no longer than the margin is never handed out twice."""
    short = CountingSource(source.clock, lifetime=200)
    cache = CachingTokenSource(short, source.clock)
    assert cache.access_token(("s",)) != cache.access_token(("s",))


def test_closing_the_cache_closes_the_source(source: CountingSource) -> None:
    """close() forgets the cached tokens and closes the source (its connections)."""
    cache = CachingTokenSource(source, source.clock)
    cache.access_token(("s",))
    cache.close()
    assert source.closed
