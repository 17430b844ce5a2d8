"""Per-account counts of the calls holding each one- or two-character substring of a number
(`gram_counts`): the total of a short substring search is read from them instead of scanning
every call. Filled from the calls already stored; distributed with `calls` on a Citus cluster.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callhistory import citus, tallies

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "gram_counts",
        sa.Column(
            "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("field", sa.SmallInteger, primary_key=True),
        sa.Column("gram", sa.String(2), primary_key=True),
        sa.Column("type", sa.SmallInteger, primary_key=True),
        sa.Column("status", sa.SmallInteger, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
    )
    conn = op.get_bind()
    if citus.enabled(conn) and citus.distributed(conn):
        citus.distribute_table(conn, "gram_counts")
    for (account_id,) in conn.execute(sa.text("SELECT id FROM accounts")).all():
        tallies.rebuild_grams(conn, account_id)
    if conn.dialect.name == "postgresql":  # filled in bulk: plan with its real size
        op.execute("ANALYZE gram_counts")


def downgrade() -> None:
    op.drop_table("gram_counts")
