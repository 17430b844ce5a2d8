"""Derived counts of calls: per account by type and status (`call_counts`), and the same per
quarter-hour of the start with summed durations (`call_rollups`). Kept in step with `calls` by the
store in the same transaction; rebuilt from the calls by `rebuild` (after a bulk load, or by the
`stats rebuild` command). Totals over a period and the statistics read them.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Connection, case, text

from callhistory.schema import BUCKET_SECONDS, call_counts, call_rollups, dialect_insert

_EPOCH = datetime(1970, 1, 1)

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


#: (bucket, type, status) → [calls, duration, conversation] to add to an account's tallies.
Tally = dict[tuple[int, int, int], list[int]]


def count_in(
    tally: Tally,
    started_at: datetime,
    type_: int,
    status: int,
    durations: tuple[int, int],
    sign: int,
) -> None:
    """Add (sign +1) or take away (-1) a call: its start, type, status, duration, conversation."""
    moved = tally.setdefault((bucket_of(started_at), type_, status), [0, 0, 0])
    moved[0] += sign
    moved[1] += sign * durations[0]
    moved[2] += sign * durations[1]


def add(conn: Connection, account_id: int, tally: Tally) -> None:
    """Move the account's counters and rollups by `tally`; concurrency-safe (upserts in one
    order, so concurrent batches never deadlock on them)."""
    counts: Counter[tuple[int, int]] = Counter()
    rollups = []
    for (bucket, type_, status), (n, duration, conversation) in sorted(tally.items()):
        counts[type_, status] += n
        if n or duration or conversation:
            rollups.append(
                {
                    "account_id": account_id,
                    "bucket": bucket,
                    "type": type_,
                    "status": status,
                    "calls": n,
                    "duration": duration,
                    "conversation": conversation,
                }
            )
    if rollups:
        insert = dialect_insert(conn, call_rollups)
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["account_id", "bucket", "type", "status"],
                set_={
                    name: call_rollups.c[name] + insert.excluded[name]
                    for name in ("calls", "duration", "conversation")
                },
            ),
            rollups,
        )
    rows = [
        {"account_id": account_id, "type": t, "status": s, "calls": n}
        for (t, s), n in sorted(counts.items())
        if n
    ]
    if rows:
        insert = dialect_insert(conn, call_counts)
        stmt = insert.on_conflict_do_update(
            index_elements=["account_id", "type", "status"],
            set_={"calls": call_counts.c.calls + insert.excluded.calls},
        )
        conn.execute(stmt, rows)


def rebuild(conn: Connection, account_id: int) -> None:
    """Recount the account's counters and rollups from its calls."""
    bucket = BUCKET_SQL[conn.dialect.name]
    args = {"account": account_id}
    conn.execute(call_counts.delete().where(call_counts.c.account_id == account_id))
    conn.execute(call_rollups.delete().where(call_rollups.c.account_id == account_id))
    conn.execute(
        text(
            "INSERT INTO call_counts (account_id, type, status, calls)"
            " SELECT account_id, type, status, count(*) FROM calls WHERE account_id = :account"
            " GROUP BY account_id, type, status"
        ),
        args,
    )
    conn.execute(
        text(
            "INSERT INTO call_rollups"
            " (account_id, bucket, type, status, calls, duration, conversation)"
            f" SELECT account_id, {bucket}, type, status, count(*), sum(duration),"
            f" sum(conversation) FROM calls WHERE account_id = :account"
            f" GROUP BY account_id, {bucket}, type, status"
        ),
        args,
    )


#: Buckets added before dividing local buckets into hours or days, so the dividend is positive
#: (SQL's integer division truncates toward zero) back to year 1; a whole number of weeks.
KEY_BASE = 96 * 7 * 200_000


def offsets(zone: ZoneInfo, first: int, last: int) -> list[tuple[int, int]]:
    """The zone's UTC offsets over buckets first..last, in buckets: [(from bucket, offset)], the
    first from `first` on, each next from the bucket its transition starts."""

    def offset(bucket: int) -> int:
        moment = start_of(bucket).replace(tzinfo=UTC).astimezone(zone)
        return int((moment.utcoffset() or timedelta()).total_seconds()) // BUCKET_SECONDS

    found = [(first, offset(first))]
    step = 96  # a day: no zone changes its offset twice in one
    previous = first
    for sample in [*range(first + step, last, step), last]:
        if sample <= previous:
            continue
        if offset(sample) != found[-1][1]:
            lo, hi = previous, sample  # offset(lo) is the old one, offset(hi) the new
            while hi - lo > 1:
                middle = (lo + hi) // 2
                lo, hi = (middle, hi) if offset(middle) == found[-1][1] else (lo, middle)
            found.append((hi, offset(hi)))
        previous = sample
    return found


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
