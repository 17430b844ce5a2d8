"""Asterisk ingestion: per-account PBX layout, raw CDR legs, import offsets.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("pbx_config", sa.Text))
    op.create_table(
        "call_legs",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "call_history_id", BigId, sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("call_key", sa.String(255), nullable=False),
        sa.Column("leg_key", sa.String(64), nullable=False),
        sa.Column("accountcode", sa.String(255), nullable=False),
        sa.Column("src", sa.String(255), nullable=False),
        sa.Column("dst", sa.String(255), nullable=False),
        sa.Column("dcontext", sa.String(255), nullable=False),
        sa.Column("clid", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(255), nullable=False),
        sa.Column("dstchannel", sa.String(255), nullable=False),
        sa.Column("lastapp", sa.String(255), nullable=False),
        sa.Column("lastdata", sa.Text, nullable=False),
        sa.Column("start", sa.DateTime, nullable=False),
        sa.Column("answer", sa.DateTime),
        sa.Column("end", sa.DateTime, nullable=False),
        sa.Column("duration", sa.Integer, nullable=False),
        sa.Column("billsec", sa.Integer, nullable=False),
        sa.Column("disposition", sa.String(16), nullable=False),
        sa.Column("amaflags", sa.String(32), nullable=False),
        sa.Column("uniqueid", sa.String(255)),
        sa.Column("userfield", sa.Text),
        sa.Column("peeraccount", sa.String(255)),
        sa.Column("linkedid", sa.String(255)),
        sa.Column("sequence", sa.Integer),
    )
    op.create_index("uq_call_legs_account_leg", "call_legs", ["account_id", "leg_key"], unique=True)
    op.create_index("ix_call_legs_account_call_key", "call_legs", ["account_id", "call_key"])
    op.create_index("ix_call_legs_call", "call_legs", ["call_history_id"])
    op.create_table(
        "import_files",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "account_id", BigId, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("lines", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index(
        "uq_import_files_account_path", "import_files", ["account_id", "path"], unique=True
    )


def downgrade() -> None:
    op.drop_table("import_files")
    op.drop_table("call_legs")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("pbx_config")
