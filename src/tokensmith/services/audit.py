"""The audit trail: who asked for what, on which resource, and what they got.

Every denial and every credential handed out is recorded in the store's ``audit_log`` (and
the denial also on the ``tokensmith.authz`` logger, so an operator tailing the server sees why
a call failed). Records never hold a token, a key or a secret: only names, ids and decisions.

Group commit: inside ``Auditor.collect()`` (the HTTP edge opens one per request), ``record``
hands the record to a writer thread and returns a future instead of writing; the writer commits
everything queued in one transaction. The edge awaits the futures before the response leaves,
so a credential is still returned only once its record is durable — waiting costs latency,
not throughput. Outside ``collect()`` (CLI, tests, admin paths) ``record`` writes at once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import logging
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from tokensmith.clock import Clock
from tokensmith.store.base import AuditRecord, Store

__all__ = ["AuditWriter", "Auditor"]

log = logging.getLogger("tokensmith.authz")

_BATCH_LIMIT = 2000
_PENDING: contextvars.ContextVar[list[concurrent.futures.Future[None]] | None] = (
    contextvars.ContextVar("tokensmith_pending_audit", default=None)
)


class AuditWriter:
    """A thread that commits queued audit records in batches (one transaction per batch)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[
            tuple[AuditRecord, concurrent.futures.Future[None]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tokensmith-audit", daemon=True)
        self._thread.start()

    def submit(self, record: AuditRecord) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._queue.put((record, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < _BATCH_LIMIT:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._commit(batch)
                    return
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list[tuple[AuditRecord, concurrent.futures.Future[None]]]) -> None:
        try:
            self._store.append_audit([record for record, _ in batch])
        except Exception as exc:  # every waiter learns the write failed
            for _, future in batch:
                future.set_exception(exc)
            return
        for _, future in batch:
            future.set_result(None)


class Auditor:
    def __init__(self, store: Store, clock: Clock, writer: AuditWriter | None = None) -> None:
        self._store = store
        self._clock = clock
        self._writer = writer

    @staticmethod
    @contextlib.contextmanager
    def collect() -> Iterator[list[concurrent.futures.Future[None]]]:
        """Defer this request's records to the writer; the caller awaits the returned list."""
        pending: list[concurrent.futures.Future[None]] = []
        token = _PENDING.set(pending)
        try:
            yield pending
        finally:
            _PENDING.reset(token)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def record(
        self,
        *,
        method: str,
        principal: str,
        resource: str,
        permission: str,
        outcome: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Write one record durably before returning, or — inside ``collect()`` — queue it
        for the batch writer (the edge then waits for it before answering)."""
        record = AuditRecord(
            time=self._clock.now(),
            method=method,
            principal=principal,
            resource=resource,
            permission=permission,
            outcome=outcome,
            detail=dict(detail or {}),
        )
        pending = _PENDING.get()
        if pending is None or self._writer is None:
            self._store.append_audit([record])
            return
        pending.append(self._writer.submit(record))

    def denied(
        self,
        *,
        method: str,
        principal: str,
        resource: str,
        permission: str,
        reason: str,
    ) -> None:
        log.warning(
            "denied: principal=%s permission=%s resource=%s method=%s reason=%s",
            principal,
            permission,
            resource,
            method,
            reason,
        )
        self.record(
            method=method,
            principal=principal,
            resource=resource,
            permission=permission,
            outcome="denied",
            detail={"reason": reason},
        )
