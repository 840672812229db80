"""The audit trail: who asked for what, on which resource, and what they got.

Every denial and every credential handed out is recorded in the store's ``audit_log`` (and
the denial also on the ``tokensmith.authz`` logger, so an operator tailing the server sees why
a call failed). Records never hold a token, a key or a secret: only names, ids and decisions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tokensmith.clock import Clock
from tokensmith.store.base import AuditRecord, Store

__all__ = ["Auditor"]

log = logging.getLogger("tokensmith.authz")


class Auditor:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

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
        """Write one record durably before returning (callers rely on that ordering)."""
        self._store.append_audit(
            [
                AuditRecord(
                    time=self._clock.now(),
                    method=method,
                    principal=principal,
                    resource=resource,
                    permission=permission,
                    outcome=outcome,
                    detail=dict(detail or {}),
                )
            ]
        )

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
