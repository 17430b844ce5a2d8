"""Derived counts of calls: per account by type and status (`call_counts`), the same per
quarter-hour of the start with summed durations (`call_rollups`), per local hour (`hour_rollups`),
per local day and number (`number_rollups`) or wait before the answer (`wait_rollups`), each
outside number's first call (`callers`), per local day how many numbers called after a pause of
how long since their previous day of calls (`caller_gaps`), the calls holding each short
substring of a number (`gram_counts`), the calls by their duration and conversation in seconds
(`length_counts`) and by both together (`length_pairs`). Kept in step with `calls` by the store
in the same transaction; rebuilt from the calls by `rebuild` (after a bulk load, or by the `stats
rebuild` command). Totals over a period and the statistics read them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)

from callhistory import bulk, citus, unreturned
from callhistory.models import CallStatus, CallType
from callhistory.schema import (
    BUCKET_SECONDS,
    accounts,
    call_counts,
    call_rollups,
    caller_gaps,
    callers,
    calls,
    dialect_insert,
    gram_counts,
    hour_rollups,
    id_counts,
    id_spans,
    length_counts,
    length_pairs,
    number_rollups,
    wait_rollups,
)

_EPOCH = datetime(1970, 1, 1)
_EPOCH_DAY = _EPOCH.toordinal()

#: `bucket_of` in SQL, for tallies computed inside the database.
BUCKET_SQL = {
    "postgresql": "CAST(floor(extract(epoch FROM started_at) / 900) AS integer)",
    "sqlite": "CAST(strftime('%s', started_at) AS integer) / 900",
}


def unix(moment: datetime) -> int:
    """Whole seconds since the epoch of a naive UTC time (exact: a float would round
    9999-12-31 23:59:59.999999 up into the year 10000)."""
    return (moment.replace(tzinfo=None) - _EPOCH) // timedelta(seconds=1)


def bucket_of(started_at: datetime) -> int:
    """The rollup bucket of a stored (naive UTC) start time."""
    return unix(started_at) // BUCKET_SECONDS


def start_of(bucket: int) -> datetime:
    """The naive UTC time a bucket starts at."""
    return _EPOCH + timedelta(seconds=bucket * BUCKET_SECONDS)


@dataclass(frozen=True, slots=True)
class Period:
    """An inclusive period of start times cut into the whole buckets inside it (read from the
    rollups) and the seconds before the first and after the last of them (read from the calls).
    Either end may be open."""

    started_from: datetime | None
    started_to: datetime | None
    first: int | None  # the first whole bucket, None if open
    last: int | None  # the last whole bucket, None if open

    @classmethod
    def of(cls, started_from: datetime | None, started_to: datetime | None) -> Period | None:
        """The period, or None when it holds no whole bucket (count its calls directly)."""
        first = -(-unix(started_from) // BUCKET_SECONDS) if started_from is not None else None
        last = (unix(started_to) + 1) // BUCKET_SECONDS - 1 if started_to is not None else None
        if first is not None and last is not None and first > last:
            return None
        return cls(started_from, started_to, first, last)

    def whole_buckets(self, bucket: Any) -> list[ColumnElement[bool]]:
        conditions = []
        if self.first is not None:
            conditions.append(bucket >= self.first)
        if self.last is not None:
            conditions.append(bucket <= self.last)
        return conditions

    def edges(self, started_at: Any) -> list[list[ColumnElement[bool]]]:
        """Conditions on the start time for each partial bucket at the ends (none, one or two)."""
        edges = []
        lo, hi = self.started_from, self.started_to
        if lo is not None and self.first is not None and unix(lo) % BUCKET_SECONDS:
            edges.append([started_at >= lo, started_at < start_of(self.first)])
        if hi is not None and self.last is not None and (unix(hi) + 1) % BUCKET_SECONDS:
            edges.append([started_at >= start_of(self.last + 1), started_at <= hi])
        return edges


@dataclass(frozen=True, slots=True)
class Days:
    """A period (both ends given) cut into runs of whole local days (read from `number_rollups`)
    or hours (`hour_rollups`) and the times around them (read from the quarter-hours or the
    calls): the edges before the first whole day and after the last, and, where a day is not one
    stretch of time (a zone that turns its clocks back over midnight; every such hour), around
    it."""

    runs: tuple[tuple[int, int], ...]  # (first key, last key), inclusive
    edges: tuple[tuple[datetime, datetime, bool], ...]  # (from, to, whether `to` is included)
    offsets: list[tuple[int, int]]  # the zone's over the period and a day around it (`offsets`)
    times: tuple[tuple[datetime, datetime], ...]  # each run's UTC times: [from, to)

    @classmethod
    def of(
        cls, started_from: datetime, started_to: datetime, zone: ZoneInfo, per: int = 96
    ) -> Days | None:
        """The cut into local days (per=96 quarter-hours) or hours (per=4), or None when the
        period holds no whole one (count its calls)."""
        period = Period.of(started_from, started_to)
        if period is None or period.first is None or period.last is None:
            return None
        first, last = period.first, period.last
        # (key, first bucket, last bucket) in time order, a day (hour) a stretch of buckets.
        stretches: list[tuple[int, int, int]] = []
        pieces = offsets(zone, first - 96, last + 96)
        for (start, off), end in zip(pieces, [p for p, _ in pieces[1:]] + [last + 97], strict=True):
            bucket = start
            while bucket < end:
                key = (bucket + off + KEY_BASE) // per
                top = min(end - 1, per * (key + 1) - off - KEY_BASE - 1)
                if stretches and stretches[-1][0] == key:  # a day across a transition
                    stretches[-1] = (key, stretches[-1][1], top)
                else:
                    stretches.append((key, bucket, top))
                bucket = top + 1
        seen = Counter(key for key, _, _ in stretches)
        runs: list[list[int]] = []  # [first key, last key, first bucket, last bucket]
        for key, lo, hi in stretches:
            if seen[key] != 1 or lo < first or hi > last:
                continue
            if runs and runs[-1][1] == key - 1 and runs[-1][3] == lo - 1:
                runs[-1][1], runs[-1][3] = key, hi
            else:
                runs.append([key, key, lo, hi])
        if not runs:
            return None
        bounds = [started_from, *(t for r in runs for t in (start_of(r[2]), start_of(r[3] + 1)))]
        edges = [
            (lo, hi, False) for lo, hi in zip(bounds[::2], bounds[1::2], strict=False) if lo < hi
        ]
        if start_of(runs[-1][3] + 1) <= started_to:
            edges.append((start_of(runs[-1][3] + 1), started_to, True))
        times = tuple((start_of(r[2]), start_of(r[3] + 1)) for r in runs)
        return cls(tuple((r[0], r[1]) for r in runs), tuple(edges), pieces, times)

    def spans(self) -> list[tuple[datetime, datetime]]:
        """The edges as inclusive periods (an edge that ends where a day starts ends a
        microsecond before)."""
        tick = timedelta(microseconds=1)
        return [(lo, hi if included else hi - tick) for lo, hi, included in self.edges]

    def whole(self, key: Any) -> ColumnElement[bool]:
        """SQL: whether a rollup's hour or day key is one of the whole ones."""
        return or_(*(key.between(lo, hi) for lo, hi in self.runs))

    def around(self, started_at: Any) -> list[ColumnElement[bool]]:
        """A condition on the start time for each edge."""
        return [
            and_(started_at >= lo, started_at <= hi if included else started_at < hi)
            for lo, hi, included in self.edges
        ]


