"""Accounts, users, tokens, calls and their CRM integration rows.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="Asia/Tashkent"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "account_id",
            BigId,
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("email", sa.String(255), nullable=False, unique=True),
        sa.Column("password", sa.String(255), nullable=False),
        sa.Column("type", sa.SmallInteger, nullable=False, server_default="2"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_users_account_id", "users", ["account_id"])
    op.create_table(
        "personal_access_tokens",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("token", sa.String(64), nullable=False, unique=True),
        sa.Column("abilities", sa.Text, nullable=False),
        sa.Column("last_used_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_personal_access_tokens_user_id", "personal_access_tokens", ["user_id"])
    op.create_table(
        "calls",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "account_id",
            BigId,
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("pbx_call_id", sa.String(255)),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("answered_at", sa.DateTime),
        sa.Column("ended_at", sa.DateTime, nullable=False),
        sa.Column("src", sa.String(255), nullable=False),
        sa.Column("dst", sa.String(255), nullable=False),
        sa.Column("external_number", sa.String(255)),
        sa.Column("duration", sa.Integer, nullable=False),
        sa.Column("conversation", sa.Integer, nullable=False),
        sa.Column("type", sa.SmallInteger, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("disposition", sa.String(16), nullable=False),
        sa.Column("legs", sa.Integer, nullable=False, server_default="1"),
        sa.Column("recording", sa.String(1024)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("uq_calls_account_call_id", "calls", ["account_id", "call_id"], unique=True)
    for name, columns in (
        ("ix_calls_account_id", ["account_id", "id"]),
        ("ix_calls_account_started", ["account_id", "started_at", "id"]),
        ("ix_calls_account_duration", ["account_id", "duration", "id"]),
        ("ix_calls_account_conversation", ["account_id", "conversation", "id"]),
        ("ix_calls_account_type", ["account_id", "type", "id"]),
        ("ix_calls_account_status", ["account_id", "status", "id"]),
        ("ix_calls_account_pbx_call_id", ["account_id", "pbx_call_id"]),
    ):
        op.create_index(name, "calls", columns)
    if op.get_bind().dialect.name == "postgresql":
        # Substring filters (ILIKE '%x%') on PostgreSQL: trigram GIN indexes led by the account.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
        for column in ("src", "dst", "external_number"):
            op.execute(
                f"CREATE INDEX ix_calls_account_{column}_trgm ON calls "
                f"USING gin (account_id, {column} gin_trgm_ops)"
            )
    op.create_table(
        "call_integrations",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "call_history_id",
            BigId,
            sa.ForeignKey("calls.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("integration_type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_message", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_call_integrations_call", "call_integrations", ["call_history_id", "id"])


def downgrade() -> None:
    op.drop_table("call_integrations")
    op.drop_table("calls")
    op.drop_table("personal_access_tokens")
    op.drop_table("users")
    op.drop_table("accounts")
