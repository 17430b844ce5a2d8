"""Every SQL statement of the statistics: calls per quarter-hour bucket (from the rollups where
they can answer), and per external number. SQLAlchemy Core."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    or_,
    select,
    union_all,
)

from callhistory import bulk, store, tallies
from callhistory.models import CallStatus, CallType
from callhistory.query import CallQuery
from callhistory.schema import (
    call_rollups,
    caller_gaps,
    calls,
    hour_rollups,
    missed_calls,
    missed_rollups,
    number_rollups,
    wait_rollups,
)
from callhistory.schema import callers as callers_table
from callhistory.stats.params import StatsQuery
from callhistory.store import AnyRow, Scope


def _call_query(query: StatsQuery) -> CallQuery:
    """The period as the Call History API's query (whose totals read the rollups)."""
    return CallQuery(started_from=query.started_from, started_to=query.started_to)


def _period(query: StatsQuery) -> list[ColumnElement[bool]]:
    return [calls.c.started_at >= query.started_from, calls.c.started_at <= query.started_to]


def _selected(scope: Scope, query: StatsQuery, period: bool = True) -> list[ColumnElement[bool]]:
    """The scope's calls in the period (or at any time), on the query's external numbers if it
    names any."""
    conditions = [*scope.conditions(), *(_period(query) if period else [])]
    if query.external_numbers:
        conditions.append(calls.c.external_number.in_(query.external_numbers))
    return conditions


def _extent(conn: Connection, scope: Scope, query: StatsQuery) -> tuple[datetime, datetime] | None:
    """The period narrowed to two days around the quarter-hours the account has calls in (its
    first to its last, from `call_rollups`' key), or None when it has none in the period: a
    period of ten years is cut into no more days than the account's calls span, and every local
    day that holds calls stays whole."""
    cr = call_rollups.c
    first, last = conn.execute(
        select(func.min(cr.bucket), func.max(cr.bucket)).where(cr.account_id == scope.account_id)
    ).one()
    if first is None:
        return None
    lo = max(query.started_from, tallies.start_of(first - 2 * tallies.DAY))
    hi = min(
        query.started_to, tallies.start_of(last + 1 + 2 * tallies.DAY) - timedelta(microseconds=1)
    )
    return (lo, hi) if lo <= hi else None


def _days(
    conn: Connection, scope: Scope, query: StatsQuery, zone: ZoneInfo, per: int = tallies.DAY
) -> tallies.Days | None:
    """The period (narrowed to the account's calls) cut at the account's whole local days (or
    hours), when the rollups by local day (hour) can answer: for the whole account (they do not
    know who in it made a call), over at least one whole day (hour)."""
    if not scope.whole or (extent := _extent(conn, scope, query)) is None:
        return None
    return tallies.Days.of(*extent, zone, per)


def _rolled(
    scope: Scope, days: tallies.Days, side: int | tuple[int, ...], numbers: Sequence[str] = ()
) -> list[ColumnElement[bool]]:
    """The account's `number_rollups` rows of one side (or several) over the whole days (of
    `numbers`)."""
    sides = side if isinstance(side, tuple) else (side,)
    conditions = [
        number_rollups.c.account_id == scope.account_id,
        number_rollups.c.side.in_(sides),
        days.whole(number_rollups.c.day),
        number_rollups.c.calls != 0,
    ]
    if numbers:
        conditions.append(number_rollups.c.number.in_(numbers))
    return conditions


def _span(dialect: str, scope: Scope, lo: datetime, hi: datetime) -> Any:
    """(bucket, type, status, calls) of the account's calls started in lo..hi (inclusive): its
    whole quarter-hours from `call_rollups`, the rest from the calls."""
    period = tallies.Period.of(lo, hi)
    if period is None:
        inside = [calls.c.started_at >= lo, calls.c.started_at <= hi]
        return store.by_bucket(dialect, *scope.conditions(), *inside).subquery()
    query = CallQuery(started_from=lo, started_to=hi)
    return store.period_buckets(dialect, scope.account_id, query, period)