#: The sides of a call whose number `number_rollups` counts it by; TOTAL counts every call under
#: the number "" (the account's calls per local day).
TOTAL, EXTERNAL, CALLER, CALLEE = 0, 1, 2, 3


#: The numbers `gram_counts` counts substrings of, by their `field` there (the index).
GRAM_FIELDS = ("src", "dst", "external_number")
#: How many ids one row of `id_counts` covers: a deep page sorted by id walks at most this many
#: index entries, and a list's histogram holds (its highest id - its lowest) / ID_BLOCK blocks.
ID_BLOCK = 1 << 14
#: How many ids one row of `id_spans` covers: a list in id order filtered by a period walks at
#: most this many index entries outside the period at each end of the blocks that may hold it.
SPAN_BLOCK = 1 << 12

#: `length_counts.field` → the column it counts.
LENGTH_FIELDS = ("duration", "conversation")


def grams(value: str | None) -> set[str]:
    """The distinct substrings of one and two characters of a number that have no letters (a
    search for them matches exactly: no case to fold)."""
    if not value:
        return set()
    found = {*value, *map(str.__add__, value, value[1:])}
    if not value.isdigit() and value.lower() != value.upper():
        found = {gram for gram in found if gram.lower() == gram.upper()}
    return found


def sides(type_: int, src: str, dst: str, external_number: str | None) -> list[tuple[int, str]]:
    """(side, number) for each number the call is counted by in `number_rollups`: its external
    number if it has one, its src if it was placed inside (outgoing, internal), its dst if it was
    received inside (incoming, internal)."""
    found = [(TOTAL, ""), (EXTERNAL, external_number)] if external_number else [(TOTAL, "")]
    if type_ != CallType.INCOMING:
        found.append((CALLER, src))
    if type_ != CallType.OUTGOING:
        found.append((CALLEE, dst))
    return found


