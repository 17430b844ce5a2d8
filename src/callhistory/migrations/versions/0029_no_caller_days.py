"""No `caller_days`: the local days each outside number called on are read from its incoming
calls (the `src` index) around the days a batch moves (`tallies._days_around`), not kept in a
table of their own. Writing a row per number and day was 2.3 s of a 1M-line import. A downgrade
makes the table again and fills it from the calls.

Revision ID: 0029
Revises: 0028
Create Date: 2026-11-29
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

from callhistory import citus, tallies
from callhistory.models import CallType

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.drop_table("caller_days")


def downgrade() -> None:
    days = op.create_table(
        "caller_days",
        sa.Column(
            "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("number", sa.String(255), primary_key=True),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
    )
    conn = op.get_bind()
    if citus.enabled(conn) and citus.distributed(conn):
        citus.distribute_table(conn, "caller_days")
    calls = sa.table(
        "calls",
        sa.column("account_id"),
        sa.column("src"),
        sa.column("type"),
        sa.column("started_at"),
    )
    for account_id, zone in conn.execute(sa.text("SELECT id, timezone FROM accounts")).all():
        if (day := tallies._local_day(conn, account_id, ZoneInfo(zone))) is None:
            continue
        grouped = (
            sa.select(calls.c.account_id, calls.c.src, day, sa.func.count())
            .where(
                calls.c.account_id == account_id,
                calls.c.type == int(CallType.INCOMING),
                calls.c.src != "",
            )
            .group_by(calls.c.account_id, calls.c.src, day)
        )
        conn.execute(days.insert().from_select(["account_id", "number", "day", "calls"], grouped))
