"""Per-account histograms of the calls' duration and conversation in seconds (`length_counts`):
the total of a list filtered by either is summed from them instead of counting every matching
call. Filled from the calls already stored; distributed with `calls` on a Citus cluster.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callhistory import citus, tallies

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "length_counts",
        sa.Column(
            "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("field", sa.SmallInteger, primary_key=True),
        sa.Column("seconds", sa.Integer, primary_key=True),
        sa.Column("type", sa.SmallInteger, primary_key=True),
        sa.Column("status", sa.SmallInteger, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
    )
    conn = op.get_bind()
    if citus.enabled(conn) and citus.distributed(conn):
        citus.distribute_table(conn, "length_counts")
    for (account_id,) in conn.execute(sa.text("SELECT id FROM accounts")).all():
        tallies.rebuild_lengths(conn, account_id)
    if conn.dialect.name == "postgresql":  # filled in bulk: plan with its real size
        op.execute("ANALYZE length_counts")


def downgrade() -> None:
    op.drop_table("length_counts")
