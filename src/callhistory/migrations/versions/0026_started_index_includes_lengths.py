"""PostgreSQL: the start-time index also carries the duration and the conversation (INCLUDE), so a
period's calls filtered by comparisons of them are counted and placed from the index alone. The
table's rows, one random page read per call, cost those lists 430-580 ms at 10M calls (a week to
three with `filter[duration]` or `filter[conversation]`); 60-310 ms from the index.

Revision ID: 0026
Revises: 0025
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def _replace(include: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE INDEX ix_calls_account_started_new ON calls (account_id, started_at, id)"
        f" INCLUDE ({include})"
    )
    op.execute("DROP INDEX ix_calls_account_started")
    op.execute("ALTER INDEX ix_calls_account_started_new RENAME TO ix_calls_account_started")


def upgrade() -> None:
    _replace("type, status, duration, conversation")


def downgrade() -> None:
    _replace("type, status")
