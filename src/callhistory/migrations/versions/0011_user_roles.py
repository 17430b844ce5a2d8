"""Roles: an ADMIN sees the whole account, a USER (an operator) only the calls of the extensions
it owns (`user_extensions`). Every user before this revision saw the whole account, so each
becomes an ADMIN: nobody loses or gains access by the upgrade.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "user_extensions",
        sa.Column(
            "user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("extension", sa.String(64), primary_key=True),
    )
    op.execute("UPDATE users SET type = 1")


def downgrade() -> None:
    op.drop_table("user_extensions")