def _union(parts: Sequence[Any]) -> Any:
    """The union of `parts` (SELECTs of the same columns) as a subquery."""
    selected: Any = union_all(*parts) if len(parts) > 1 else parts[0]
    return selected.subquery()


def _summed(
    parts: Sequence[Any], keys: Sequence[str], measures: Sequence[str], maxima: Sequence[str] = ()
) -> Any:
    """The union of `parts` (SELECTs of the same columns) grouped by `keys`, `measures` summed
    and `maxima` the largest."""
    union = _union(parts)
    group = [union.c[k] for k in keys]
    sums = [cast(func.sum(union.c[m]), BigInteger).label(m) for m in measures]  # not numeric
    tops = [func.max(union.c[m]).label(m) for m in maxima]
    return select(*group, *sums, *tops).group_by(*group)


def _answer_measures(dialect: str, sla: int) -> list[Any]:
    """What `summary_rows` sums of a group of calls: calls, answered, the summed and longest wait
    before the answer, the summed talk time, and the answered within `sla` seconds."""
    wait: ColumnElement[int] = literal_column(tallies.WAIT_SQL[dialect], Integer)
    answered = tallies.was_answered()
    return [
        func.count().label("calls"),
        func.sum(case((answered, 1), else_=0)).label("answered"),
        func.sum(case((answered, wait))).label("wait_total"),
        func.max(case((answered, wait))).label("wait_max"),
        func.sum(case((answered, calls.c.conversation), else_=0)).label("talk_total"),
        func.sum(case((and_(answered, wait <= sla), 1), else_=0)).label("within_sla"),
    ]


@dataclass
class TypeSummary:
    """`summary_rows`' row of one type of calls."""

    type: int
    calls: int = 0
    answered: int = 0
    wait_total: int | None = None
    wait_max: int | None = None
    talk_total: int = 0
    within_sla: int = 0


def summary_parts(
    conn: Connection, scope: Scope, query: StatsQuery, zone: ZoneInfo
) -> tuple[Sequence[Any], tuple[int, int], Sequence[Any]]:
    """What the summary reports: `summary_rows`, `callers` and the local hours (`local_counts`).
    Where the rollups cannot answer (an operator's calls, or external numbers), all three from
    one reading of the calls (`_summary_of_calls`)."""
    if scope.whole and not query.external_numbers:
        return (
            summary_rows(conn, scope, query, zone),
            callers(conn, scope, query, zone),
            local_counts(conn, scope, query, zone, tallies.HOUR),
        )
    return _summary_of_calls(conn, scope, query, zone)


