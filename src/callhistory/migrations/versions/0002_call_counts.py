"""Per-account call counters by type and status, for O(1) unfiltered totals.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "call_counts",
        sa.Column(
            "account_id",
            BigId,
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("type", sa.SmallInteger, primary_key=True),
        sa.Column("status", sa.SmallInteger, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO call_counts (account_id, type, status, calls) "
        "SELECT account_id, type, status, COUNT(*) FROM calls GROUP BY account_id, type, status"
    )


def downgrade() -> None:
    op.drop_table("call_counts")
