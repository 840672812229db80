"""Looking up principals and service accounts: by email, unique id or a caller's reference.

The one place that knows how a ``ServiceAccountRef`` (email or unique id, any project or a
given one) maps to a live record, and whether a principal still exists and is enabled.
"""

from __future__ import annotations

from tokensmith.core.names import Principal, ServiceAccountRef
from tokensmith.store.base import ServiceAccountRecord, Store

__all__ = ["Directory"]


class Directory:
    def __init__(self, store: Store) -> None:
        self._store = store

    def service_account(self, ref: ServiceAccountRef) -> ServiceAccountRecord | None:
        """The live (not deleted) account ``ref`` names, or None; the project must match."""
        if ref.is_unique_id:
            record = self._store.get_service_account(ref.key)
            if record is None or record.deleted_at is not None:
                return None
        else:
            record = self._store.find_service_account(ref.key.lower())
        if record is None:
            return None
        if ref.project not in ("-", record.project_id):
            return None
        return record

    def by_email(self, email: str) -> ServiceAccountRecord | None:
        return self._store.find_service_account(email.lower())

    def principal_active(self, principal: Principal) -> bool:
        """The principal exists, is enabled, and (for accounts) is the same account by id."""
        if principal.kind == "user":
            user = self._store.get_user(principal.email)
            return user is not None and not user.disabled
        account = self._store.find_service_account(principal.email)
        if account is None or account.disabled:
            return False
        return not principal.unique_id or account.unique_id == principal.unique_id