def _summary_of_calls(
    conn: Connection, scope: Scope, query: StatsQuery, zone: ZoneInfo
) -> tuple[Sequence[Any], tuple[int, int], Sequence[Any]]:
    """`summary_parts` from the calls: the scope's calls in the period read once into a
    materialized common table expression, then grouped by local hour and type (the summary's
    measures, the missed calls), and their distinct callers looked up in `callers` (the
    new ones), in one statement. Three statements read an operator's month three times (most of
    the time is finding each call's row): measured in turns, an operator's month of 11,700 calls
    (1M on SQLite) 94 → 77 ms median, of 118,000 (10M on PostgreSQL) 2,279 → 1,317 ms, half of
    it the 52,000 callers looked up in `callers`."""
    dialect, c = conn.dialect.name, calls.c
    shifts = tallies.offsets(
        zone, tallies.bucket_of(query.started_from), tallies.bucket_of(query.started_to)
    )
    bucket = literal_column(tallies.BUCKET_SQL[dialect], Integer)
    answered = tallies.was_answered()
    wait: ColumnElement[int] = literal_column(tallies.WAIT_SQL[dialect], Integer)
    incoming = and_(c.type == int(CallType.INCOMING), c.src != "")
    chosen = (
        select(
            tallies.local_key(bucket, shifts, tallies.HOUR).label("hour"),
            c.type,
            c.status,
            case((answered, wait)).label("wait"),
            case((answered, c.conversation), else_=0).label("talk"),
            case((incoming, c.src)).label("caller"),
        )
        .where(*_selected(scope, query))
        .cte("chosen")
        .prefix_with("MATERIALIZED")
    )
    ch = chosen.c
    missed = case((ch.status == int(CallStatus.NOT_ANSWERED), 1), else_=0)
    grouped = select(
        ch.hour,
        ch.type,
        func.sum(missed).label("missed"),
        func.count().label("calls"),
        func.count(ch.wait).label("answered"),
        func.sum(ch.wait).label("wait_total"),
        func.max(ch.wait).label("wait_max"),
        func.sum(ch.talk).label("talk_total"),
        func.sum(case((ch.wait <= query.sla_seconds, 1), else_=0)).label("within_sla"),
    ).group_by(ch.hour, ch.type)
    numbers = select(ch.caller.label("number")).where(ch.caller.is_not(None)).distinct().subquery()
    earlier = exists().where(
        callers_table.c.account_id == scope.account_id,
        callers_table.c.number == numbers.c.number,
        callers_table.c.first_at < query.started_from,
    )
    nothing = literal(None, Integer)
    distinct = select(  # the row of the callers: no hour; their count, the new ones
        nothing, nothing, nothing, func.count(), func.sum(case((earlier, 0), else_=1)),
        nothing, nothing, nothing, nothing,
    ).select_from(numbers)  # fmt: skip
    types: dict[int, TypeSummary] = {}
    hours: list[tuple[int, int, int, int]] = []
    unique = fresh = 0
    for row in conn.execute(union_all(grouped, distinct)):
        if row.hour is None:
            unique, fresh = int(row.calls), int(row.answered or 0)
            continue
        found = types.setdefault(row.type, TypeSummary(row.type))
        found.calls += row.calls
        found.answered += row.answered
        found.talk_total += row.talk_total
        found.within_sla += row.within_sla
        if row.wait_total is not None:
            found.wait_total = (found.wait_total or 0) + row.wait_total
            found.wait_max = max(found.wait_max or 0, row.wait_max)
        hours.append((row.hour, row.type, row.calls, row.missed))
    return list(types.values()), (unique, fresh), hours


def summary_rows(
    conn: Connection, scope: Scope, query: StatsQuery, zone: ZoneInfo
) -> Sequence[AnyRow]:
    """Per type: calls, answered, the summed and longest wait before the answer, the summed talk
    time, and how many were answered within the query's `sla_seconds`. Whole local days from
    `wait_rollups` (for the whole account, no external numbers), the rest from the calls."""
    sla = query.sla_seconds

    def from_calls(*conditions: ColumnElement[bool]) -> Any:
        measures = _answer_measures(conn.dialect.name, sla)
        return select(calls.c.type, *measures).where(*conditions).group_by(calls.c.type)

    days = None if query.external_numbers else _days(conn, scope, query, zone)
    if days is None:
        return conn.execute(from_calls(*_selected(scope, query))).all()
    w = wait_rollups.c
    yes = w.answered == 1
    rolled = (
        select(
            w.type,
            func.sum(w.calls).label("calls"),
            func.sum(case((yes, w.calls), else_=0)).label("answered"),
            func.sum(case((yes, w.wait * w.calls))).label("wait_total"),
            func.max(case((and_(yes, w.calls > 0), w.wait))).label("wait_max"),
            func.sum(case((yes, w.conversation), else_=0)).label("talk_total"),
            func.sum(case((and_(yes, w.wait <= sla), w.calls), else_=0)).label("within_sla"),
        )
        .where(w.account_id == scope.account_id, days.whole(w.day))
        .group_by(w.type)
    )
    everywhere = _selected(scope, query, False)
    edges = [from_calls(*everywhere, edge) for edge in days.around(calls.c.started_at)]
    measures = ["calls", "answered", "wait_total", "talk_total", "within_sla"]
    return conn.execute(_summed([rolled, *edges], ["type"], measures, ["wait_max"])).all()


