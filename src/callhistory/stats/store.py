"""Every SQL statement of the statistics: calls per quarter-hour bucket (from the rollups where
they can answer), and per external number. SQLAlchemy Core."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    literal_column,
    select,
    union_all,
)

from callhistory import store, tallies
from callhistory.models import CallStatus, CallType
from callhistory.query import CallQuery
from callhistory.schema import calls
from callhistory.stats.params import StatsQuery
from callhistory.store import AnyRow, Scope


def _call_query(query: StatsQuery) -> CallQuery:
    """The period as the Call History API's query (whose totals read the rollups)."""
    return CallQuery(started_from=query.started_from, started_to=query.started_to)


def _period(query: StatsQuery) -> list[ColumnElement[bool]]:
    return [calls.c.started_at >= query.started_from, calls.c.started_at <= query.started_to]


def _selected(scope: Scope, query: StatsQuery) -> list[ColumnElement[bool]]:
    """The scope's calls in the period, on the query's external numbers if it names any."""
    conditions = [*scope.conditions(), *_period(query)]
    if query.external_numbers:
        conditions.append(calls.c.external_number.in_(query.external_numbers))
    return conditions


#: Whole seconds from a call's start to its answer, in SQL.
WAIT_SQL = {
    "postgresql": "CAST(extract(epoch FROM answered_at - started_at) AS integer)",
    "sqlite": "CAST(strftime('%s', answered_at) AS integer)"
    " - CAST(strftime('%s', started_at) AS integer)",
}


def summary_rows(conn: Connection, scope: Scope, query: StatsQuery) -> Sequence[AnyRow]:
    """Per type: calls, answered, the summed and longest wait before the answer, the summed talk
    time, and how many were answered within the query's `sla_seconds`."""
    wait: ColumnElement[int] = literal_column(WAIT_SQL[conn.dialect.name], Integer)
    answered = and_(calls.c.status == int(CallStatus.ANSWERED), calls.c.answered_at.is_not(None))
    stmt = (
        select(
            calls.c.type,
            func.count().label("calls"),
            func.sum(case((answered, 1), else_=0)).label("answered"),
            func.sum(case((answered, wait))).label("wait_total"),
            func.max(case((answered, wait))).label("wait_max"),
            func.sum(case((answered, calls.c.conversation), else_=0)).label("talk_total"),
            func.sum(case((and_(answered, wait <= query.sla_seconds), 1), else_=0)).label(
                "within_sla"
            ),
        )
        .where(*_selected(scope, query))
        .group_by(calls.c.type)
    )
    return conn.execute(stmt).all()


@contextmanager
def _grouped_by_sorting(conn: Connection) -> Iterator[None]:
    """PostgreSQL: group by sorting, not hashing, in the statements inside. Grouping a month's
    callers finds as many groups as calls (each caller a new number), far beyond the planner's
    estimate; a hash aggregate then spills to disk in hundreds of thousands of batches (424 s
    for 257k callers at 1M calls, 1.6 s sorted). A sort spills in a few runs whatever the count."""
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.exec_driver_sql("SET LOCAL enable_hashagg = off")
    try:
        yield
    finally:
        conn.exec_driver_sql("RESET enable_hashagg")


def callers(conn: Connection, scope: Scope, query: StatsQuery) -> tuple[int, int]:
    """(unique, new): the numbers that called in (incoming calls) in the period, and those of
    them that had never called the account before it (whoever in the account they reached)."""
    numbers = (
        select(calls.c.src.label("number"))
        .where(*_selected(scope, query), calls.c.type == int(CallType.INCOMING), calls.c.src != "")
        .distinct()
        .subquery()
    )
    before = calls.alias("before")
    earlier = exists().where(
        before.c.account_id == scope.account_id,
        before.c.src == numbers.c.number,
        before.c.started_at < query.started_from,
    )
    stmt = select(func.count(), func.sum(case((earlier, 0), else_=1))).select_from(numbers)
    with _grouped_by_sorting(conn):
        unique, new = conn.execute(stmt).one()
    return int(unique), int(new or 0)


def local_counts(
    conn: Connection, scope: Scope, query: StatsQuery, zone: ZoneInfo, per: int
) -> Sequence[AnyRow]:
    """The scope's calls in the period per (local hour or day key, type, status), counted in
    the database: `per` is 4 (hours) or 96 (days) quarter-hours; `tallies.key_start` reads a
    key. Whole buckets come from the rollups, unless external numbers filter or the scope is
    narrower than the account (the rollups keep neither); the partial buckets at the ends from
    the calls."""
    dialect = conn.dialect.name
    period = tallies.Period.of(query.started_from, query.started_to)
    if query.external_numbers or period is None or not scope.whole:
        parts = store.by_bucket(dialect, *_selected(scope, query)).subquery()
    else:
        parts = store.period_buckets(dialect, scope.account_id, _call_query(query), period)
    shifts = tallies.offsets(
        zone, tallies.bucket_of(query.started_from), tallies.bucket_of(query.started_to)
    )
    key = tallies.local_key(parts.c.bucket, shifts, per).label("key")
    summed = cast(func.sum(parts.c.calls), BigInteger)  # PostgreSQL sums bigints as numeric
    stmt = select(key, parts.c.type, parts.c.status, summed).group_by(
        key, parts.c.type, parts.c.status
    )
    return conn.execute(stmt).all()


def by_external_number(conn: Connection, scope: Scope, query: StatsQuery) -> Sequence[AnyRow]:
    """Calls in the period per (external_number, type, status); internal calls left out."""
    conditions = [
        *_selected(scope, query),
        calls.c.type != int(CallType.INTERNAL),
        calls.c.external_number.is_not(None),
        calls.c.external_number != "",
    ]
    stmt = (
        select(calls.c.external_number, calls.c.type, calls.c.status, func.count().label("calls"))
        .where(*conditions)
        .group_by(calls.c.external_number, calls.c.type, calls.c.status)
    )
    return conn.execute(stmt).all()


