"""call_legs loses its own foreign key to accounts: a leg already points at its call, whose
account it shares, and deleting an account still deletes its legs (accounts → calls → legs, both
ON DELETE CASCADE). That check ran once per stored leg; on PostgreSQL it was a third of the
server's time to store a leg during an import.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: SQLite's foreign keys have no names: batch mode names them by this convention to drop one.
_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        with op.batch_alter_table("call_legs", naming_convention=_NAMES) as batch:
            batch.drop_constraint("fk_call_legs_account_id_accounts", type_="foreignkey")
    else:
        op.drop_constraint("call_legs_account_id_fkey", "call_legs", type_="foreignkey")


def downgrade() -> None:
    # SQLite: named as the upgrade's convention names it, so that upgrading again finds it.
    sqlite = op.get_context().dialect.name == "sqlite"
    name = "fk_call_legs_account_id_accounts" if sqlite else "call_legs_account_id_fkey"
    with op.batch_alter_table("call_legs") as batch:
        batch.create_foreign_key(name, "accounts", ["account_id"], ["id"], ondelete="CASCADE")