def callers(conn: Connection, scope: Scope, query: StatsQuery, zone: ZoneInfo) -> tuple[int, int]:
    """(unique, new): the numbers that called in (incoming calls) in the period, and those of
    them whose first call to the account (whoever in it they reached) is in the period. For the
    whole account over one run of whole local days, summed from `caller_gaps` (with the numbers
    of the edges that did not call on those days, and the `callers` whose first call is in an
    edge); else counted from the calls."""
    days = None if query.external_numbers else _days(conn, scope, query, zone)
    if days is None or len(days.runs) != 1:
        return _callers_counted(conn, scope, query)
    ((first, last),) = days.runs
    ((run_from, run_to),) = days.times
    g, found = caller_gaps.c, callers_table.c
    rolled = [g.account_id == scope.account_id, g.day.between(first, last)]
    # A number is counted on its first day of the run: the one whose previous day is before it.
    unique = select(func.sum(g.callers)).where(*rolled, g.since < first).scalar_subquery()
    new = select(func.sum(g.callers)).where(*rolled, g.since == tallies.NEVER).scalar_subquery()
    # The edges: their numbers that did not call on the run, and the first calls in them.
    edge_only: Any = literal(0)
    edge_new: Any = literal(0)
    if days.edges:
        other = calls.alias("other")
        called = exists().where(  # an incoming call of the run from the number
            other.c.account_id == scope.account_id,
            other.c.src == calls.c.src,
            other.c.started_at >= run_from,
            other.c.started_at < run_to,
            other.c.type == int(CallType.INCOMING),
        )
        edges = (
            select(calls.c.src)
            .where(
                *_selected(scope, query, False),
                or_(*days.around(calls.c.started_at)),
                calls.c.type == int(CallType.INCOMING),
                calls.c.src != "",
                ~called,
            )
            .distinct()
            .subquery()
        )
        first_in_edges = select(func.count()).where(
            found.account_id == scope.account_id,
            or_(*(found.first_at.between(lo, hi) for lo, hi in days.spans())),
        )
        edge_only = select(func.count()).select_from(edges).scalar_subquery()
        edge_new = first_in_edges.scalar_subquery()
    with bulk.grouped_by_sorting(conn):
        counts = conn.execute(select(unique, new, edge_only, edge_new)).one()
    whole, fresh, edge_only, edge_new = (int(n or 0) for n in counts)
    return whole + edge_only, fresh + edge_new


def _callers_counted(conn: Connection, scope: Scope, query: StatsQuery) -> tuple[int, int]:
    """`callers` from the calls: the period's distinct callers, and of them, for the whole
    account, the `callers` whose first call is in the period; else each one's first call looked
    up."""
    numbers = (
        select(calls.c.src.label("number"))
        .where(*_selected(scope, query), calls.c.type == int(CallType.INCOMING), calls.c.src != "")
        .distinct()
        .subquery()
    )
    if scope.whole and not query.external_numbers:
        new: Any = (
            select(func.count())
            .where(
                callers_table.c.account_id == scope.account_id,
                callers_table.c.first_at.between(query.started_from, query.started_to),
            )
            .scalar_subquery()
        )
    else:
        earlier = exists().where(
            callers_table.c.account_id == scope.account_id,
            callers_table.c.number == numbers.c.number,
            callers_table.c.first_at < query.started_from,
        )
        new = func.sum(case((earlier, 0), else_=1))
    stmt = select(func.count(), new).select_from(numbers)
    with bulk.grouped_by_sorting(conn):
        unique, found = conn.execute(stmt).one()
    return int(unique), int(found or 0)


