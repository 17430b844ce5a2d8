"""Per-account call rollups by local day: by number (`number_rollups`) and by wait before the
answer (`wait_rollups`). The statistics per external number and per extension, and the summary,
sum a month of them instead of reading millions of calls. Filled from the calls already stored;
distributed with `calls` on a Citus cluster.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-27
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

from callhistory import citus, tallies

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "number_rollups",
        sa.Column(
            "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("side", sa.SmallInteger, primary_key=True),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("number", sa.String(255), primary_key=True),
        sa.Column("type", sa.SmallInteger, primary_key=True),
        sa.Column("status", sa.SmallInteger, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
        sa.Column("duration", sa.BigInteger, nullable=False),
        sa.Column("conversation", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "wait_rollups",
        sa.Column(
            "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("type", sa.SmallInteger, primary_key=True),
        sa.Column("answered", sa.SmallInteger, primary_key=True),
        sa.Column("wait", sa.Integer, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
        sa.Column("conversation", sa.BigInteger, nullable=False),
    )
    conn = op.get_bind()
    if citus.enabled(conn) and citus.distributed(conn):
        citus.distribute_table(conn, "number_rollups")
        citus.distribute_table(conn, "wait_rollups")
    for account_id, timezone in conn.execute(sa.text("SELECT id, timezone FROM accounts")).all():
        tallies.rebuild_days(conn, account_id, ZoneInfo(timezone))
    if conn.dialect.name == "postgresql":  # filled in bulk: plan with their real sizes
        op.execute("ANALYZE number_rollups, wait_rollups")


def downgrade() -> None:
    op.drop_table("wait_rollups")
    op.drop_table("number_rollups")
