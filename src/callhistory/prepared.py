"""The few statements every list request runs, compiled once and run on the driver's own cursor,
as prepared statements.

A statement built once still costs SQLAlchemy's execution layer on each run: its cache key, an
execution context, a result with its row processors. On PostgreSQL (psycopg) that was ~140 µs
of CPU on top of the driver's ~45 µs a statement (measured: `select 1`), and a call list runs
four of them (the token, the counters, the page, its integrations). A `Prepared` statement is
compiled once per dialect; on psycopg its SQL goes straight to a cursor and its rows come back
as named tuples with the same names, values and types as SQLAlchemy's rows (only statements
whose columns need no result processing qualify; the driver's types are the rows' types). Driver
errors are raised as SQLAlchemy raises them, so a dropped connection is a 503 as anywhere else,
and the engine's cursor events fire as for any statement (they are how tracing sees SQL).
Elsewhere (SQLite, whose datetimes SQLAlchemy parses from text) the statement runs as usual.

On PostgreSQL these, and only these, are prepared on the server (`schema.make_engine` turns
psycopg's automatic preparing off): the server then plans them once per connection instead of on
every run (planning was most of the server's CPU for a list page: 0.4 ms for the token's join).
A statement whose values change its best plan (`literal`: the page, whose account may hold ten
calls or ten million) has its values written into its SQL instead: each set of values is then
its own statement, planned for those values once, where a generic plan for any account would be
guessed (PostgreSQL keeps re-planning such a statement on every run, rightly).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql import Select


class _Compiled:
    """A statement's SQL for one dialect, with what each run needs."""

    def __init__(self, stmt: Select[Any], dialect: Dialect):
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        self.defaults = {
            k: v for k, v in compiled.construct_params(_check=False).items() if v is not None
        }
        self.binds: dict[str, Any] = dict(compiled._bind_processors)  # one value each here
        columns = compiled._result_columns
        self.direct = not any(
            b.expanding or b.literal_execute for b in compiled.binds.values()
        ) and all(c[3]._cached_result_processor(dialect, None) is None for c in columns)
        self.row: Any = namedtuple("Row", [c[0] for c in columns])  # type: ignore[misc]

    def params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        params = {**self.defaults, **given}
        for key, process in self.binds.items():
            if key in params:
                params[key] = process(params[key])
        return params


class Prepared:
    """A SELECT built once, for `rows` and `first`; `literal`: its parameters, all integers, are
    written into its SQL on PostgreSQL (see the module)."""

    def __init__(self, stmt: Select[Any], literal: bool = False):
        self.stmt, self.literal = stmt, literal
        self._compiled: dict[Dialect, _Compiled] = {}

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> Sequence[Any]:
        dialect = conn.dialect
        if dialect.driver != "psycopg":
            return conn.execute(self.stmt, params).all()
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = _Compiled(self.stmt, dialect)
        if not compiled.direct:
            return conn.execute(self.stmt, params).all()
        if not conn.in_transaction():  # as SQLAlchemy's autobegin would
            conn.begin()
        sql, values = compiled.sql, compiled.params(params)
        given: dict[str, Any] | None = values
        if self.literal:
            if any(type(v) is not int for v in values.values()):
                raise TypeError("only integers are written into a statement's SQL")
            sql, given = sql % values, None  # pyformat: `%(name)s` holes, `%%` for a `%`
        make = compiled.row._make
        driver: Any = conn.connection.dbapi_connection
        cursor = driver.cursor(row_factory=lambda _cursor: make)
        events = conn.dispatch  # listeners see the statement as they would any other
        try:
            events.before_cursor_execute(conn, cursor, sql, given, None, False)
            cursor.execute(sql, given, prepare=True)
            events.after_cursor_execute(conn, cursor, sql, given, None, False)
            return cursor.fetchall()  # type: ignore[no-any-return]
        except Exception as exc:  # the driver's error, wrapped (and the connection invalidated)
            conn._handle_dbapi_exception(exc, sql, given, cursor, None)
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any | None:
        found = self.rows(conn, params)
        return found[0] if found else None