def local_counts(
    conn: Connection, scope: Scope, query: StatsQuery, zone: ZoneInfo, per: int
) -> Sequence[AnyRow]:
    """The scope's calls in the period per (local hour or day key, type): calls, and of them not
    answered (`missed`), counted in the database: `per` is 4 (hours) or 96 (days) quarter-hours;
    `tallies.key_start` reads a key. Whole local hours (days) come from `hour_rollups`
    (`number_rollups`; by external number too), whole quarter-hours from `call_rollups`, the rest
    from the calls. An operator's scope (the rollups do not know who in the account made a call),
    and external numbers by hour, read the calls."""
    dialect = conn.dialect.name
    period = tallies.Period.of(query.started_from, query.started_to)
    hourly = per == tallies.HOUR
    days = None if hourly and query.external_numbers else _days(conn, scope, query, zone, per)
    # The zone's offsets over the period: the cut into days read them already.
    shifts = days.offsets if days is not None else tallies.offsets(
        zone, tallies.bucket_of(query.started_from), tallies.bucket_of(query.started_to)
    )  # fmt: skip

    def keyed(parts: Any) -> Any:
        key = tallies.local_key(parts.c.bucket, shifts, per).label("key")
        return select(key, parts.c.type, parts.c.status, parts.c.calls)

    nr, hr = number_rollups.c, hour_rollups.c
    daily = select(nr.day.label("key"), nr.type, nr.status, nr.calls)
    if days is not None and query.external_numbers:  # their days, the edges from the calls
        rolled = daily.where(*_rolled(scope, days, tallies.EXTERNAL, query.external_numbers))
        edges = [
            keyed(store.by_bucket(dialect, *_selected(scope, query, False), edge).subquery())
            for edge in days.around(calls.c.started_at)
        ]
        parts = [rolled, *edges]
    elif days is not None:  # the account's hours or days, the edges from the quarter-hours
        if hourly:
            rolled = select(hr.hour.label("key"), hr.type, hr.status, hr.calls).where(
                hr.account_id == scope.account_id, days.whole(hr.hour), hr.calls != 0
            )
        else:
            rolled = daily.where(*_rolled(scope, days, tallies.TOTAL))
        parts = [rolled, *(keyed(_span(dialect, scope, *span)) for span in days.spans())]
    elif query.external_numbers or period is None or not scope.whole:
        parts = [keyed(store.by_bucket(dialect, *_selected(scope, query)).subquery())]
    else:
        call_query = _call_query(query)
        parts = [keyed(store.period_buckets(dialect, scope.account_id, call_query, period))]
    union = _union(parts)
    # Each row's count fits an integer, and PostgreSQL sums integers (into a bigint) twice as
    # fast as bigints (into a numeric).
    each = cast(union.c.calls, Integer)
    missed = case((union.c.status == int(CallStatus.NOT_ANSWERED), each), else_=0)
    calls_sum = func.sum(each)
    summed = (
        select(
            union.c.key, union.c.type, calls_sum.label("calls"), func.sum(missed).label("missed")
        )
        .group_by(union.c.key, union.c.type)
        .having(calls_sum != 0)
    )
    return conn.execute(summed).all()


def by_external_number(
    conn: Connection, scope: Scope, query: StatsQuery, zone: ZoneInfo
) -> Sequence[AnyRow]:
    """Calls in the period per (external_number, type, status); internal calls left out. Whole
    local days from `number_rollups`, the rest from the calls."""
    outside = [
        calls.c.type != int(CallType.INTERNAL),
        calls.c.external_number.is_not(None),
        calls.c.external_number != "",
    ]

    def grouped(*conditions: ColumnElement[bool]) -> Any:
        number = calls.c.external_number.label("number")
        return (
            select(number, calls.c.type, calls.c.status, func.count().label("calls"))
            .where(*outside, *conditions)
            .group_by(calls.c.external_number, calls.c.type, calls.c.status)
        )

    if (days := _days(conn, scope, query, zone)) is None:
        return conn.execute(grouped(*_selected(scope, query))).all()
    nr = number_rollups.c
    rolled = select(nr.number, nr.type, nr.status, nr.calls).where(
        *_rolled(scope, days, tallies.EXTERNAL, query.external_numbers),
        nr.type != int(CallType.INTERNAL),
    )
    everywhere = _selected(scope, query, False)
    edges = [grouped(*everywhere, edge) for edge in days.around(calls.c.started_at)]
    return conn.execute(_summed([rolled, *edges], ["number", "type", "status"], ["calls"])).all()


