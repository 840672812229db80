"""Initial schema: projects, users, OAuth clients, service accounts, keys, policies, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_FALSE = sa.text("false")


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("project_number", sa.String(32), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("email", sa.String(254), primary_key=True),
        sa.Column("unique_id", sa.String(32), nullable=False, unique=True),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=_FALSE),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "oauth_clients",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(128), primary_key=True),
        sa.Column(
            "client_id",
            sa.String(128),
            sa.ForeignKey("oauth_clients.client_id"),
            nullable=False,
        ),
        sa.Column("user_email", sa.String(254), sa.ForeignKey("users.email"), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    op.create_table(
        "service_accounts",
        sa.Column("unique_id", sa.String(32), primary_key=True),
        sa.Column(
            "project_id", sa.String(64), sa.ForeignKey("projects.project_id"), nullable=False
        ),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("display_name", sa.String(100), nullable=False, server_default=""),
        sa.Column("description", sa.String(256), nullable=False, server_default=""),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=_FALSE),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("deleted_at", sa.Float, nullable=True),
        sa.Column("etag", sa.String(64), nullable=False, server_default=""),
    )
    op.create_index(
        "ux_service_accounts_live_email",
        "service_accounts",
        ["email"],
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index("ix_service_accounts_project", "service_accounts", ["project_id", "unique_id"])
    op.create_table(
        "service_account_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column(
            "account_unique_id",
            sa.String(32),
            sa.ForeignKey("service_accounts.unique_id"),
            nullable=False,
        ),
        sa.Column("key_type", sa.String(32), nullable=False),
        sa.Column("algorithm", sa.String(32), nullable=False, server_default="KEY_ALG_RSA_2048"),
        sa.Column("public_key_pem", sa.Text, nullable=False),
        sa.Column("certificate_pem", sa.Text, nullable=False),
        sa.Column("private_key_sealed", sa.LargeBinary, nullable=True),
        sa.Column("valid_after", sa.Float, nullable=False),
        sa.Column("valid_before", sa.Float, nullable=False),
        sa.Column("sign_from", sa.Float, nullable=True),
        sa.Column("sign_until", sa.Float, nullable=True),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=_FALSE),
        sa.Column("deleted_at", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_keys_account", "service_account_keys", ["account_unique_id"])
    op.create_table(
        "signing_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False, server_default="RS256"),
        sa.Column("public_key_pem", sa.Text, nullable=False),
        sa.Column("certificate_pem", sa.Text, nullable=False),
        sa.Column("private_key_sealed", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("publish_at", sa.Float, nullable=False),
        sa.Column("sign_from", sa.Float, nullable=False),
        sa.Column("sign_until", sa.Float, nullable=False),
        sa.Column("unpublish_at", sa.Float, nullable=False),
    )
    op.create_index("ix_signing_keys_purpose", "signing_keys", ["purpose", "sign_from"])
    op.create_table(
        "iam_policies",
        sa.Column("resource", sa.String(300), primary_key=True),
        sa.Column("policy_json", sa.Text, nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "org_policies",
        sa.Column(
            "project_id", sa.String(64), sa.ForeignKey("projects.project_id"), primary_key=True
        ),
        sa.Column("constraint_name", sa.String(200), primary_key=True),
        sa.Column("policy_json", sa.Text, nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("token_id", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("method", sa.String(100), nullable=False),
        sa.Column("principal", sa.String(300), nullable=False),
        sa.Column("resource", sa.String(300), nullable=False, server_default=""),
        sa.Column("permission", sa.String(100), nullable=False, server_default=""),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail_json", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("ix_audit_time", "audit_log", ["time"])
    op.create_index("ix_audit_principal", "audit_log", ["principal", "time"])
    op.create_index("ix_audit_resource", "audit_log", ["resource", "time"])


def downgrade() -> None:
    for table in (
        "audit_log",
        "revoked_tokens",
        "org_policies",
        "iam_policies",
        "signing_keys",
        "service_account_keys",
        "service_accounts",
        "refresh_tokens",
        "oauth_clients",
        "users",
        "projects",
    ):
        op.drop_table(table)
