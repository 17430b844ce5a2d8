"""A batch of rows as set-based SQL on PostgreSQL: the rows are COPYed into a temporary staging
table, then one INSERT ... SELECT or UPDATE ... FROM moves them into the real table.

A batch of thousands of calls or legs otherwise goes as one INSERT per row (the driver's
executemany: each row its own round of parsing and planning on the server) or as multi-row
VALUES statements with tens of thousands of parameters, which the driver re-parses in Python.
COPY's rows are formatted by the driver's C code, and the server plans each statement once.
SQLite keeps executemany, already one C loop in the same process; a big batch of inserts goes
to the driver as plain tuples, past SQLAlchemy's processing of each parameter. A Citus cluster
keeps the multi-row VALUES too: a constant account per statement routes it to one shard, while
a staging table lives on the coordinator alone.

A staging table is created once per database session (`ON COMMIT DELETE ROWS`: it is empty again
when the transaction ends, whether it commits or rolls back) and emptied before each batch, since
one transaction may stage several (`demo` stores its calls 1,000 at a time).
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from functools import cache
from operator import itemgetter
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    Table,
    any_,
    bindparam,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.types import ARRAY, BigInteger, Text

from callhistory import citus
from callhistory.schema import dialect_insert

#: Rows below which a batch goes as before: a staging table costs two more statements, more
#: than a few rows' INSERTs (the AMI feed stores a leg or two at a time).
MIN_ROWS = 100


def plan_generically(conn: Connection) -> None:
    """For the rest of this transaction, let PostgreSQL reuse its plans: the engine forces a
    custom plan per statement (right for the searches, whose best plan depends on the values),
    and that makes the server plan again the foreign-key check behind every inserted row (a
    leg's call, a call's account): measured, 21 µs a leg instead of 3. A batch of writes has
    no search to spoil."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = auto")


def enabled(conn: Connection, rows: Sequence[object]) -> bool:
    """Whether this batch goes through a staging table: on plain PostgreSQL, when it is big."""
    return len(rows) >= MIN_ROWS and conn.dialect.name == "postgresql" and not citus.sharded(conn)


def _stage(
    conn: Connection,
    table: Table,
    names: Sequence[str],
    rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
) -> str:
    """COPY the rows' `names` (and their ordinal `n`) into a staging table shaped like `table`
    (`pk` stands for its `id`); returns the staging table's name. Rows are mappings, or
    sequences of the values of `names` in that order."""
    quote = conn.dialect.identifier_preparer.quote
    stage = f"stage_{table.name}_{'update' if 'pk' in names else 'insert'}"
    columns = ", ".join(quote(name) for name in names)
    shape = ", ".join("id AS pk" if name == "pk" else quote(name) for name in names)
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS"
        f" SELECT {shape}, CAST(0 AS bigint) AS n FROM {quote(table.name)} WITH NO DATA"
    )
    # Emptied at commit only: an earlier batch of the same transaction must not come back.
    conn.exec_driver_sql(f"TRUNCATE {stage}")
    driver = conn.connection.driver_connection
    assert driver is not None  # a live connection inside a transaction
    copying = f"COPY {stage} ({columns}, n) FROM STDIN (FORMAT BINARY)"
    with driver.cursor() as cursor, cursor.copy(copying) as copy:
        copy.set_types([*_copy_types(conn.dialect, table, tuple(names)), "bigint"])
        values = _values(names, rows)
        for n, row in enumerate(rows):
            copy.write_row((*values(row), n))
    return stage


def _values(
    names: Sequence[str], rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]]
) -> Callable[[Any], Sequence[Any]]:
    """How to read a row's values in the order of `names`: by name from a mapping; a sequence
    (a tuple made in that order, cheaper than a dict per row) as it is."""
    if rows and isinstance(rows[0], Mapping):
        get = itemgetter(*names)
        return (lambda row: (get(row),)) if len(names) == 1 else get
    return tuple


@cache
def _copy_types(dialect: Dialect, table: Table, names: tuple[str, ...]) -> list[str]:
    """The PostgreSQL types of the columns `names` (`pk` is `id`), which a binary COPY must be
    told: binary rows cost the driver a quarter of what text ones do (timestamps above all)."""
    compiler = dialect.type_compiler_instance
    columns = [table.c["id" if name == "pk" else name] for name in names]
    return [compiler.process(c.type).partition("(")[0].lower() for c in columns]


def insertable(conn: Connection, rows: Sequence[object]) -> bool:
    """Whether `insert` takes this batch: what goes through a staging table on PostgreSQL, and
    a big batch on SQLite (handed to the driver as plain tuples)."""
    return enabled(conn, rows) or (len(rows) >= MIN_ROWS and conn.dialect.name == "sqlite")


