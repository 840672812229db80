"""Key rotation decisions: published before signing, published until everything signed expired."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensmith.crypto.rotation import (
    KeyWindow,
    RotationPolicy,
    next_window,
    published,
    signing_key,
)

POLICY = RotationPolicy(rotation_period=1000.0, prepublish=100.0, max_token_lifetime=50.0, skew=5.0)


def simulate(times: list[float], forced: set[int]) -> list[tuple[float, KeyWindow]]:
    """Run the rotation loop at each time; return (time, key that signed) pairs."""
    keys: list[KeyWindow] = []
    signed: list[tuple[float, KeyWindow]] = []
    for index, now in enumerate(times):
        plan = next_window(keys, now, POLICY, force=index in forced)
        if plan is not None:
            keys.append(KeyWindow(f"k{len(keys)}", *plan))
        key = signing_key(keys, now, POLICY)
        assert key is not None, "a key must always be able to sign after planning"
        signed.append((now, key))
    return signed


def test_empty_set_gets_a_key_that_signs_at_once() -> None:
    """The very first key signs immediately: nothing can have cached an empty key set."""
    plan = next_window([], 10.0, POLICY)
    assert plan == (10.0, 10.0, 1010.0, 1165.0)


def test_next_key_is_prepared_prepublish_before_the_switch() -> None:
    """The next key is created when the current one has prepublish left, and waits its turn."""
    current = KeyWindow("a", 0.0, 0.0, 1000.0, 1155.0)
    assert next_window([current], 899.0, POLICY) is None
    plan = next_window([current], 900.0, POLICY)
    assert plan == (900.0, 1000.0, 2000.0, 2155.0)
    nxt = KeyWindow("b", *plan)
    assert signing_key([current, nxt], 999.0, POLICY) == current
    assert signing_key([current, nxt], 1000.0, POLICY) == nxt
    assert [k.key_id for k in published([current, nxt], 1154.0)] == ["a", "b"]
    assert [k.key_id for k in published([current, nxt], 1155.0)] == ["b"]


def test_late_rotation_keeps_the_old_key_signing_until_the_new_one_is_ready() -> None:
    """When the loop runs late, the next key still gets its full prepublish time."""
    current = KeyWindow("a", 0.0, 0.0, 1000.0, 1155.0)
    plan = next_window([current], 990.0, POLICY)
    assert plan is not None
    assert plan[1] == 1090.0
    nxt = KeyWindow("b", *plan)
    assert signing_key([current, nxt], 1050.0, POLICY) == current
    assert signing_key([current, nxt], 1090.0, POLICY) == nxt


def test_forced_rotation_still_prepublishes() -> None:
    """An operator's rotation publishes the new key now and signs with it only later."""
    current = KeyWindow("a", 0.0, 0.0, 1000.0, 1155.0)
    plan = next_window([current], 300.0, POLICY, force=True)
    assert plan is not None
    assert plan[0] == 300.0
    assert plan[1] == 400.0
    assert next_window([current, KeyWindow("b", *plan)], 310.0, POLICY, force=True) is None


def test_prepublish_must_be_shorter_than_the_period() -> None:
    """A policy that could never prepare a key in time is refused."""
    with pytest.raises(ValueError, match="prepublish"):
        RotationPolicy(rotation_period=10.0, prepublish=10.0)


def check_schedule(steps: list[float], forced: set[int], *, strict: bool) -> None:
    times = [sum(steps[: i + 1]) for i in range(len(steps))]
    signed = simulate(times, forced)
    for when, key in signed:
        if strict and key.publish_at < key.sign_from:
            assert when - key.publish_at >= POLICY.prepublish, (when, key)
        assert key.unpublish_at >= when + POLICY.max_token_lifetime + POLICY.skew


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(st.floats(min_value=0.5, max_value=100.0), min_size=1, max_size=120),
    forced=st.sets(st.integers(min_value=1, max_value=119), max_size=5),
)
def test_a_loop_that_runs_every_prepublish_never_signs_with_an_unseen_key(
    steps: list[float], forced: set[int]
) -> None:
    """If the loop runs at least every ``prepublish``, every key but one that signed from its
    creation was published prepublish before it signed, and stays published for the longest
    token lifetime plus skew after its last signature."""
    check_schedule(steps, forced, strict=True)


@settings(max_examples=400, deadline=None)
@given(
    steps=st.lists(st.floats(min_value=0.5, max_value=3000.0), min_size=1, max_size=60),
    forced=st.sets(st.integers(min_value=1, max_value=59), max_size=5),
)
def test_any_schedule_always_has_a_signing_key_that_outlives_its_tokens(
    steps: list[float], forced: set[int]
) -> None:
    """Even after long idle gaps a key can always sign, and stays published while its tokens
    live."""
    check_schedule(steps, forced, strict=False)


def test_regression_no_gap_when_the_grace_ends_before_the_late_key_starts() -> None:
    """Regression (found by Hypothesis): a loop late past sign_until planned the next key to
    start after the old key's grace had ended, leaving a second with no signing key."""
    check_schedule([1.0, 1.0, 1000.0, 99.0], set(), strict=False)


def test_long_schedule_example() -> None:
    """A schedule that crosses several rotations with the loop just in time (regression)."""
    check_schedule([0.0] + [99.0] * 40, set(), strict=True)
