"""Running a request's service call so its audit records are group-committed before replying.

``await audited(services, call)`` runs ``call()`` inside ``Auditor.collect()`` and then waits —
without blocking the event loop — until the writer thread has committed every record the call
produced. A record that cannot be written turns a success into a retryable 503 (no unaudited
credential leaves); a denial stays a denial (a 4xx is never turned into a 5xx).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tokensmith.errors import TokensmithError, Unavailable

__all__ = ["audited"]

log = logging.getLogger("tokensmith.audit")

T = TypeVar("T")


async def audited(services: Any, call: Callable[[], T]) -> T:
    with services.auditor.collect() as pending:
        try:
            result = call()
        except TokensmithError:
            await _settle(pending, failing=False)
            raise
    await _settle(pending, failing=True)
    return result


async def _settle(pending: list[Any], *, failing: bool) -> None:
    errors: list[BaseException] = []
    for future in pending:  # usually one record; no need for a gather
        try:
            await asyncio.wrap_future(future)
        except Exception as exc:
            errors.append(exc)
    if not errors:
        return
    log.error("audit records could not be written: %s", errors[0])
    if failing:
        raise Unavailable(
            "The service is currently unavailable: the audit log could not be written."
        )