def counts(conn: Connection, scope: Scope, query: StatsQuery) -> Counter[tuple[int, int]]:
    """Calls in the period by (type, status): the Call History API's strategies (counters,
    rollups), or grouped calls when external numbers filter."""
    if not query.external_numbers:
        return store.counts(conn, scope, _call_query(query))
    stmt = store.grouped(*_selected(scope, query))
    return Counter({(t, s): n for t, s, n in conn.execute(stmt)})


def by_number(conn: Connection, scope: Scope, query: StatsQuery) -> Sequence[AnyRow]:
    """Calls in the period per (number, direction): `outgoing` by their `src` (outgoing and
    internal calls), `incoming` by their `dst` (incoming and internal calls); count and summed
    duration and conversation."""
    conditions = _selected(scope, query)
    if query.status is not None:
        conditions.append(calls.c.status == int(query.status))
    sides = []
    for column, direction, kinds in (
        (calls.c.src, "outgoing", (CallType.OUTGOING, CallType.INTERNAL)),
        (calls.c.dst, "incoming", (CallType.INCOMING, CallType.INTERNAL)),
    ):
        sides.append(
            select(
                column.label("number"),
                literal(direction).label("direction"),
                func.count().label("calls"),
                func.sum(calls.c.duration).label("duration"),
                func.sum(calls.c.conversation).label("conversation"),
            )
            .where(*conditions, calls.c.type.in_([int(k) for k in kinds]))
            .group_by(column)
        )
    return conn.execute(union_all(*sides)).all()


def _missed_conditions(scope: Scope, query: StatsQuery) -> list[ColumnElement[bool]]:
    return [
        *_selected(scope, query),
        calls.c.type == int(CallType.INCOMING),
        calls.c.status == int(CallStatus.NOT_ANSWERED),
        calls.c.src != "",
    ]


def _reached(
    dialect: str, account_id: int, number: Any, last_missed: Any, hours: int
) -> ColumnElement[bool]:
    """Whether the number was reached within `hours` after `last_missed`: called back (an
    outgoing call to it) or got through (an answered incoming call from it). Two probes of the
    exact-number indexes (migration 0012), whoever in the account made the call."""
    later: Any = calls.alias("later")
    if dialect == "postgresql":
        deadline = later.c.started_at <= last_missed + func.make_interval(0, 0, 0, 0, hours)
    else:  # SQLite: whole seconds since the epoch (its stored times carry microseconds)
        epoch = func.strftime("%s", later.c.started_at)
        deadline = cast(epoch, Integer) <= cast(func.strftime("%s", last_missed), Integer) + (
            hours * 3600
        )
    window = [
        later.c.account_id == account_id,
        later.c.started_at > last_missed,
        deadline,
    ]
    called_back = exists().where(
        *window, later.c.type == int(CallType.OUTGOING), later.c.dst == number
    )
    got_through = exists().where(
        *window,
        later.c.type == int(CallType.INCOMING),
        later.c.status == int(CallStatus.ANSWERED),
        later.c.src == number,
    )
    return called_back | got_through


def last_missed_ids(
    conn: Connection, scope: Scope, query: StatsQuery, numbers: Sequence[str]
) -> dict[str, int]:
    """The id of each number's last missed call in the period (the latest start, then id)."""
    latest: dict[str, tuple[datetime, int]] = {}
    for among in store.one_of(conn, calls.c.src, list(numbers)):
        stmt = select(calls.c.src, calls.c.started_at, calls.c.id).where(
            *_missed_conditions(scope, query), among
        )
        for number, started_at, pk in conn.execute(stmt):
            if number not in latest or (started_at, pk) > latest[number]:
                latest[number] = (started_at, pk)
    return {number: pk for number, (_, pk) in latest.items()}


def unreturned_page(
    conn: Connection, scope: Scope, query: StatsQuery
) -> tuple[list[dict[str, Any]], int]:
    """The query's page of missed callers nobody reached (each with `last_call_id`), latest miss
    first, and how many there are in all, in one query. The missed
    calls are the scope's; a call back counts from anyone in the account (an operator's missed
    caller whom a colleague rang back is not waiting)."""
    missed = (
        select(
            calls.c.src.label("number"),
            func.count().label("missed_count"),
            func.min(calls.c.started_at).label("first_missed_at"),
            func.max(calls.c.started_at).label("last_missed_at"),
        )
        .where(*_missed_conditions(scope, query))
        .group_by(calls.c.src)
        .cte("missed")
    )
    reached = _reached(
        conn.dialect.name, scope.account_id, missed.c.number, missed.c.last_missed_at,
        query.within_hours,
    )  # fmt: skip
    waiting = select(missed).where(~reached)
    with _grouped_by_sorting(conn):  # a month's missed callers: as many groups as calls
        rows = conn.execute(
            waiting.add_columns(func.count().over().label("waiting"))
            .order_by(missed.c.last_missed_at.desc(), missed.c.number)
            .limit(query.per_page)
            .offset((query.page - 1) * query.per_page)
        ).all()
        if rows:
            total = rows[0].waiting
        else:  # a page past the end still says how many there are
            total = conn.execute(select(func.count()).select_from(waiting.subquery())).scalar_one()
    page = [{k: v for k, v in row._asdict().items() if k != "waiting"} for row in rows]
    last_ids = last_missed_ids(conn, scope, query, [row["number"] for row in page])
    return [{**row, "last_call_id": last_ids[row["number"]]} for row in page], int(total)