class Tally:
    """Calls to add to (or take away from) an account's counters and rollups, gathered over a
    batch and written by `add` in one upsert per table."""

    def __init__(self) -> None:
        #: (bucket, type, status) → [calls, duration, conversation]
        self.buckets: dict[tuple[int, int, int], list[int]] = {}
        #: (bucket, side, number, type, status) → [calls, duration, conversation]
        self.numbers: dict[tuple[int, int, str, int, int], list[int]] = {}
        #: (bucket, type, answered, wait) → [calls, conversation]
        self.waits: dict[tuple[int, int, int, int], list[int]] = {}
        #: (field, number, type, status) → calls (their grams counted by `add`: few numbers
        #: recur in a batch, extensions and the account's own lines)
        self.values: Counter[tuple[int, str, int, int]] = Counter()
        #: (field, seconds, type, status) → calls
        self.lengths: Counter[tuple[int, int, int, int]] = Counter()
        #: (duration, conversation, type, status) → calls
        self.pairs: Counter[tuple[int, int, int, int]] = Counter()
        #: (id block, type, status) → calls
        self.blocks: Counter[tuple[int, int, int]] = Counter()
        #: span block → [the earliest, the latest start of a call added in it]
        self.spans: dict[int, list[datetime]] = {}
        #: Outside numbers → the earliest incoming call from them added.
        self.first_calls: dict[str, datetime] = {}
        #: Outside numbers an incoming call from them was taken away from (to recount).
        self.gone: set[str] = set()
        #: (bucket, outside number) → incoming calls from it
        self.called: Counter[tuple[int, str]] = Counter()
        #: Outside numbers that called in or were called (their missed calls' stories to redo)
        self.touched: set[str] = set()
        #: Of them, those a call added (sign +1) was missed from
        self.missing: set[str] = set()

    def count(self, call: Any, sign: int) -> None:
        """Add (sign +1) or take away (-1) a call: a stored row or a row's values, read for its
        id, started_at, answered_at, type, status, duration, conversation, src, dst and
        external_number."""
        if isinstance(call, dict):
            call = SimpleNamespace(**call)
        bucket, type_, status = bucket_of(call.started_at), int(call.type), int(call.status)
        measures = (sign, sign * call.duration, sign * call.conversation)
        _move(self.buckets.setdefault((bucket, type_, status), [0, 0, 0]), measures)
        for side, number in sides(type_, call.src, call.dst, call.external_number):
            key = (bucket, side, number, type_, status)
            _move(self.numbers.setdefault(key, [0, 0, 0]), measures)
        answered = status == CallStatus.ANSWERED and call.answered_at is not None
        wait = unix(call.answered_at) - unix(call.started_at) if answered else 0
        waited = self.waits.setdefault((bucket, type_, int(answered), wait), [0, 0])
        _move(waited, (sign, sign * call.conversation))
        for field, name in enumerate(GRAM_FIELDS):
            self.values[field, getattr(call, name) or "", type_, status] += sign
        self.lengths[0, call.duration, type_, status] += sign
        self.lengths[1, call.conversation, type_, status] += sign
        self.pairs[call.duration, call.conversation, type_, status] += sign
        self.blocks[call.id // ID_BLOCK, type_, status] += sign
        if sign > 0:  # a call taken away leaves its span as wide (`id_spans`)
            span = self.spans.setdefault(call.id // SPAN_BLOCK, [call.started_at] * 2)
            span[:] = min(span[0], call.started_at), max(span[1], call.started_at)
        if type_ == CallType.OUTGOING and call.dst:
            self.touched.add(call.dst)
        if type_ == CallType.INCOMING and call.src:
            self.called[bucket, call.src] += sign
            self.touched.add(call.src)
            if sign > 0 and status == CallStatus.NOT_ANSWERED:
                self.missing.add(call.src)
            if sign < 0:
                self.gone.add(call.src)
            elif call.src not in self.first_calls or call.started_at < self.first_calls[call.src]:
                self.first_calls[call.src] = call.started_at


def _move(into: list[int], measures: tuple[int, ...]) -> None:
    for i, value in enumerate(measures):
        into[i] += value


def _upsert(conn: Connection, table: Table, keys: list[str], rows: list[dict[str, Any]]) -> None:
    """Add the rows' measures to the table's (inserting the keys it lacks)."""
    bulk.put(conn, table, rows, keys=keys, summed=True)


def add(conn: Connection, account_id: int, tally: Tally) -> None:
    """Move the account's counters and rollups by `tally`; concurrency-safe (upserts in one
    order, so concurrent batches never deadlock on them; and the account's timezone, which keys
    the local days, read under a share lock that a change of the timezone waits for)."""
    counts: Counter[tuple[int, int]] = Counter()
    for (_, type_, status), moved in tally.buckets.items():
        counts[type_, status] += moved[0]
    names = ["account_id", "bucket", "type", "status"]
    _upsert(conn, call_rollups, names, _rows(account_id, names, tally.buckets))
    if tally.numbers:  # calls were counted: their local hours and days need the account's zone
        zone = _locked_zone(conn, account_id)
        names = ["account_id", "hour", "type", "status"]
        hours = _by_local({k: v[:1] for k, v in tally.buckets.items()}, zone, HOUR)
        _upsert(conn, hour_rollups, names, _rows(account_id, names, hours, ("calls",)))
        # By side first, as `add_stored` writes them (one statement a side).
        names = ["account_id", "side", "day", "number", "type", "status"]
        days = {(side, day, *rest): v for (day, side, *rest), v in _by_local(
            tally.numbers, zone, DAY).items()}  # fmt: skip
        _upsert(conn, number_rollups, names, _rows(account_id, names, days))
        names = ["account_id", "day", "type", "answered", "wait"]
        waits = _rows(
            account_id, names, _by_local(tally.waits, zone, DAY), ("calls", "conversation")
        )
        _upsert(conn, wait_rollups, names, waits)
        _move_firsts(conn, account_id, tally.first_calls, tally.gone)
        called = {key: [n] for key, n in tally.called.items() if n}
        called_by_day = _by_local(called, zone, DAY)
        _move_numbers(conn, account_id, zone, called_by_day, tally.touched, tally.missing)
    _add_counts(conn, call_counts, account_id, ["type", "status"], counts)
    _add_counts(
        conn, gram_counts, account_id, ["field", "gram", "type", "status"], _grams(tally.values)
    )
    _add_counts(
        conn, length_counts, account_id, ["field", "seconds", "type", "status"], tally.lengths
    )
    _add_counts(
        conn, length_pairs, account_id, ["duration", "conversation", "type", "status"], tally.pairs
    )
    _add_counts(conn, id_counts, account_id, ["block", "type", "status"], tally.blocks)
    spans = [
        {"account_id": account_id, "block": block, "first_at": first, "last_at": last}
        for block, (first, last) in sorted(tally.spans.items())
    ]
    _widen(conn, id_spans, ["account_id", "block"], spans)


def add_stored(
    conn: Connection, account_id: int, ids: Sequence[int], started: Iterable[datetime]
) -> None:
    """Move the account's counters and rollups by the calls `ids`, just inserted (`started`:
    their start times), counted in the database: one grouped upsert per table, as `add` writes
    them and in its order (so that concurrent batches never deadlock on them), the numbers'
    tables from what the calls' numbers did (the days of a number `callers` did not know yet
    are not read: it has none)."""
    if not ids:
        return
    dialect = conn.dialect.name
    source, among = _batch(conn, account_id, ids)

    def count(counted: list[_Counted], *tables: Table) -> None:
        for part in _only(counted, *tables):
            _count(conn, account_id, part, among, summed=True)

    count(_counted(dialect, [], source), call_rollups)  # before the zone, as `add`
    zone = _locked_zone(conn, account_id)
    shifts = offsets_on(zone, sorted({at.toordinal() - _EPOCH_DAY for at in started}))
    counted = _counted(dialect, shifts, source)
    count(counted, hour_rollups, number_rollups, wait_rollups)
    c = source.c
    day = local_key(literal_column(BUCKET_SQL[dialect], Integer), shifts, DAY)
    missed = case((c.status == int(CallStatus.NOT_ANSWERED), 1), else_=0)
    incoming = (
        select(c.src, day, func.count(), func.max(missed))
        .where(*among, c.type == int(CallType.INCOMING), c.src != "")
        .group_by(c.src, day)
    )
    called: dict[tuple[int, str], list[int]] = {}
    missing: set[str] = set()
    for number, on, n, missed_one in conn.execute(incoming):
        called[on, number] = [n]
        if missed_one:
            missing.add(number)
    outgoing = select(c.dst).where(*among, c.type == int(CallType.OUTGOING), c.dst != "")
    touched = {number for _, number in called} | set(conn.execute(outgoing.distinct()).scalars())
    fresh = _add_firsts(conn, source, [c.account_id == account_id, *among], earliest=True)
    _move_numbers(conn, account_id, zone, called, touched, missing, fresh)
    count(counted, call_counts)
    names = ["field", "gram", "type", "status"]
    _add_counts(conn, gram_counts, account_id, names, _grams_of(conn, source, among))
    count(counted, length_counts, length_pairs, id_counts, id_spans)


#: The columns of the calls that the counters and rollups count by.
_TALLIED = (
    "id", "account_id", "started_at", "answered_at", "type", "status", "duration", "conversation",
    "src", "dst", "external_number",
)  # fmt: skip

#: A batch's calls, copied once into a temporary table for `add_stored`'s statements to read
#: (each would otherwise find the batch's thousands of ids in `calls` again: measured on
#: PostgreSQL, 11 to 26 ms a statement for 5,000 calls, against 3 to 18 ms from the copy).
tallied = Table("tallied", MetaData(), *(Column(n, calls.c[n].type) for n in _TALLIED))


def _batch(
    conn: Connection, account_id: int, ids: Sequence[int]
) -> tuple[Table, list[ColumnElement[bool]]]:
    """Where `add_stored` reads the calls `ids`: the table, and the conditions that select them
    there. `tallied` on one PostgreSQL or SQLite database; the calls where they are on a Citus
    cluster (a temporary table lives on the coordinator alone, and every statement reading it
    would gather it there)."""
    among = bulk.among_ids(conn, calls.c.id, ids)
    if citus.sharded(conn):
        return calls, [calls.c.account_id == account_id, among]
    columns = ", ".join(_TALLIED)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS tallied ON COMMIT DELETE ROWS AS"
            f" SELECT {columns} FROM calls WITH NO DATA"
        )
        conn.exec_driver_sql("TRUNCATE tallied")  # a transaction may store several batches
    else:
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS tallied AS SELECT {columns} FROM calls WHERE 0"
        )
        conn.exec_driver_sql("DELETE FROM tallied")
    chosen = select(*(calls.c[name] for name in _TALLIED)).where(
        calls.c.account_id == account_id, among
    )
    conn.execute(tallied.insert().from_select(list(_TALLIED), chosen))
    return tallied, []


