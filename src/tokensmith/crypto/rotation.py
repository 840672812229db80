"""Key rotation decisions as pure functions of ``now`` (SPIRE-style ``current``/``next`` slots).

A key's life has four instants: ``publish_at`` ≤ ``sign_from`` < ``sign_until`` ≤
``unpublish_at``. The rules that keep every verifier working:

- a key is published at least ``prepublish`` before it first signs, and ``prepublish`` is
  longer than the ``Cache-Control: max-age`` of the published documents, so a verifier that
  honours caching has the key before it sees a token signed with it;
- a key stays published until everything it signed has expired:
  ``unpublish_at = sign_until + grace + max_token_lifetime + skew``, where the grace (equal to
  ``prepublish``) lets the old key go on signing when the rotation loop ran late;
- the ``next`` key is prepared once the ``current`` key has less than ``prepublish`` left.

Only a key set with no signing key at all (a new one, or one whose server was down past every
window) gets a key that signs at once; the alternative would be an outage.
See SPIRE's ca manager (ShouldPrepareNext): https://github.com/spiffe/spire
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = ["KeyWindow", "RotationPolicy", "next_window", "published", "signing_key"]


@dataclasses.dataclass(frozen=True)
class RotationPolicy:
    rotation_period: float = 7 * 86400.0
    prepublish: float = 6 * 3600.0
    max_token_lifetime: float = 12 * 3600.0
    skew: float = 300.0

    def __post_init__(self) -> None:
        if self.prepublish >= self.rotation_period:
            raise ValueError("prepublish must be shorter than the rotation period")


@dataclasses.dataclass(frozen=True)
class KeyWindow:
    key_id: str
    publish_at: float
    sign_from: float
    sign_until: float
    unpublish_at: float


def signing_key(keys: Sequence[KeyWindow], now: float, policy: RotationPolicy) -> KeyWindow | None:
    """The key that signs at ``now``.

    Preference order: a key inside its signing window that verifiers have had time to fetch
    (published ``prepublish`` ago, or a key that signed from the moment it was published);
    then such a key in its grace period (``prepublish`` past ``sign_until``: the rotation loop
    ran late, and the old key keeps signing until the new one is ready); then, degraded, any
    key in its window or grace; finally a published key that is early. Among equals, the
    newest.
    """

    def ready(k: KeyWindow) -> bool:
        return now - k.publish_at >= policy.prepublish or k.publish_at >= k.sign_from

    live = [
        k
        for k in keys
        if k.publish_at <= now and k.sign_from <= now < k.sign_until + policy.prepublish
    ]
    in_window = [k for k in live if now < k.sign_until]
    # Last resort: a published key whose turn has not come yet (the old key's grace ran out
    # before it): signing a little early beats not signing at all.
    waiting = [k for k in keys if k.publish_at <= now < k.sign_from]
    for group in (
        [k for k in in_window if ready(k)],
        [k for k in live if ready(k)],
        in_window,
        live,
    ):
        if group:
            return max(group, key=lambda k: k.sign_from)
    return min(waiting, key=lambda k: k.sign_from, default=None)


def published(keys: Sequence[KeyWindow], now: float) -> list[KeyWindow]:
    """Keys to publish at ``now``, oldest first."""
    return sorted(
        (k for k in keys if k.publish_at <= now < k.unpublish_at), key=lambda k: k.sign_from
    )


def next_window(
    keys: Sequence[KeyWindow], now: float, policy: RotationPolicy, *, force: bool = False
) -> tuple[float, float, float, float] | None:
    """The window (publish_at, sign_from, sign_until, unpublish_at) of a key to create now.

    None when no key is needed. ``force`` asks for a new key even if the current one has time
    left (an operator's rotation): it is published now and signs after ``prepublish``.
    """
    current = signing_key(keys, now, policy)
    newest = max(keys, key=lambda k: k.sign_from, default=None)
    if current is None:
        if newest is not None and newest.sign_from > now:
            return None  # the next key is already published and waiting for its turn
        # Nothing can sign (a new key set, or a server that was down past every window):
        # refusing to sign for ``prepublish`` would be an outage, so the key signs at once.
        return _window(now, now, policy)
    if force:
        if newest is not None and newest.sign_from > now:
            return None
        return _window(now, now + policy.prepublish, policy)
    if newest is not None and newest.sign_from > current.sign_from:
        return None  # next already prepared
    if current.sign_until - now <= policy.prepublish:
        # Normally exactly ``sign_until``; a late loop pushes the start out so the new key is
        # still published ``prepublish`` before it signs (the old key signs in its grace).
        return _window(now, max(current.sign_until, now + policy.prepublish), policy)
    return None


def _window(
    now: float, sign_from: float, policy: RotationPolicy
) -> tuple[float, float, float, float]:
    sign_until = sign_from + policy.rotation_period
    # Published past the grace period for as long as the longest token it can sign lives.
    unpublish_at = sign_until + policy.prepublish + policy.max_token_lifetime + policy.skew
    return (now, sign_from, sign_until, unpublish_at)
