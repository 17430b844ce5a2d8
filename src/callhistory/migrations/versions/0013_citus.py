"""Sharding by account: every sync row (`call_integrations`) names its account, as every other
per-call table does, so the CRM queue is claimed one account at a time. On a database with the
citus extension the schema then becomes the distributed one (`callhistory.citus`); on plain
PostgreSQL and SQLite nothing else changes.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callhistory import citus

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("call_integrations", sa.Column("account_id", BigId))
    op.execute(
        "UPDATE call_integrations SET account_id = "
        "(SELECT calls.account_id FROM calls WHERE calls.id = call_integrations.call_history_id)"
    )
    with op.batch_alter_table("call_integrations") as batch:
        batch.alter_column("account_id", existing_type=BigId, nullable=False)
    conn = op.get_bind()
    if citus.enabled(conn):
        citus.distribute(conn)


def downgrade() -> None:
    if citus.enabled(op.get_bind()):
        raise NotImplementedError("a distributed schema cannot be downgraded below 0013")
    with op.batch_alter_table("call_integrations") as batch:
        batch.drop_column("account_id")