def _move_numbers(
    conn: Connection,
    account_id: int,
    zone: ZoneInfo,
    called: dict[tuple[int, str], list[int]],
    touched: set[str],
    missing: set[str],
    fresh: set[str] | None = None,
) -> None:
    """Move `caller_gaps` by incoming calls per (local day, number), and redo
    the missed calls' stories of the numbers `touched` (`missing`: those that missed a call of
    the batch), under the account's lock on them. `fresh`: numbers known to have had no
    incoming call before (`_add_firsts`)."""
    if touched:  # both read before they write: one batch at a time
        _lock_numbers(conn, account_id)
    _move_callers(conn, account_id, zone, called, fresh or set())
    unreturned.move(conn, account_id, touched, _day_of(zone), missing)


def _move_firsts(
    conn: Connection, account_id: int, firsts: dict[str, datetime], gone: set[str]
) -> None:
    """Move `callers` by the earliest incoming call added from each number (`firsts`) and the
    numbers an incoming call was taken away from (`gone`: recounted)."""
    if gone:  # the first call of these may have moved or gone: read it from the calls
        rebuild_callers(conn, account_id, sorted(gone))
    rows = [
        {"account_id": account_id, "number": number, "first_at": at}
        for number, at in sorted(firsts.items())
        if number not in gone
    ]
    _widen(conn, callers, ["account_id", "number"], rows)


def _widen(conn: Connection, table: Table, keys: list[str], rows: list[dict[str, Any]]) -> None:
    """Upsert the rows (in their order) of a table of the earliest `first_at` (and the latest
    `last_at`, if it has one) per key: where a key is there, keep the earlier and the later."""
    if rows and bulk.enabled(conn, rows):
        widened = {
            n: f"{pg}(t.{n}, excluded.{n})" for n, (pg, _) in _EXTREMES.items() if n in table.c
        }
        bulk.upsert(conn, table, rows, conflict=keys, assignments=widened)
    elif rows:
        conn.execute(_widened(conn, dialect_insert(conn, table), keys), rows)


#: The columns `_widen` keeps the extreme of: (their SQL function on PostgreSQL, on SQLite).
_EXTREMES = {"first_at": ("LEAST", "min"), "last_at": ("GREATEST", "max")}


@dataclass(frozen=True)
class _Counted:
    """A table of counts as SQL over the calls in `source`: `measures` (column → aggregate) per
    value of the grouped `keys` (column → expression), beside the constants `fixed`, of the
    calls `where` holds."""

    source: Table
    table: Table
    keys: dict[str, Any]
    measures: dict[str, Any]
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    where: tuple[ColumnElement[bool], ...] = ()
    #: The measures are the earliest and latest times (`_widened`), not sums.
    widened: bool = False


def _counted(dialect: str, shifts: list[tuple[int, int]], source: Table = calls) -> list[_Counted]:
    """The tables of counts `add` moves and `rebuild` fills, in `add`'s order: `call_rollups`;
    those by local hour or day (needing the zone's offsets `shifts`); `call_counts`,
    `length_counts`, `length_pairs`, `id_counts` (`gram_counts` and the numbers' tables are
    counted apart), over the calls in `source` (`calls`, or a batch of them in `tallied`)."""
    c = source.c
    kinds = {"type": c.type, "status": c.status}
    bucket = literal_column(BUCKET_SQL[dialect], Integer)
    one = {"calls": func.count()}
    three = {**one, "duration": func.sum(c.duration), "conversation": func.sum(c.conversation)}
    tables = [_Counted(source, call_rollups, {"bucket": bucket, **kinds}, three)]
    if shifts:
        day = local_key(bucket, shifts, DAY)
        external = c.external_number
        numbered = [  # (side, its number, the calls counted by it): as `sides`
            (EXTERNAL, external, (external.is_not(None), external != "")),
            (CALLER, c.src, (c.type != int(CallType.INCOMING),)),
            (CALLEE, c.dst, (c.type != int(CallType.OUTGOING),)),
        ]
        flag = case((was_answered(source), 1), else_=0)
        waited = case((was_answered(source), literal_column(WAIT_SQL[dialect], Integer)), else_=0)
        tables += [
            _Counted(source, hour_rollups, {"hour": local_key(bucket, shifts, HOUR), **kinds}, one),
            _Counted(
                source, number_rollups, {"day": day, **kinds}, three, {"side": TOTAL, "number": ""}
            ),
            *(
                _Counted(
                    source,
                    number_rollups,
                    {"day": day, "number": number, **kinds},
                    three,
                    {"side": side},
                    where,
                )
                for side, number, where in numbered
            ),
            _Counted(
                source,
                wait_rollups,
                {"day": day, "type": c.type, "answered": flag, "wait": waited},
                {"calls": func.count(), "conversation": func.sum(c.conversation)},
            ),
        ]
    tables += [
        _Counted(source, call_counts, kinds, one),
        *(
            _Counted(source, length_counts, {"seconds": c[name], **kinds}, one, {"field": index})
            for index, name in enumerate(LENGTH_FIELDS)
        ),
        _Counted(
            source,
            length_pairs,
            {"duration": c.duration, "conversation": c.conversation, **kinds},
            one,
        ),
        _Counted(
            source, id_counts, {"block": literal_column(f"id / {ID_BLOCK}", Integer), **kinds}, one
        ),
        _Counted(
            source,
            id_spans,
            {"block": literal_column(f"id / {SPAN_BLOCK}", Integer)},
            {"first_at": func.min(c.started_at), "last_at": func.max(c.started_at)},
            widened=True,
        ),
    ]
    return tables


