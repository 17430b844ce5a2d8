"""Outside numbers in time. The local days each one called on (`caller_days`) and, per day, how
many numbers called whose previous day of calls was which (`caller_gaps`): the summary's unique
and new callers over whole days are summed from a few thousand rows instead of sorting every
incoming call's number. Each missed call with its number's next miss and the hours until the
number was reached (`missed_calls`), counted by day (`missed_rollups`): the missed-unreturned list
of a month without grouping its missed calls by number. Filled from the calls already stored;
distributed with `calls` on a Citus cluster.

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

TABLES = ("caller_days", "caller_gaps", "missed_calls", "missed_rollups")


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
    op.create_table(
        "missed_calls",
        _account(),
        sa.Column("id", BigId, primary_key=True),
        sa.Column("number", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("next_at", sa.DateTime),
        sa.Column("waited", sa.Integer, nullable=False),
    )
    op.create_index("ix_missed_calls_account_number", "missed_calls", ["account_id", "number"])
    op.create_index(
        "ix_missed_calls_account_started_at", "missed_calls", ["account_id", "started_at"]
    )
    op.create_table(
        "missed_rollups",
        _account(),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("next_day", sa.Integer, primary_key=True),
        sa.Column("waited", sa.Integer, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
    )
    conn = op.get_bind()
    if citus.enabled(conn) and citus.distributed(conn):
        for table in TABLES:
            citus.distribute_table(conn, table)
    for account_id, zone in conn.execute(sa.text("SELECT id, timezone FROM accounts")).all():
        tallies.rebuild_numbers(conn, account_id, ZoneInfo(zone))
    if conn.dialect.name == "postgresql":  # filled in bulk: plan with their real size
        op.execute(f"ANALYZE {', '.join(TABLES)}")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
