"""The local days each outside number called on (`caller_days`) and, per day, how many numbers
called whose previous day of calls was which (`caller_gaps`): the summary's unique and new callers
over whole days are summed from a few thousand rows instead of sorting every incoming call's
number. Filled from the calls already stored; distributed with `calls` on a Citus cluster.

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-28
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

from callhistory import citus, tallies

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _account() -> sa.Column[int]:
    return sa.Column(
        "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )


def upgrade() -> None:
    op.create_table(
        "caller_days",
        _account(),
        sa.Column("number", sa.String(255), primary_key=True),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "caller_gaps",
        _account(),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("since", sa.Integer, primary_key=True),
        sa.Column("callers", sa.BigInteger, nullable=False),
    )
    conn = op.get_bind()
    if citus.enabled(conn) and citus.distributed(conn):
        citus.distribute_table(conn, "caller_days")
        citus.distribute_table(conn, "caller_gaps")
    for account_id, zone in conn.execute(sa.text("SELECT id, timezone FROM accounts")).all():
        tallies.rebuild_caller_days(conn, account_id, ZoneInfo(zone))
    if conn.dialect.name == "postgresql":  # filled in bulk: plan with their real size
        op.execute("ANALYZE caller_days")
        op.execute("ANALYZE caller_gaps")


def downgrade() -> None:
    op.drop_table("caller_gaps")
    op.drop_table("caller_days")
