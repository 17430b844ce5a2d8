"""Citus: the same schema sharded by account on a cluster (PostgreSQL with the citus extension).

Everything a company logs grows with its calls and is read one company at a time, so those tables
are distributed by `account_id` and co-located: one account's calls, legs, sync rows, counters and
rollups live in the same shard, and a query that names the account runs on that shard alone. The
small tables every request reads (accounts, users, tokens, roles, CRMs) are reference tables, a
copy on every node, so they join any shard locally. `login_failures` (no account) and Alembic's
version stay plain tables on the coordinator.

On a distributed table every primary and unique key must include the distribution column, and a
foreign key between two of them must too: so on Citus `calls`, `call_legs`, `call_integrations`
and `import_files` are keyed by (account_id, id) and the legs and sync rows point at their call by
(account_id, call_history_id). Plain PostgreSQL and SQLite keep their single-column keys.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

#: Copied to every node, in foreign-key order (a reference table may only point at another).
REFERENCE_TABLES = (
    "accounts",
    "users",
    "user_extensions",
    "personal_access_tokens",
    "integrations",
)

#: Sharded by account_id, co-located with `calls` (the first).
DISTRIBUTED_TABLES = (
    "calls",
    "call_legs",
    "call_integrations",
    "call_counts",
    "call_rollups",
    "import_files",
    "number_rollups",
    "wait_rollups",
    "callers",
    "hour_rollups",
    "gram_counts",
    "length_counts",
    "id_counts",
    "id_spans",
    "length_pairs",
    "caller_gaps",
    "missed_calls",
    "missed_rollups",
)

#: Tables whose single-column `id` primary key becomes (account_id, id).
_KEYED_BY_ID = ("calls", "call_legs", "call_integrations", "import_files")

#: (table, constraint) of the foreign keys to calls(id) that become (account_id, call_history_id).
_CALL_FOREIGN_KEYS = (
    ("call_legs", "call_legs_call_history_id_fkey"),
    ("call_integrations", "call_integrations_call_history_id_fkey"),
)


def enabled(conn: Connection) -> bool:
    """Whether the database has the citus extension (then the schema is distributed)."""
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")).first()
    return found is not None


def sharded(conn: Connection) -> bool:
    """Whether this connection's database is a Citus cluster: asked once per pooled connection."""
    if conn.dialect.name != "postgresql":
        return False
    known = conn.info.get("citus")
    if known is None:
        known = conn.info["citus"] = enabled(conn)
    return bool(known)


def _exists(conn: Connection, table: str) -> bool:
    found = conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar_one()
    return bool(found)


def distribute_table(conn: Connection, table: str) -> None:
    """Shard one table by account_id, co-located with `calls` (`calls` itself: with nothing)."""
    conn.execute(
        text("SELECT create_distributed_table(:t, 'account_id', colocate_with => :c)"),
        {"t": table, "c": "none" if table == "calls" else "calls"},
    )


def distributed(conn: Connection) -> bool:
    """Whether `calls` is already a distributed table."""
    found = conn.execute(
        text("SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'calls'::regclass")
    ).first()
    return found is not None


def distribute(conn: Connection) -> bool:
    """Turn the (migrated) schema into the distributed one, in the caller's transaction; returns
    False when it already is. Rows already stored move to their shards."""
    if distributed(conn):
        return False
    # Foreign keys to reference tables created in this transaction need one connection per node.
    conn.execute(text("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"))
    for table, constraint in _CALL_FOREIGN_KEYS:
        conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}"))
    for table in _KEYED_BY_ID:
        conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey"))
        conn.execute(text(f"ALTER TABLE {table} ADD PRIMARY KEY (account_id, id)"))
    # The primary key (account_id, id) is now what this index was.
    conn.execute(text("DROP INDEX ix_calls_account_id"))
    for table in REFERENCE_TABLES:
        conn.execute(text("SELECT create_reference_table(:t)"), {"t": table})
    # A table a later migration creates is distributed by that migration (distribute_table).
    tables = [t for t in DISTRIBUTED_TABLES if _exists(conn, t)]
    for table in tables:
        distribute_table(conn, table)
    # The rows now live in the shards; the coordinator's copies of them are dead weight.
    for table in (*REFERENCE_TABLES, *tables):
        conn.execute(text("SELECT truncate_local_data_after_distributing_table(:t)"), {"t": table})
    # Between co-located shards, as Citus allows once both sides are distributed.
    for table, constraint in _CALL_FOREIGN_KEYS:
        conn.execute(
            text(
                f"ALTER TABLE {table} ADD CONSTRAINT {constraint} "
                "FOREIGN KEY (account_id, call_history_id) REFERENCES calls (account_id, id) "
                "ON DELETE CASCADE"
            )
        )
    return True
