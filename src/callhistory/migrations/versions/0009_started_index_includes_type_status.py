"""PostgreSQL: the start-time index carries type and status (INCLUDE), so the calls of a period's
partial quarter-hours are counted by type and status from the index alone, without visiting the
table (its rows are in arrival order, not time order: one random page read per call).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE INDEX ix_calls_account_started_new ON calls (account_id, started_at, id)"
        " INCLUDE (type, status)"
    )
    op.execute("DROP INDEX ix_calls_account_started")
    op.execute("ALTER INDEX ix_calls_account_started_new RENAME TO ix_calls_account_started")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE INDEX ix_calls_account_started_old ON calls (account_id, started_at, id)")
    op.execute("DROP INDEX ix_calls_account_started")
    op.execute("ALTER INDEX ix_calls_account_started_old RENAME TO ix_calls_account_started")