def _only(counted: list[_Counted], *tables: Table) -> list[_Counted]:
    """Those of `counted` that fill one of `tables`, in their order."""
    return [part for part in counted if any(part.table is table for table in tables)]


def _count(
    conn: Connection,
    account_id: int,
    counted: _Counted,
    among: Sequence[ColumnElement[bool]] = (),
    *,
    summed: bool,
) -> None:
    """Insert `counted`'s rows of the account's calls (those `among` selects) into its table, in
    the order of its keys; where a row is there, add to it (`summed`)."""
    keys = list(counted.keys.values())
    mine = counted.source.c.account_id
    grouped = (
        select(
            mine,
            *(literal(v) for v in counted.fixed.values()),
            *keys,
            *counted.measures.values(),
        )
        .where(mine == account_id, *counted.where, *among)
        .group_by(mine, *keys)
    )
    if summed:  # rows locked in one order by every batch
        grouped = grouped.order_by(*(_ordered(conn, key) for key in keys))
    names = ["account_id", *counted.fixed, *counted.keys, *counted.measures]
    insert = dialect_insert(conn, counted.table).from_select(names, grouped)
    keyed = [n for n in names if n not in counted.measures]
    if summed and counted.widened:
        insert = _widened(conn, insert, keyed)
    elif summed:
        table = counted.table
        insert = insert.on_conflict_do_update(
            index_elements=keyed,
            set_={m: table.c[m] + insert.excluded[m] for m in counted.measures},
        )
    conn.execute(insert)


def _ordered(conn: Connection, key: Any) -> Any:
    """A key to order upserts by as Python sorts them (`_rows`): text by its code points."""
    if conn.dialect.name == "postgresql" and isinstance(key.type, String):
        return key.collate("C")
    return key


#: `caller_gaps`' `since` for a number's first day of calls (local day keys are positive).
NEVER = 0


def _spacing(days: Iterable[int]) -> list[tuple[int, int]]:
    """A number's days of calls as `caller_gaps` keys: (day, the day before it, or NEVER)."""
    ordered = sorted(days)
    return list(zip(ordered, [NEVER, *ordered], strict=False))


