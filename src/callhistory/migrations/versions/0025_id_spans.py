"""The earliest and latest start of each account's calls per block of `tallies.SPAN_BLOCK` ids
(`id_spans`): a list in id order filtered by a period is read between the blocks that may hold
the period's calls instead of walking every index entry before them. Filled from the calls already
stored; distributed with `calls` on a Citus cluster.

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callhistory import citus, tallies

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "id_spans",
        sa.Column(
            "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("block", sa.BigInteger, primary_key=True),
        sa.Column("first_at", sa.DateTime, nullable=False),
        sa.Column("last_at", sa.DateTime, nullable=False),
    )
    conn = op.get_bind()
    if citus.enabled(conn) and citus.distributed(conn):
        citus.distribute_table(conn, "id_spans")
    for (account_id,) in conn.execute(sa.text("SELECT id FROM accounts")).all():
        tallies.rebuild_spans(conn, account_id)
    if conn.dialect.name == "postgresql":  # filled in bulk: plan with its real size
        op.execute("ANALYZE id_spans")


def downgrade() -> None:
    op.drop_table("id_spans")
