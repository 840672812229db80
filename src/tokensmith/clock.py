"""Time as a parameter: the Clock protocol and its two implementations.

``SystemClock`` is the only reader of the wall clock in the code base (ruff's TID251 bans
``time.time`` and ``datetime.now`` elsewhere); tests inject a ``FixedClock`` and move it by
hand, so no test ever sleeps to make time pass.
"""

from __future__ import annotations

import datetime as _dt
import time as _time
from typing import Protocol

__all__ = ["Clock", "FixedClock", "SystemClock", "to_datetime"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC), with sub-second precision."""
        ...


class SystemClock:
    def now(self) -> float:
        return _time.time()  # noqa: TID251 - the one sanctioned wall-clock read


class FixedClock:
    """A clock that only moves when told to; for tests and deterministic tooling."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, when: float) -> None:
        self._now = when


def to_datetime(epoch_seconds: float) -> _dt.datetime:
    """The UTC datetime of an epoch timestamp."""
    return _dt.datetime.fromtimestamp(epoch_seconds, tz=_dt.UTC)
