"""Per-account call rollups by quarter-hour, type and status, for totals over a period.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: `bucket` of a stored (naive UTC) start time, as tallies.bucket_of computes it.
BUCKET_SQL = {
    "postgresql": "CAST(floor(extract(epoch FROM started_at) / 900) AS integer)",
    "sqlite": "CAST(strftime('%s', started_at) AS integer) / 900",
}


def upgrade() -> None:
    op.create_table(
        "call_rollups",
        sa.Column(
            "account_id",
            BigId,
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("bucket", sa.Integer, primary_key=True),
        sa.Column("type", sa.SmallInteger, primary_key=True),
        sa.Column("status", sa.SmallInteger, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
        sa.Column("duration", sa.BigInteger, nullable=False),
        sa.Column("conversation", sa.BigInteger, nullable=False),
    )
    bucket = BUCKET_SQL[op.get_bind().dialect.name]
    op.execute(
        "INSERT INTO call_rollups"
        " (account_id, bucket, type, status, calls, duration, conversation)"
        f" SELECT account_id, {bucket}, type, status, COUNT(*), SUM(duration), SUM(conversation)"
        f" FROM calls GROUP BY account_id, {bucket}, type, status"
    )


def downgrade() -> None:
    op.drop_table("call_rollups")
