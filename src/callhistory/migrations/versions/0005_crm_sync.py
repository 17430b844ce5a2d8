"""CRM sync: connected integrations, and the sync queue on call_integrations.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("integration_type", sa.String(32), nullable=False),
        sa.Column("base_url", sa.String(255), nullable=False),
        sa.Column("auth", sa.String(16), nullable=False),
        sa.Column("secrets", sa.Text, nullable=False),
        sa.Column("access_expires_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index(
        "uq_integrations_account_type",
        "integrations",
        ["account_id", "integration_type"],
        unique=True,
    )
    with op.batch_alter_table("call_integrations") as batch:
        batch.add_column(
            sa.Column(
                "integration_id",
                BigId,
                sa.ForeignKey(
                    "integrations.id", name="fk_call_integrations_integration", ondelete="CASCADE"
                ),
            )
        )
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime))
        batch.add_column(sa.Column("lease_owner", sa.String(64)))
        batch.add_column(sa.Column("lease_until", sa.DateTime))
        batch.add_column(sa.Column("external_id", sa.String(64)))
    op.create_index(
        "ix_call_integrations_queue",
        "call_integrations",
        ["status", "integration_id", "next_attempt_at", "id"],
    )
    op.create_index(
        "ix_call_integrations_status_call", "call_integrations", ["status", "call_history_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_call_integrations_status_call", "call_integrations")
    op.drop_index("ix_call_integrations_queue", "call_integrations")
    with op.batch_alter_table("call_integrations") as batch:
        for column in (
            "external_id", "lease_until", "lease_owner", "next_attempt_at", "attempts",
            "integration_id",
        ):  # fmt: skip
            batch.drop_column(column)
    op.drop_table("integrations")
