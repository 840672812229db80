"""The tables of the store, in SQLAlchemy Core; one schema for SQLite and PostgreSQL.

Times are stored as epoch seconds (double precision). Service-account policies are keyed by the
account's unique id, so an account deleted and re-created under the same email does not
inherit the old account's grants (as on Google). The Alembic migrations in ``migrations/``
create exactly these tables; ``tests/store`` checks that the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

__all__ = [
    "audit_log",
    "iam_policies",
    "metadata",
    "oauth_clients",
    "org_policies",
    "projects",
    "refresh_tokens",
    "revoked_tokens",
    "service_account_keys",
    "service_accounts",
    "signing_keys",
    "users",
]

metadata = MetaData()

projects = Table(
    "projects",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("project_number", String(32), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("email", String(254), primary_key=True),
    Column("unique_id", String(32), nullable=False, unique=True),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", Float, nullable=False),
)

oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("secret_hash", String(128), nullable=False),
    Column("display_name", String(200), nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(128), primary_key=True),
    Column("client_id", String(128), ForeignKey("oauth_clients.client_id"), nullable=False),
    Column("user_email", String(254), ForeignKey("users.email"), nullable=False),
    Column("scopes", Text, nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

service_accounts = Table(
    "service_accounts",
    metadata,
    Column("unique_id", String(32), primary_key=True),
    Column("project_id", String(64), ForeignKey("projects.project_id"), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("email", String(254), nullable=False),
    Column("display_name", String(100), nullable=False, server_default=""),
    Column("description", String(256), nullable=False, server_default=""),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", Float, nullable=False),
    Column("deleted_at", Float, nullable=True),
    Column("etag", String(64), nullable=False, server_default=""),
)
# One live account per email; deleted ones keep their row (for undelete) without blocking reuse.
Index(
    "ux_service_accounts_live_email",
    service_accounts.c.email,
    unique=True,
    sqlite_where=service_accounts.c.deleted_at.is_(None),
    postgresql_where=service_accounts.c.deleted_at.is_(None),
)
Index("ix_service_accounts_project", service_accounts.c.project_id, service_accounts.c.unique_id)

service_account_keys = Table(
    "service_account_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column(
        "account_unique_id",
        String(32),
        ForeignKey("service_accounts.unique_id"),
        nullable=False,
    ),
    Column("key_type", String(32), nullable=False),  # USER_MANAGED | SYSTEM_MANAGED
    Column("algorithm", String(32), nullable=False, server_default="KEY_ALG_RSA_2048"),
    Column("public_key_pem", Text, nullable=False),
    Column("certificate_pem", Text, nullable=False),
    Column("private_key_sealed", LargeBinary, nullable=True),  # system-managed keys only
    Column("valid_after", Float, nullable=False),
    Column("valid_before", Float, nullable=False),
    Column("sign_from", Float, nullable=True),  # system-managed: first moment it may sign
    Column("sign_until", Float, nullable=True),  # system-managed: last moment it may sign
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("deleted_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
)
Index("ix_keys_account", service_account_keys.c.account_unique_id)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("purpose", String(32), nullable=False),  # "issuer"
    Column("algorithm", String(16), nullable=False, server_default="RS256"),
    Column("public_key_pem", Text, nullable=False),
    Column("certificate_pem", Text, nullable=False),
    Column("private_key_sealed", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("publish_at", Float, nullable=False),
    Column("sign_from", Float, nullable=False),
    Column("sign_until", Float, nullable=False),
    Column("unpublish_at", Float, nullable=False),
)
Index("ix_signing_keys_purpose", signing_keys.c.purpose, signing_keys.c.sign_from)

iam_policies = Table(
    "iam_policies",
    metadata,
    Column("resource", String(300), primary_key=True),
    Column("policy_json", Text, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

org_policies = Table(
    "org_policies",
    metadata,
    Column("project_id", String(64), ForeignKey("projects.project_id"), primary_key=True),
    Column("constraint_name", String(200), primary_key=True),
    Column("policy_json", Text, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("updated_at", Float, nullable=False),
)

revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    Column("token_id", String(128), primary_key=True),  # jti of an access token
    Column("expires_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("method", String(100), nullable=False),
    Column("principal", String(300), nullable=False),
    Column("resource", String(300), nullable=False, server_default=""),
    Column("permission", String(100), nullable=False, server_default=""),
    Column("outcome", String(16), nullable=False),  # "granted" | "denied" | "error"
    Column("detail_json", Text, nullable=False, server_default="{}"),
)
Index("ix_audit_time", audit_log.c.time)
Index("ix_audit_principal", audit_log.c.principal, audit_log.c.time)
Index("ix_audit_resource", audit_log.c.resource, audit_log.c.time)