def counts(
    conn: Connection, scope: Scope, query: StatsQuery, zone: ZoneInfo
) -> Counter[tuple[int, int]]:
    """Calls in the period by (type, status): the Call History API's strategies (counters,
    rollups); when external numbers filter, their whole local days from `number_rollups` and
    the rest from the calls."""
    days = _days(conn, scope, query, zone)
    nr = number_rollups.c
    if days is None and not query.external_numbers:
        return store.counts(conn, scope, _call_query(query))
    if days is None:
        stmt = store.grouped(*_selected(scope, query))
    elif not query.external_numbers:  # the account's days, the edges from the quarter-hours
        rolled = select(nr.type, nr.status, nr.calls).where(*_rolled(scope, days, tallies.TOTAL))
        spans = [_span(conn.dialect.name, scope, *span) for span in days.spans()]
        edges = [select(part.c.type, part.c.status, part.c.calls) for part in spans]
        stmt = _summed([rolled, *edges], ["type", "status"], ["calls"])
    else:  # the numbers' days, the edges from the calls
        rolled = select(nr.type, nr.status, nr.calls).where(
            *_rolled(scope, days, tallies.EXTERNAL, query.external_numbers)
        )
        everywhere = _selected(scope, query, False)
        edges = [store.grouped(*everywhere, edge) for edge in days.around(calls.c.started_at)]
        stmt = _summed([rolled, *edges], ["type", "status"], ["calls"])
    return Counter({(t, s): n for t, s, n in conn.execute(stmt)})


def by_number(
    conn: Connection, scope: Scope, query: StatsQuery, zone: ZoneInfo
) -> Sequence[AnyRow]:
    """Calls in the period per (number, direction): `outgoing` by their `src` (outgoing and
    internal calls), `incoming` by their `dst` (incoming and internal calls); count and summed
    duration and conversation. Whole local days from `number_rollups` (unless external numbers
    filter: they do not keep those beside an extension), the rest from the calls."""
    status = [] if query.status is None else [calls.c.status == int(query.status)]

    def sides(*conditions: ColumnElement[bool]) -> list[Any]:
        # The calls read once (a common table expression both sides read: PostgreSQL and
        # SQLite materialize one that is used twice), not once a side.
        c = calls.c
        chosen = (
            select(c.src, c.dst, c.type, c.duration, c.conversation)
            .where(*conditions, *status)
            .cte()
        )
        return [
            select(
                column.label("number"),
                literal(direction).label("direction"),
                func.count().label("calls"),
                func.sum(chosen.c.duration).label("duration"),
                func.sum(chosen.c.conversation).label("conversation"),
            )
            .where(chosen.c.type != int(other))
            .group_by(column)
            for column, direction, other in (
                (chosen.c.src, "outgoing", CallType.INCOMING),
                (chosen.c.dst, "incoming", CallType.OUTGOING),
            )
        ]

    days = None if query.external_numbers else _days(conn, scope, query, zone)
    if days is None:
        return conn.execute(union_all(*sides(*_selected(scope, query)))).all()
    nr = number_rollups.c
    named = case((nr.side == tallies.CALLER, "outgoing"), else_="incoming").label("direction")
    # Both sides in one scan, summed per number before the union: measured at 10M calls, a
    # month's 24,000 rows, 6.9 ms median against 7.7 as two scans summed after it (timed in
    # turns).
    rolled = (
        select(
            nr.number,
            named,
            func.sum(nr.calls).label("calls"),
            func.sum(nr.duration).label("duration"),
            func.sum(nr.conversation).label("conversation"),
        )
        .where(
            *_rolled(scope, days, (tallies.CALLER, tallies.CALLEE)),
            *([] if query.status is None else [nr.status == int(query.status)]),
        )
        .group_by(nr.side, nr.number)
    )
    everywhere = _selected(scope, query, False)
    edges = [part for edge in days.around(calls.c.started_at) for part in sides(*everywhere, edge)]
    keys, measures = ["number", "direction"], ["calls", "duration", "conversation"]
    return conn.execute(_summed([rolled, *edges], keys, measures)).all()


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
    for among in bulk.one_of(conn, calls.c.src, list(numbers)):
        stmt = select(calls.c.src, calls.c.started_at, calls.c.id).where(
            *_missed_conditions(scope, query), among
        )
        for number, started_at, pk in conn.execute(stmt):
            if number not in latest or (started_at, pk) > latest[number]:
                latest[number] = (started_at, pk)
    return {number: pk for number, (_, pk) in latest.items()}


