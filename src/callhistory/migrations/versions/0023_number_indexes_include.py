"""PostgreSQL: the indexes of exact numbers in time carry type and status, and the src one the
dst too (INCLUDE): an operator's totals (its extensions as caller, plus as answering party, less
the calls it was both) are counted from these two indexes alone, without visiting the table for
each of its calls (measured 765 ms for an operator's 229,000 calls at 10M calls: a lossy bitmap
over 150,000 table pages).

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

#: index name → (its key columns, what it carries)
INDEXES = {
    "ix_calls_account_src_started": ("account_id, src, started_at", "dst, type, status"),
    "ix_calls_account_dst_started": ("account_id, dst, started_at", "type, status"),
}


def _rebuild(include: bool) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    for name, (columns, carried) in INDEXES.items():
        if conn.execute(sa.text("SELECT to_regclass(:name)"), {"name": name}).scalar() is None:
            continue
        extra = f" INCLUDE ({carried})" if include else ""
        op.execute(f"CREATE INDEX {name}_new ON calls ({columns}){extra}")
        op.execute(f"DROP INDEX {name}")
        op.execute(f"ALTER INDEX {name}_new RENAME TO {name}")


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
