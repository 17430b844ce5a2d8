"""Per-account joint histograms of the calls' duration and conversation (`length_pairs`): a list
sorted by one and filtered by the other is read inside the seconds that hold its page, and its
total summed from them. Filled from the calls already stored; distributed with `calls` on a Citus
cluster.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callhistory import citus, tallies

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "length_pairs",
        sa.Column(
            "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("duration", sa.Integer, primary_key=True),
        sa.Column("conversation", sa.Integer, primary_key=True),
        sa.Column("type", sa.SmallInteger, primary_key=True),
        sa.Column("status", sa.SmallInteger, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
    )
    conn = op.get_bind()
    if citus.enabled(conn) and citus.distributed(conn):
        citus.distribute_table(conn, "length_pairs")
    for (account_id,) in conn.execute(sa.text("SELECT id FROM accounts")).all():
        tallies.rebuild_pairs(conn, account_id)
    if conn.dialect.name == "postgresql":  # filled in bulk: plan with its real size
        op.execute("ANALYZE length_pairs")


def downgrade() -> None:
    op.drop_table("length_pairs")
