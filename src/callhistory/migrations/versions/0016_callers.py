"""When each outside number first called the account (`callers`): the summary's new callers in a
period are counted from its index instead of probing the calls for every caller. Filled from the
calls already stored; distributed with `calls` on a Citus cluster.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callhistory import citus, tallies

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "callers",
        sa.Column(
            "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("number", sa.String(255), primary_key=True),
        sa.Column("first_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_callers_account_first_at", "callers", ["account_id", "first_at"])
    conn = op.get_bind()
    if citus.enabled(conn) and citus.distributed(conn):
        citus.distribute_table(conn, "callers")
    for (account_id,) in conn.execute(sa.text("SELECT id FROM accounts")).all():
        tallies.rebuild_callers(conn, account_id)
    if conn.dialect.name == "postgresql":  # filled in bulk: plan with their real sizes
        op.execute("ANALYZE callers")


def downgrade() -> None:
    op.drop_table("callers")
