"""Calls by exact number and time: (account_id, src, started_at) and (account_id, dst,
started_at). They serve what looks a number up exactly: whether a caller called before (the
summary's new callers), whether a missed caller was called back (missed-unreturned), and the
calls of an operator's extensions (a USER's scope: src or dst among them). Substring search keeps
its trigram indexes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_calls_account_src_started", "calls", ["account_id", "src", "started_at"])
    op.create_index("ix_calls_account_dst_started", "calls", ["account_id", "dst", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_calls_account_dst_started", "calls")
    op.drop_index("ix_calls_account_src_started", "calls")