def insert(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
    *,
    conflict: Sequence[str],
    returning: Sequence[str] = (),
    names: Sequence[str] = (),
) -> Sequence[Any]:
    """INSERT the rows (all with the same keys) in their order, skipping those that conflict on
    the unique index of `conflict`; returns `returning` of the inserted ones (named rows). With
    `names`, each row is a tuple of those columns' values, in that order."""
    names = list(names) or list(cast(Mapping[str, Any], rows[0]))
    if conn.dialect.name == "sqlite":
        return _insert_sqlite(conn, table, names, rows, conflict, returning)
    quote = conn.dialect.identifier_preparer.quote
    stage = _stage(conn, table, names, rows)
    columns = ", ".join(quote(name) for name in names)
    sql = (
        f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns} FROM {stage} ORDER BY n"
        f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    )
    if not returning:
        conn.execute(text(sql))
        return []
    return conn.execute(text(sql + f" RETURNING {', '.join(returning)}")).all()


def _insert_sqlite(
    conn: Connection,
    table: Table,
    names: Sequence[str],
    rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
    conflict: Sequence[str],
    returning: Sequence[str],
) -> Sequence[Any]:
    """`insert` on SQLite: the rows go to the driver as tuples of the values SQLAlchemy would
    bind (its processing of each parameter of each row costs more than SQLite's insert), all in
    one `executemany`. The driver returns no rows from that: `returning` is read afterwards, as
    the rows past the highest rowid from before, once the first row's own INSERT holds the
    database's write lock (no other connection can insert until the commit, and SQLite numbers
    new rows past the highest). A statement per row, to return its row, cost 15 of the 39 s a
    300,000-line import spent (profiled)."""
    quote = conn.dialect.identifier_preparer.quote
    dialect = conn.dialect
    processors = [_sqlite_processor(dialect, table.c[n].type) for n in names]
    converted = [(i, p) for i, p in enumerate(processors) if p is not None]
    values = _values(names, rows)
    params = []
    for row in rows:
        value = list(values(row))
        for i, process in converted:
            value[i] = process(value[i])
        params.append(value)
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)})"
        f" VALUES ({', '.join('?' * len(names))}) ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if not returning:
            cursor.executemany(sql, params)
            return []
        inserted = namedtuple("inserted", returning)  # type: ignore[misc]
        chosen = ", ".join(quote(n) for n in returning)
        cursor.execute(f"{sql} RETURNING {chosen}", params[0])
        found = [inserted(*row) for row in cursor.fetchall()]
        (highest,) = cursor.execute(f"SELECT max(rowid) FROM {quote(table.name)}").fetchone()
        cursor.executemany(sql, params[1:])
        added = cursor.execute(
            f"SELECT {chosen} FROM {quote(table.name)} WHERE rowid > ? ORDER BY rowid",
            (highest or 0,),
        )
        return found + [inserted(*row) for row in added]
    finally:
        cursor.close()


def _sqlite_processor(dialect: Dialect, column_type: Any) -> Callable[[Any], Any] | None:
    """SQLAlchemy's bind processor of a column on SQLite; for a DATETIME in its default storage
    format, the same text made by `isoformat` in C (formatting a call's and its legs' times
    through a dict took 1.8 s of the 17.6 s a 300,000-line import spent writing)."""
    impl = column_type.dialect_impl(dialect)
    process: Callable[[Any], Any] | None = impl.bind_processor(dialect)
    if not isinstance(impl, SQLITE_DATETIME) or process is None:
        return process
    if impl._storage_format != SQLITE_DATETIME._storage_format:
        return process
    slow = process

    def fast(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is None:
            return value.isoformat(" ", "microseconds")
        return slow(value)

    return fast


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict: Sequence[str],
    assignments: Mapping[str, str],
) -> None:
    """INSERT the rows (all with the same keys) in their order; where one's `conflict` columns
    match a row already there, set that row's columns to `assignments`' SQL instead (which reads
    the row there as `t` and the one inserted as `excluded`)."""
    quote = conn.dialect.identifier_preparer.quote
    names = list(rows[0])
    stage = _stage(conn, table, names, rows)
    columns = ", ".join(quote(name) for name in names)
    sets = ", ".join(f"{quote(name)} = {sql}" for name, sql in assignments.items())
    conn.execute(
        text(
            f"INSERT INTO {quote(table.name)} AS t ({columns}) SELECT {columns} FROM {stage}"
            f" ORDER BY n ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {sets}"
        )
    )