def unreturned_page(
    conn: Connection, scope: Scope, query: StatsQuery, zone: ZoneInfo
) -> tuple[list[dict[str, Any]], int]:
    """The query's page of missed callers nobody reached (each with `last_call_id`), latest miss
    first, and how many there are in all. The missed calls are the scope's; a call back counts
    from anyone in the account (an operator's missed caller whom a colleague rang back is not
    waiting). For the whole account, read from `missed_calls` (each number's last miss in the
    period is the one whose next miss is after it) and, over whole local days, the total from
    `missed_rollups`; else grouped from the calls."""
    if not scope.whole or query.external_numbers:
        return _unreturned_grouped(conn, scope, query)
    m = missed_calls.c
    inside = [
        m.account_id == scope.account_id,
        m.started_at >= query.started_from,
        m.started_at <= query.started_to,
    ]
    waiting = [
        *inside,
        or_(m.next_at.is_(None), m.next_at > query.started_to),
        m.waited > query.within_hours,
    ]
    last = conn.execute(
        select(m.id, m.number, m.started_at)
        .where(*waiting)
        .order_by(m.started_at.desc(), m.number)
        .limit(query.per_page)
        .offset((query.page - 1) * query.per_page)
    ).all()
    days = _days(conn, scope, query, zone)
    if days is not None and len(days.runs) == 1 and not days.edges:
        ((first, final),) = days.runs
        r = missed_rollups.c
        total: Any = select(func.sum(r.calls)).where(
            r.account_id == scope.account_id,
            r.day.between(first, final),
            r.next_day > final,
            r.waited > query.within_hours,
        )
    else:
        total = select(func.count()).where(*waiting)
    counted: dict[str, tuple[int, datetime]] = {}
    for among in bulk.one_of(conn, m.number, [row.number for row in last]):
        missed = (
            select(m.number, func.count(), func.min(m.started_at))
            .where(*inside, among)
            .group_by(m.number)
        )
        counted.update((number, (n, at)) for number, n, at in conn.execute(missed))
    page = [
        {
            "number": row.number,
            "missed_count": counted[row.number][0],
            "first_missed_at": counted[row.number][1],
            "last_missed_at": row.started_at,
            "last_call_id": row.id,
        }
        for row in last
    ]
    return page, int(conn.execute(total).scalar_one() or 0)


def _unreturned_grouped(
    conn: Connection, scope: Scope, query: StatsQuery
) -> tuple[list[dict[str, Any]], int]:
    """`unreturned_page` from the calls: the scope's missed calls in the period grouped by
    number, each group's last miss probed for a reach."""
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
    with bulk.grouped_by_sorting(conn):  # a month's missed callers: as many groups as calls
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
