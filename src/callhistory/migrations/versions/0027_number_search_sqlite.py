"""SQLite: a full-text index of the calls' numbers by trigram (FTS5's `trigram` tokenizer), kept by
triggers, so that a search for a substring of three characters or more finds its few calls
without testing every call of the account: `filter[src]=1234` at 1M calls, 251 matches, was a
scan of 55-90 ms. PostgreSQL has its trigram GIN indexes (0001).

The table is an external-content one (`content='calls'`): it stores the index alone, and reads
the numbers from `calls` when rebuilt. Its triggers are the ones SQLite's documentation gives for
such a table: the old values are removed before the new are added.

Revision ID: 0027
Revises: 0026
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

_COLUMNS = "src, dst, external_number"
_ADD = (
    f"INSERT INTO call_numbers(rowid, {_COLUMNS})"
    " VALUES (new.id, new.src, new.dst, new.external_number);"
)
_REMOVE = (
    f"INSERT INTO call_numbers(call_numbers, rowid, {_COLUMNS})"
    " VALUES ('delete', old.id, old.src, old.dst, old.external_number);"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        f"CREATE VIRTUAL TABLE call_numbers USING fts5({_COLUMNS}, content='calls',"
        " content_rowid='id', tokenize='trigram', columnsize=0)"
    )
    op.execute(f"CREATE TRIGGER call_numbers_added AFTER INSERT ON calls BEGIN {_ADD} END")
    op.execute(f"CREATE TRIGGER call_numbers_removed AFTER DELETE ON calls BEGIN {_REMOVE} END")
    op.execute(
        f"CREATE TRIGGER call_numbers_changed AFTER UPDATE OF {_COLUMNS} ON calls"
        " WHEN old.src IS NOT new.src OR old.dst IS NOT new.dst"
        " OR old.external_number IS NOT new.external_number"
        f" BEGIN {_REMOVE} {_ADD} END"
    )
    op.execute("INSERT INTO call_numbers(call_numbers) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for trigger in ("added", "removed", "changed"):
        op.execute(f"DROP TRIGGER call_numbers_{trigger}")
    op.execute("DROP TABLE call_numbers")