def _lock_numbers(conn: Connection, account_id: int) -> None:
    """PostgreSQL: take the account's lock on its `caller_gaps` and `missed_calls` for this
    transaction. Moving `caller_gaps` reads the days a number called on before writing them, and
    `unreturned` a number's missed calls; two batches doing it at once would each miss the
    other's."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:space, CAST(:account % 2147483647 AS integer))"),
            {"space": NUMBERS_LOCK, "account": account_id},
        )


#: The first key of the account's lock on its numbers' tables (its own space: `store` locks call
#: ids under single keys, which never meet pairs).
NUMBERS_LOCK = 2


def _day_of(zone: ZoneInfo) -> unreturned.DayOf:
    """The local day key (`local_of`) of a time, in `zone`."""
    return lambda moment: local_of(bucket_of(moment), zone, DAY)


def _move_callers(
    conn: Connection,
    account_id: int,
    zone: ZoneInfo,
    moved: dict[tuple[int, str], list[int]],
    fresh: set[str],
) -> None:
    """Move `caller_gaps` by incoming calls per (local day, number), already written to the
    calls: a number's spacing of days changes only around the days it moved on, so its days are
    read there, from its incoming calls (`_days_around`), under the account's lock (taken by the
    caller); for the `fresh` numbers, which called on no day before, nothing is read. (Until
    0029 every number's days were kept in a table, `caller_days`: writing its rows was 2.3 s of
    a 1M-line import, reading them for a batch's new numbers 3 s before `fresh`.)"""
    changed: dict[str, dict[int, int]] = {}
    for (day, number), (n,) in moved.items():
        if n:
            days = changed.setdefault(number, {})
            days[day] = days.get(day, 0) + n
    gaps: Counter[tuple[int, int]] = Counter()
    known: dict[str, dict[int, int]] = {}
    for number, days in changed.items():  # plain loops: a file's batch has thousands of these
        if number not in fresh:
            known[number] = days
        elif len(days) == 1:
            gaps[next(iter(days)), NEVER] += 1
        else:
            gaps.update(_spacing(days))
    for before, after in _days_around(conn, account_id, zone, known):
        gaps.subtract(_spacing(before))
        gaps.update(_spacing(after))
    names = ["account_id", "day", "since"]
    spaced = {key: [n] for key, n in gaps.items() if n}
    _upsert(conn, caller_gaps, names, _rows(account_id, names, spaced, ("callers",)))


def _days_around(
    conn: Connection, account_id: int, zone: ZoneInfo, moved: dict[str, dict[int, int]]
) -> Iterator[tuple[set[int], set[int]]]:
    """For each number of `moved` (local day → incoming calls added, or taken away if
    negative, already written to the calls): the local days it called on before and after
    them, in as much as the spacing of its days can change: the days of the window from the
    first moved day to the last (any number's), the last day before it and the first after.
    The window's calls are read by number and time (the `src` index), the nearest outside it
    one index probe each; the same days in both sets outside the window cancel in
    `caller_gaps`."""
    if not moved:
        return
    first = min(min(days) for days in moved.values())
    last = max(max(days) for days in moved.values())
    # A local day's calls start within 14 hours of its UTC day: two days' margin either side.
    lo = start_of(first * DAY - KEY_BASE - 2 * DAY)
    hi = start_of((last + 1) * DAY - KEY_BASE + 2 * DAY)
    numbers, number = bulk.listed(conn, list(moved))
    c = calls.c
    incoming = [c.account_id == account_id, c.type == int(CallType.INCOMING)]
    theirs = [*incoming, c.src == number]
    # PostgreSQL: bounds on (src, started_at) together, which only the `src` index can use. As
    # bounds on the start alone, it took the account's index of starts for these recent days
    # (after the last value its statistics know, so estimated at one row) and walked every call
    # of the account in them: 5 ms a batch at 500,000 calls, growing with the account. (SQLite
    # uses a row value only to filter: there the start alone bounds the `src` index.)
    postgresql = conn.dialect.name == "postgresql"
    pair = tuple_(c.src, c.started_at)

    def since(moment: datetime) -> ColumnElement[bool]:
        if postgresql:
            return pair >= tuple_(number, literal(moment, DateTime))
        return c.started_at >= moment

    def until(moment: datetime) -> ColumnElement[bool]:
        if postgresql:
            return pair < tuple_(number, literal(moment, DateTime))
        return c.started_at < moment

    if postgresql:
        inside = numbers.join(calls, and_(*theirs, since(lo), c.started_at < hi))
        windows = [select(number, c.started_at).select_from(inside)]
    else:  # SQLite drove a join by the account's index of starts, as PostgreSQL did the
        windows = [  # bounds (2 s for 2,500 numbers); an IN list it looks up number by number
            select(c.src, c.started_at).where(*incoming, among, since(lo), until(hi))
            for among in bulk.one_of(conn, c.src, list(moved))
        ]
    now: dict[str, Counter[int]] = {key: Counter() for key in moved}
    for window in windows:
        for key, at in conn.execute(window):
            now[key][local_of(bucket_of(at), zone, DAY)] += 1

    def nearest(bound: ColumnElement[bool], *, latest: bool) -> Any:
        order = c.started_at.desc() if latest else c.started_at
        found = select(c.started_at).where(*theirs, bound)
        return found.order_by(order).limit(1).scalar_subquery()

    outside = select(number, nearest(until(lo), latest=True), nearest(since(hi), latest=False))
    outside = outside.select_from(numbers)
    for key, earlier, later in conn.execute(outside):
        for at in (earlier, later):
            if at is not None:
                now[key][local_of(bucket_of(at), zone, DAY)] += 1
    for key, days in moved.items():
        after = now[key]
        before = after.copy()
        before.subtract(days)
        yield {d for d, n in before.items() if n > 0}, {d for d, n in after.items() if n > 0}


def _add_counts(
    conn: Connection, table: Table, account_id: int, keys: list[str], counted: Counter[Any]
) -> None:
    """Move a table of counts (`calls` by the account and `keys`) by `counted`."""
    names = ["account_id", *keys]
    moved = {key: [n] for key, n in counted.items()}
    _upsert(conn, table, names, _rows(account_id, names, moved, ("calls",)))


def _grams(values: Counter[tuple[int, str, int, int]]) -> Counter[tuple[int, str, int, int]]:
    """Counts by (field, number, type, status) as counts by (field, gram, type, status): each
    (field, type, status)'s grams counted apart, a number counted once by `Counter`'s own loop
    (most numbers of a batch are in one call)."""
    kinds: dict[tuple[int, int, int], Counter[str]] = {}
    for (field, value, type_, status), n in values.items():
        found = kinds.setdefault((field, type_, status), Counter())
        if n == 1:
            found.update(grams(value))
        elif n:
            for gram in grams(value):
                found[gram] += n
    return Counter(
        {
            (field, gram, type_, status): n
            for (field, type_, status), found in kinds.items()
            for gram, n in found.items()
            if n
        }
    )


def _by_local(tallied: dict[Any, list[int]], zone: ZoneInfo, per: int) -> dict[Any, list[int]]:
    """A tally keyed by (bucket, ...) re-keyed by (local hour or day, ...) (`local_of`), the
    buckets of an hour or day summed."""
    local: dict[Any, list[int]] = {}
    for (bucket, *rest), moved in tallied.items():
        _move(
            local.setdefault((local_of(bucket, zone, per), *rest), [0] * len(moved)), tuple(moved)
        )
    return local


def _rows(
    account_id: int,
    names: list[str],
    tallied: dict[Any, list[int]],
    measures: tuple[str, ...] = ("calls", "duration", "conversation"),
) -> list[dict[str, Any]]:
    """Upsert rows of the keys (named after the account) that move something, in key order."""
    return [
        {
            **dict(zip(names, (account_id, *key), strict=True)),
            **dict(zip(measures, moved, strict=False)),
        }
        for key, moved in sorted(tallied.items())
        if any(moved)
    ]


def _locked_zone(conn: Connection, account_id: int) -> ZoneInfo:
    """The account's timezone, read FOR SHARE on PostgreSQL: `set_timezone` (an UPDATE of the
    row) waits until this transaction's days are written, and then rebuilds them. Not on a Citus
    cluster: a row lock on a reference table locks it on every node, and concurrent ingests
    deadlock on those locks; there an ingest racing a timezone change may key its days in the
    old zone until `stats rebuild`."""
    stmt = select(accounts.c.timezone).where(accounts.c.id == account_id)
    if conn.dialect.name == "postgresql" and not citus.sharded(conn):
        stmt = stmt.with_for_update(read=True)
    return ZoneInfo(conn.execute(stmt).scalar_one())


#: Every table `rebuild` fills.
TABLES = (
    "call_counts",
    "gram_counts",
    "length_counts",
    "id_counts",
    "id_spans",
    "length_pairs",
    "call_rollups",
    "hour_rollups",
    "number_rollups",
    "wait_rollups",
    "callers",
    "caller_gaps",
    "missed_calls",
    "missed_rollups",
)


def rebuild(conn: Connection, account_id: int) -> None:
    """Recount the account's counters and rollups from its calls."""
    _refill(conn, account_id, _counted(conn.dialect.name, []))
    rebuild_local(conn, account_id, _locked_zone(conn, account_id))
    rebuild_callers(conn, account_id)
    rebuild_grams(conn, account_id)


def _refill(conn: Connection, account_id: int, counted: list[_Counted]) -> None:
    """Empty the account's rows of the tables `counted` fills, and count them from its calls."""
    for table in dict.fromkeys(part.table for part in counted):
        conn.execute(table.delete().where(table.c.account_id == account_id))
    for part in counted:
        _count(conn, account_id, part, summed=False)


def _refill_one(conn: Connection, account_id: int, table: Table) -> None:
    """`_refill` one of the tables `_counted` fills without the zone's offsets."""
    _refill(conn, account_id, _only(_counted(conn.dialect.name, []), table))


def rebuild_ids(conn: Connection, account_id: int) -> None:
    """Recount the account's `id_counts` from its calls."""
    _refill_one(conn, account_id, id_counts)


def rebuild_spans(conn: Connection, account_id: int) -> None:
    """Recount the account's `id_spans` from its calls (narrowing them to their calls)."""
    _refill_one(conn, account_id, id_spans)


def rebuild_lengths(conn: Connection, account_id: int) -> None:
    """Recount the account's `length_counts` from its calls."""
    _refill_one(conn, account_id, length_counts)


def rebuild_pairs(conn: Connection, account_id: int) -> None:
    """Recount the account's `length_pairs` from its calls."""
    _refill_one(conn, account_id, length_pairs)


def rebuild_grams(conn: Connection, account_id: int) -> None:
    """Recount the account's `gram_counts` from its calls: each distinct number's grams, read
    from the calls grouped by number (streamed)."""
    conn.execute(gram_counts.delete().where(gram_counts.c.account_id == account_id))
    counted = _grams_of(conn, calls, [calls.c.account_id == account_id])
    names = ["account_id", "field", "gram", "type", "status"]
    rows = _rows(account_id, names, {k: [n] for k, n in counted.items()}, ("calls",))
    if rows:
        conn.execute(gram_counts.insert(), rows)


def _grams_of(
    conn: Connection, source: Table, among: list[ColumnElement[bool]]
) -> Counter[tuple[int, str, int, int]]:
    """The calls `among` selects in `source` counted by (field, gram, type, status): each
    distinct number's grams, read grouped by number (streamed)."""
    c = source.c
    counted: Counter[tuple[int, str, int, int]] = Counter()
    for index, name in enumerate(GRAM_FIELDS):
        grouped = (
            select(c[name], c.type, c.status, func.count())
            .where(*among)
            .group_by(c[name], c.type, c.status)
        )
        streamed = conn.execute(grouped.execution_options(yield_per=20_000))
        for part in streamed.partitions():
            values: Counter[tuple[int, str, int, int]] = Counter()
            for value, type_, status, n in part:
                values[index, value or "", type_, status] += n
            counted.update(_grams(values))
    return counted


def _utc_days(conn: Connection, account_id: int) -> list[int]:
    """The UTC days (since the epoch) the account has calls on, sorted: read from its
    `call_rollups` (kept, or rebuilt first), where the rebuilds by local hour and day need the
    zone's offsets."""
    day = (call_rollups.c.bucket + KEY_BASE) // DAY - KEY_BASE // DAY  # floor, before 1970 too
    mine = call_rollups.c.account_id == account_id
    return sorted(int(d) for (d,) in conn.execute(select(day).where(mine).distinct()))


def _local_day(conn: Connection, account_id: int, zone: ZoneInfo) -> Any:
    """SQL: the local day key (`local_key`) of a call's start, in `zone`; None when the account
    has no calls (`_utc_days`)."""
    if not (found := _utc_days(conn, account_id)):
        return None
    bucket = literal_column(BUCKET_SQL[conn.dialect.name], Integer)
    return local_key(bucket, offsets_on(zone, found), DAY)


def rebuild_local(conn: Connection, account_id: int, zone: ZoneInfo) -> None:
    """Recount the account's rollups by local hour and day (after `call_rollups`), in `zone`."""
    rebuild_hours(conn, account_id, zone)
    rebuild_days(conn, account_id, zone)
    rebuild_numbers(conn, account_id, zone)


def rebuild_hours(conn: Connection, account_id: int, zone: ZoneInfo) -> None:
    """Recount the account's `hour_rollups` from its `call_rollups`, in `zone`."""
    conn.execute(hour_rollups.delete().where(hour_rollups.c.account_id == account_id))
    if not (found := _utc_days(conn, account_id)):
        return
    mine = call_rollups.c.account_id == account_id
    hour = local_key(call_rollups.c.bucket, offsets_on(zone, found), HOUR)
    grouped = (
        select(call_rollups.c.account_id, hour, call_rollups.c.type, call_rollups.c.status,
               func.sum(call_rollups.c.calls))
        .where(mine, call_rollups.c.calls != 0)
        .group_by(call_rollups.c.account_id, hour, call_rollups.c.type, call_rollups.c.status)
    )  # fmt: skip
    columns = ["account_id", "hour", "type", "status", "calls"]
    conn.execute(hour_rollups.insert().from_select(columns, grouped))


def _widened(conn: Connection, insert: Any, keys: list[str]) -> Any:
    """`insert` into a table `_widen` keeps, keeping the earlier `first_at` (and the later
    `last_at`) where the key is there."""
    postgresql = conn.dialect.name == "postgresql"
    table, new = insert.table, insert.excluded  # SQLite: min(a, b) and max(a, b)
    kept = {
        n: getattr(func, pg if postgresql else lite)(table.c[n], new[n])
        for n, (pg, lite) in _EXTREMES.items()
        if n in table.c
    }
    return insert.on_conflict_do_update(index_elements=keys, set_=kept)


def rebuild_callers(conn: Connection, account_id: int, numbers: list[str] | None = None) -> None:
    """Recount the account's `callers` (those of `numbers`, or all) from its incoming calls."""
    chunks = [numbers[i : i + 500] for i in range(0, len(numbers), 500)] if numbers else [None]
    for chunk in chunks:
        mine = [callers.c.account_id == account_id]
        among = [calls.c.account_id == account_id]
        if chunk is not None:
            mine.append(callers.c.number.in_(chunk))
            among.append(calls.c.src.in_(chunk))
        conn.execute(callers.delete().where(*mine))
        # A whole account's were all deleted; a few numbers' may meet a concurrent first call.
        _add_firsts(conn, calls, among, earliest=chunk is not None)


def _add_firsts(
    conn: Connection, source: Table, among: list[ColumnElement[bool]], *, earliest: bool
) -> set[str] | None:
    """Insert into `callers` the first incoming call from each number among the calls `among`
    selects in `source`, in the key's order (each index page written once, not at random; and
    every batch's upserts in one order); where a number is there, keep the `earliest` call.
    Returns the numbers inserted (new callers) on one PostgreSQL database, None elsewhere: an
    upsert's row with no `xmax` was inserted (not on Citus, whose workers hold the rows; SQLite
    has no `xmax`)."""
    c = source.c
    first = (
        select(c.account_id, c.src, func.min(c.started_at))
        .where(*among, c.type == int(CallType.INCOMING), c.src != "")
        .group_by(c.account_id, c.src)
        .order_by(_ordered(conn, c.src))
    )
    insert = dialect_insert(conn, callers).from_select(["account_id", "number", "first_at"], first)
    if not earliest:
        conn.execute(insert)
        return None
    widened = _widened(conn, insert, ["account_id", "number"])
    if conn.dialect.name != "postgresql" or citus.sharded(conn):
        conn.execute(widened)
        return None
    inserted = literal_column("xmax::text = '0'", Boolean)
    rows = conn.execute(widened.returning(callers.c.number, inserted))
    return {number for number, new in rows if new}


def rebuild_numbers(conn: Connection, account_id: int, zone: ZoneInfo) -> None:
    """Recount the account's `caller_gaps` from its incoming calls' numbers and local days, in
    `zone` (after `call_rollups`); and the stories of its missed calls (`unreturned`)."""
    _lock_numbers(conn, account_id)
    unreturned.rebuild(conn, account_id, _day_of(zone))
    conn.execute(caller_gaps.delete().where(caller_gaps.c.account_id == account_id))
    if (day := _local_day(conn, account_id, zone)) is None:
        return
    days = (
        select(calls.c.src.label("number"), day.label("day"))
        .where(
            calls.c.account_id == account_id,
            calls.c.type == int(CallType.INCOMING),
            calls.c.src != "",
        )
        .group_by(calls.c.src, day)
        .subquery()
    )
    before = func.lag(days.c.day).over(partition_by=days.c.number, order_by=days.c.day)
    spaced = select(days.c.day, func.coalesce(before, NEVER).label("since")).subquery()
    counted = select(literal(account_id), spaced.c.day, spaced.c.since, func.count()).group_by(
        spaced.c.day, spaced.c.since
    )
    with bulk.grouped_by_sorting(conn):  # as many numbers as calls, nearly
        conn.execute(
            caller_gaps.insert().from_select(["account_id", "day", "since", "callers"], counted)
        )


#: Whole seconds from a call's start to its answer, in SQL (each time floored to its second, as
#: `unix` does).
WAIT_SQL = {
    "postgresql": "CAST(floor(extract(epoch FROM answered_at))"
    " - floor(extract(epoch FROM started_at)) AS integer)",
    "sqlite": "CAST(strftime('%s', answered_at) AS integer)"
    " - CAST(strftime('%s', started_at) AS integer)",
}


def was_answered(source: Table = calls) -> ColumnElement[bool]:
    """SQL: whether a call was answered (and says when): what the summary counts as answered."""
    c = source.c
    return and_(c.status == int(CallStatus.ANSWERED), c.answered_at.is_not(None))


def rebuild_days(conn: Connection, account_id: int, zone: ZoneInfo) -> None:
    """Recount the account's `number_rollups` and `wait_rollups` from its calls, in `zone`."""
    if not (found := _utc_days(conn, account_id)):  # no calls: no offsets, nothing to count
        for table in (number_rollups, wait_rollups):
            conn.execute(table.delete().where(table.c.account_id == account_id))
        return
    local = _counted(conn.dialect.name, offsets_on(zone, found))
    _refill(conn, account_id, _only(local, number_rollups, wait_rollups))


#: Quarter-hours per local hour and day: the `per` of `local_of`, `local_key` and `Days.of`.
HOUR, DAY = 4, 96

#: Buckets added before dividing local buckets into hours or days, so the dividend is positive
#: (SQL's integer division truncates toward zero) back to year 1; a whole number of weeks.
KEY_BASE = 96 * 7 * 200_000


#: The moments an offset is read at are kept inside these, so that converting never overflows.
_EARLIEST, _LATEST = datetime(1, 1, 2), datetime(9999, 12, 30)


def _offset(zone: ZoneInfo, bucket: int) -> int:
    """The zone's UTC offset at the start of a bucket, in whole buckets (rounded down)."""
    moment = min(max(start_of(bucket), _EARLIEST), _LATEST)
    local = moment.replace(tzinfo=UTC).astimezone(zone)
    return int((local.utcoffset() or timedelta()).total_seconds()) // BUCKET_SECONDS


def local_of(bucket: int, zone: ZoneInfo, per: int) -> int:
    """The local hour (per=4) or day (per=96) a bucket falls in (`local_key` in Python):
    `hour_rollups`' `hour`, `number_rollups`' `day`."""
    return (bucket + _offset(zone, bucket) + KEY_BASE) // per


def _pieces(zone: ZoneInfo, samples: list[int]) -> list[tuple[int, int]]:
    """The zone's offsets at the sorted buckets `samples`: [(from bucket, offset)], the first
    from `samples[0]` on, each next from the bucket its transition starts (found between two
    samples that differ; no zone changes its offset twice in a day)."""
    found = [(samples[0], _offset(zone, samples[0]))]
    previous = samples[0]
    for sample in samples[1:]:
        if sample <= previous:
            continue
        if _offset(zone, sample) != found[-1][1]:
            lo, hi = previous, sample  # offset(lo) is the old one, offset(hi) the new
            while hi - lo > 1:
                middle = (lo + hi) // 2
                lo, hi = (middle, hi) if _offset(zone, middle) == found[-1][1] else (lo, middle)
            found.append((hi, _offset(zone, hi)))
        previous = sample
    return found


def offsets(zone: ZoneInfo, first: int, last: int) -> list[tuple[int, int]]:
    """The zone's UTC offsets over buckets first..last, in buckets (see `_pieces`)."""
    return _pieces(zone, [*range(first, last, 96), last])


def offsets_on(zone: ZoneInfo, utc_days: list[int]) -> list[tuple[int, int]]:
    """The zone's UTC offsets over the sorted UTC days given (days since the epoch): right on
    those days, whatever they are between them."""
    return _pieces(zone, [b for d in utc_days for b in (d * 96, d * 96 + 95)])


def local_key(bucket: Any, zone_offsets: list[tuple[int, int]], per: int) -> Any:
    """SQL: the local hour (per=4) or day (per=96) a UTC bucket falls in, as a positive integer;
    `key_start` turns it back into the naive local time it starts at."""
    shift: Any = zone_offsets[-1][1]
    if len(zone_offsets) > 1:
        shift = case(
            *((bucket < start, off) for (_, off), (start, _) in itertools.pairwise(zone_offsets)),
            else_=zone_offsets[-1][1],
        )
    return (bucket + shift + KEY_BASE) // per


def key_start(key: int, per: int) -> datetime:
    return start_of(key * per - KEY_BASE)
