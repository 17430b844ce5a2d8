"""Per-account calls per local hour (`hour_rollups`): the statistics per hour, the heatmap and
the summary's busiest hour sum a month of them instead of four times as many quarter-hours. Filled
from `call_rollups`; distributed with `calls` on a Citus cluster.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

from callhistory import citus, tallies

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "hour_rollups",
        sa.Column(
            "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("hour", sa.Integer, primary_key=True),
        sa.Column("type", sa.SmallInteger, primary_key=True),
        sa.Column("status", sa.SmallInteger, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
    )
    conn = op.get_bind()
    if citus.enabled(conn) and citus.distributed(conn):
        citus.distribute_table(conn, "hour_rollups")
    for account_id, timezone in conn.execute(sa.text("SELECT id, timezone FROM accounts")).all():
        tallies.rebuild_hours(conn, account_id, ZoneInfo(timezone))
    if conn.dialect.name == "postgresql":  # filled in bulk: plan with its real size
        op.execute("ANALYZE hour_rollups")


def downgrade() -> None:
    op.drop_table("hour_rollups")
