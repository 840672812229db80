"""The store seam: record types and the ``Store`` protocol every backend implements.

Records are frozen dataclasses mirroring the tables in ``schema.py``. Each store method is
atomic on its own; writes that must not lose a race (policies, org policies) are
compare-and-set on an etag and raise ``Conflict`` when the etag moved. A store that cannot
reach its database raises ``tokensmith.errors.Unavailable`` (retryable), never a denial.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = [
    "AuditRecord",
    "Conflict",
    "KeyRecord",
    "OAuthClientRecord",
    "OrgPolicyRecord",
    "PolicyRecord",
    "ProjectRecord",
    "RefreshTokenRecord",
    "ServiceAccountRecord",
    "SigningKeyRecord",
    "Store",
    "UserRecord",
]


class Conflict(Exception):
    """A uniqueness constraint or an etag compare-and-set failed."""


@dataclasses.dataclass(frozen=True)
class ProjectRecord:
    project_id: str
    project_number: str
    display_name: str
    created_at: float


@dataclasses.dataclass(frozen=True)
class UserRecord:
    email: str
    unique_id: str
    disabled: bool
    created_at: float


@dataclasses.dataclass(frozen=True)
class OAuthClientRecord:
    client_id: str
    secret_hash: str
    display_name: str
    created_at: float


@dataclasses.dataclass(frozen=True)
class RefreshTokenRecord:
    token_hash: str
    client_id: str
    user_email: str
    scopes: str
    created_at: float
    revoked_at: float | None = None


@dataclasses.dataclass(frozen=True)
class ServiceAccountRecord:
    unique_id: str
    project_id: str
    account_id: str
    email: str
    display_name: str
    description: str
    disabled: bool
    created_at: float
    deleted_at: float | None = None
    etag: str = ""


@dataclasses.dataclass(frozen=True)
class KeyRecord:
    key_id: str
    account_unique_id: str
    key_type: str  # USER_MANAGED | SYSTEM_MANAGED
    algorithm: str
    public_key_pem: str
    certificate_pem: str
    private_key_sealed: bytes | None
    valid_after: float
    valid_before: float
    sign_from: float | None
    sign_until: float | None
    disabled: bool
    deleted_at: float | None
    created_at: float


@dataclasses.dataclass(frozen=True)
class SigningKeyRecord:
    key_id: str
    purpose: str
    algorithm: str
    public_key_pem: str
    certificate_pem: str
    private_key_sealed: bytes
    created_at: float
    publish_at: float
    sign_from: float
    sign_until: float
    unpublish_at: float


@dataclasses.dataclass(frozen=True)
class PolicyRecord:
    resource: str
    policy_json: str
    etag: str
    revision: int
    updated_at: float


@dataclasses.dataclass(frozen=True)
class OrgPolicyRecord:
    project_id: str
    constraint_name: str
    policy_json: str
    etag: str
    updated_at: float


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    time: float
    method: str
    principal: str
    resource: str
    permission: str
    outcome: str
    detail: dict[str, Any]
    id: int | None = None


class Store(Protocol):
    # projects and users
    def get_project(self, project_id: str) -> ProjectRecord | None: ...
    def get_project_by_number(self, number: str) -> ProjectRecord | None: ...
    def insert_project(self, record: ProjectRecord) -> None: ...
    def get_user(self, email: str) -> UserRecord | None: ...
    def insert_user(self, record: UserRecord) -> None: ...

    # OAuth clients and refresh tokens
    def get_oauth_client(self, client_id: str) -> OAuthClientRecord | None: ...
    def insert_oauth_client(self, record: OAuthClientRecord) -> None: ...
    def insert_refresh_token(self, record: RefreshTokenRecord) -> None: ...
    def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None: ...
    def revoke_refresh_token(self, token_hash: str, when: float) -> bool: ...

    # service accounts
    def insert_service_account(self, record: ServiceAccountRecord) -> None: ...
    def get_service_account(self, unique_id: str) -> ServiceAccountRecord | None: ...
    def find_service_account(self, email: str) -> ServiceAccountRecord | None: ...
    def list_service_accounts(
        self, project_id: str, *, after: str, limit: int
    ) -> Sequence[ServiceAccountRecord]: ...
    def update_service_account(self, record: ServiceAccountRecord) -> None: ...

    # service-account keys
    def insert_key(self, record: KeyRecord) -> None: ...
    def get_key(self, key_id: str) -> KeyRecord | None: ...
    def list_keys(self, account_unique_id: str) -> Sequence[KeyRecord]: ...
    def update_key(self, record: KeyRecord) -> None: ...

    # issuer signing keys
    def insert_signing_key(self, record: SigningKeyRecord) -> None: ...
    def list_signing_keys(self, purpose: str) -> Sequence[SigningKeyRecord]: ...

    # IAM and org policies (compare-and-set on etag; expected None = unconditional)
    def get_policy(self, resource: str) -> PolicyRecord | None: ...
    def put_policy(self, record: PolicyRecord, expected_etag: str | None) -> None: ...
    def get_org_policy(self, project_id: str, constraint: str) -> OrgPolicyRecord | None: ...
    def put_org_policy(self, record: OrgPolicyRecord, expected_etag: str | None) -> None: ...
    def delete_org_policy(
        self, project_id: str, constraint: str, expected_etag: str | None
    ) -> bool: ...

    # revocation and audit
    def revoke_token_id(self, token_id: str, expires_at: float, when: float) -> None: ...
    def is_token_id_revoked(self, token_id: str) -> bool: ...
    def prune_revoked(self, before: float) -> int:
        """Forget revocations of tokens that expired before ``before``; returns how many."""
        ...

    def append_audit(self, records: Sequence[AuditRecord]) -> None: ...
    def query_audit(
        self,
        *,
        principal: str = "",
        resource: str = "",
        account: str = "",
        method: str = "",
        outcome: str = "",
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> Sequence[AuditRecord]:
        """Newest first. ``principal`` is a member (``user:x``) or a bare email (any kind);
        ``account`` matches records about that service account in any project."""
        ...

    def exclusive(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A lock named ``name`` held across every node sharing the database."""
        ...

    def close(self) -> None: ...