def put(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str],
    summed: bool,
) -> None:
    """Upsert the rows (every column of the table, all with the same keys) by `keys`: where a
    row is there, its other columns are added to (`summed`) or replaced; a big batch on
    PostgreSQL through a staging table."""
    if not rows:
        return
    values = [column.name for column in table.columns if column.name not in keys]
    if enabled(conn, rows):
        sql = "t.{0} + excluded.{0}" if summed else "excluded.{0}"
        upsert(conn, table, rows, conflict=keys, assignments={n: sql.format(n) for n in values})
        return
    insert = dialect_insert(conn, table)
    new = {name: insert.excluded[name] for name in values}
    if summed:
        new = {name: table.c[name] + value for name, value in new.items()}
    conn.execute(insert.on_conflict_do_update(index_elements=keys, set_=new), rows)


def delete(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """DELETE the table's rows whose columns equal one of the rows' (all with the same keys)."""
    if rows:
        matching = [table.c[name] == bindparam(name) for name in rows[0]]
        conn.execute(table.delete().where(*matching), rows)


def update(
    conn: Connection, table: Table, account_id: int, rows: Sequence[Mapping[str, Any]]
) -> None:
    """UPDATE the account's rows of `table` by their `pk` (each row: `pk` and the new values)."""
    quote = conn.dialect.identifier_preparer.quote
    names = list(rows[0])
    stage = _stage(conn, table, names, rows)
    assignments = ", ".join(f"{quote(n)} = v.{quote(n)}" for n in names if n != "pk")
    conn.execute(
        text(
            f"UPDATE {quote(table.name)} AS t SET {assignments} FROM {stage} AS v"
            " WHERE t.account_id = :account AND t.id = v.pk"
        ),
        {"account": account_id},
    )


K = TypeVar("K", str, int)

#: Keys per `IN (...)` list: well under SQLite's bound-parameter cap.
IN_CHUNK = 500


def in_chunks(keys: Sequence[K]) -> Iterable[Sequence[K]]:
    """`keys` in slices small enough for one `IN (...)` list."""
    for start in range(0, len(keys), IN_CHUNK):
        yield keys[start : start + IN_CHUNK]


def one_of(conn: Connection, column: Any, keys: Sequence[str]) -> Iterator[ColumnElement[bool]]:
    """`column IN keys` as one condition per statement to run: on PostgreSQL a single
    `= ANY(array)` (one parameter, however many keys), elsewhere `IN` lists of IN_CHUNK keys."""
    if conn.dialect.name != "postgresql":
        yield from (column.in_(chunk) for chunk in in_chunks(keys))
    elif keys:
        yield column == any_(literal(list(keys), ARRAY(Text)))


def listed(conn: Connection, keys: Sequence[str] | Sequence[int]) -> tuple[Any, Any]:
    """`keys` as a table of one column, to select from (each key a row), and that column:
    PostgreSQL's `unnest` of one array parameter (of text), SQLite's `json_each` of one JSON
    text (of any keys)."""
    if conn.dialect.name == "postgresql":
        keyed = func.unnest(literal(list(keys), ARRAY(Text))).table_valued("key").render_derived()
        return keyed, keyed.c.key
    found = func.json_each(json.dumps(list(keys))).table_valued("value")
    return found, found.c.value


def among_ids(conn: Connection, column: Any, ids: Sequence[int]) -> ColumnElement[bool]:
    """`column IN ids` as one parameter, however many ids: PostgreSQL's `= ANY(array)`, SQLite's
    `IN (SELECT value FROM json_each(list))`."""
    among: ColumnElement[bool]
    if conn.dialect.name == "postgresql":
        among = column == any_(literal(list(ids), ARRAY(BigInteger)))
    else:
        among = column.in_(select(listed(conn, ids)[1]))
    return among


@contextmanager
def _planned_without(conn: Connection, setting: str) -> Iterator[None]:
    """PostgreSQL: the planner `setting` (an `enable_*`) off in the statements inside."""
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.exec_driver_sql(f"SET LOCAL {setting} = off")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"RESET {setting}")


def grouped_by_sorting(conn: Connection) -> AbstractContextManager[None]:
    """PostgreSQL: group by sorting, not hashing, in the statements inside. Grouping a month's
    callers (or an account's numbers) finds as many groups as calls (each caller a new number),
    far beyond the planner's estimate; a hash aggregate then spills to disk in hundreds of
    thousands of batches (424 s for 257k callers at 1M calls, 1.6 s sorted). A sort spills in a
    few runs whatever the count."""
    return _planned_without(conn, "enable_hashagg")


def probing_btrees(conn: Connection) -> AbstractContextManager[None]:
    """PostgreSQL: no bitmap scans in the statements inside, so that `number = ANY(thousands of
    numbers)` probes the numbers' B-tree index rather than their trigram index (which answers
    equality too, and which the planner picked for a batch's numbers: 56 s a batch of an
    import, each number's trigrams looked up and every match rechecked)."""
    return _planned_without(conn, "enable_bitmapscan")
