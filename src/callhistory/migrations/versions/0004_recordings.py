"""Recordings: per-account retention, and finding a call by its recording path.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("recording_retention_days", sa.Integer))
    op.create_index("ix_calls_account_recording", "calls", ["account_id", "recording"])


def downgrade() -> None:
    op.drop_index("ix_calls_account_recording", "calls")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("recording_retention_days")
