"""Each missed call in its caller's story (`missed_calls`): when the same number missed next, and
how many hours later it was first reached (called back: an outgoing call to it; or got through: an
answered call from it); and the missed calls counted by local day, the local day of the next
miss and those hours (`missed_rollups`).

A missed call is its number's last in a period when its next miss comes after the period, and
its caller is still waiting when it was not reached within `within` hours: the missed-unreturned
list of a period is those calls, latest first, and its total over whole local days a sum of a few
rollup rows instead of grouping every missed call of a month by number.

Kept in the transaction that stores the calls (`tallies.add`, `tallies.add_stored`): the numbers
a batch touched that missed a call, or had missed one before, have their stories recomputed from
their calls and the difference written. `rebuild` recomputes them all.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import Connection, select

from callhistory import bulk
from callhistory.models import CallStatus, CallType
from callhistory.schema import calls, missed_calls, missed_rollups
from callhistory.stats.params import MAX_WITHIN_HOURS

#: `next_day` of a number's last missed call.
NEVER_AGAIN = 2**31 - 1
#: `waited` of a missed call not reached within any `within` the API takes (or never reached).
NOT_REACHED = MAX_WITHIN_HOURS + 1

_HOUR = timedelta(hours=1)

#: A local day key of a time (`tallies.local_of` of its quarter-hour, in the account's zone).
DayOf = Callable[[datetime], int]

#: A missed call's story: (number, started_at, next_at, waited).
Story = tuple[str, datetime, datetime | None, int]


def waited(dialect: str, missed_at: datetime, reached_at: datetime | None) -> int:
    """The fewest whole hours after the miss that the reach falls within (a caller reached within
    `within` hours is one with `waited` <= within), at most NOT_REACHED: the comparison the
    missed-unreturned query makes, to the microsecond on PostgreSQL, in whole seconds since the
    epoch on SQLite."""
    if reached_at is None:
        return NOT_REACHED
    if dialect == "sqlite":
        whole = timedelta(seconds=1)
        gap = (reached_at - datetime.min) // whole - (missed_at - datetime.min) // whole
        hours = -(-gap // 3600)
    else:
        hours = -(-(reached_at - missed_at) // _HOUR)
    return min(hours, NOT_REACHED)


def stories(
    dialect: str, misses: list[tuple[datetime, int]], reaches: list[datetime], number: str
) -> dict[int, Story]:
    """Each missed call of a number (start, id) by id, with the start of the next one (in start
    then id order) and the hours until the first reach strictly after it."""
    misses.sort()
    reaches.sort()
    told: dict[int, Story] = {}
    for i, (at, pk) in enumerate(misses):
        later = misses[i + 1][0] if i + 1 < len(misses) else None
        j = bisect.bisect_right(reaches, at)
        told[pk] = (
            number,
            at,
            later,
            waited(dialect, at, reaches[j] if j < len(reaches) else None),
        )
    return told


def _read(
    conn: Connection, account_id: int, numbers: list[str]
) -> tuple[dict[str, list[tuple[datetime, int]]], dict[str, list[datetime]]]:
    """The numbers' missed calls (start, id) and the starts of the calls that reach them, read
    through the exact numbers' indexes (`bulk.probing_btrees`)."""
    c = calls.c
    misses: dict[str, list[tuple[datetime, int]]] = {n: [] for n in numbers}
    reaches: dict[str, list[datetime]] = {n: [] for n in numbers}
    with bulk.probing_btrees(conn):
        for among in bulk.one_of(conn, c.src, numbers):
            incoming = select(c.src, c.started_at, c.id, c.status).where(
                c.account_id == account_id, among, c.type == int(CallType.INCOMING)
            )
            for number, at, pk, status in conn.execute(incoming):
                if status == CallStatus.NOT_ANSWERED:
                    misses[number].append((at, pk))
                elif status == CallStatus.ANSWERED:
                    reaches[number].append(at)
        for among in bulk.one_of(conn, c.dst, numbers):
            outgoing = select(c.dst, c.started_at).where(
                c.account_id == account_id, among, c.type == int(CallType.OUTGOING)
            )
            for number, at in conn.execute(outgoing):
                reaches[number].append(at)
    return misses, reaches


def move(
    conn: Connection,
    account_id: int,
    numbers: Iterable[str],
    day_of: DayOf,
    missing: Iterable[str] | None = None,
) -> None:
    """Recompute the stories of the missed calls of `numbers` (outside numbers whose calls a
    batch added, changed or moved) from their calls, and write what changed to `missed_calls` and
    `missed_rollups`. `missing`: those of them that missed a call of the batch (as it is now);
    the others have a story only if they had one before (a number that never missed a call has
    none to redo, nor its calls to read). None: all of them. The caller holds the account's lock
    on them (`tallies`)."""
    ordered = sorted(n for n in set(numbers) if n)
    if not ordered:
        return
    m = missed_calls.c
    before: dict[int, Story] = {}
    for among in bulk.one_of(conn, m.number, ordered):
        known = select(m.id, m.number, m.started_at, m.next_at, m.waited).where(
            m.account_id == account_id, among
        )
        for pk, number, at, later, hours in conn.execute(known):
            before[pk] = (number, at, later, hours)
    if missing is not None:
        told = {number for number, _, _, _ in before.values()}
        ordered = sorted(told | (set(missing) & set(ordered)))
    dialect = conn.dialect.name
    misses, reaches = _read(conn, account_id, ordered)
    now: dict[int, Story] = {}
    for number in ordered:
        now.update(stories(dialect, misses[number], reaches[number], number))
    rollup: Counter[tuple[int, int, int]] = Counter()
    for pk, was in before.items():
        if now.get(pk) != was:
            rollup[_key(was, day_of)] -= 1
    changed = []
    for pk, story in now.items():
        if before.get(pk) != story:
            rollup[_key(story, day_of)] += 1
            number, at, later, hours = story
            changed.append(
                {"account_id": account_id, "id": pk, "number": number, "started_at": at,
                 "next_at": later, "waited": hours}
            )  # fmt: skip
    gone = [{"account_id": account_id, "id": pk} for pk in sorted(before.keys() - now.keys())]
    bulk.delete(conn, missed_calls, gone)
    bulk.put(conn, missed_calls, changed, keys=["account_id", "id"], summed=False)
    rows = [
        {"account_id": account_id, "day": day, "next_day": later, "waited": hours, "calls": n}
        for (day, later, hours), n in sorted(rollup.items())
        if n
    ]
    bulk.put(
        conn, missed_rollups, rows, keys=["account_id", "day", "next_day", "waited"], summed=True
    )


def _key(story: Story, day_of: DayOf) -> tuple[int, int, int]:
    _, at, later, hours = story
    return day_of(at), NEVER_AGAIN if later is None else day_of(later), hours


#: Numbers recomputed per round of `rebuild`.
REBUILD_NUMBERS = 20_000


def rebuild(conn: Connection, account_id: int, day_of: DayOf) -> None:
    """Recompute every missed call's story of the account from its calls (the caller holds the
    account's lock, as for `move`)."""
    conn.execute(missed_calls.delete().where(missed_calls.c.account_id == account_id))
    conn.execute(missed_rollups.delete().where(missed_rollups.c.account_id == account_id))
    c = calls.c
    missed = (
        select(c.src)
        .where(
            c.account_id == account_id,
            c.type == int(CallType.INCOMING),
            c.status == int(CallStatus.NOT_ANSWERED),
            c.src != "",
        )
        .distinct()
    )
    with bulk.grouped_by_sorting(conn):
        numbers = sorted(conn.execute(missed).scalars())
    for start in range(0, len(numbers), REBUILD_NUMBERS):
        move(conn, account_id, numbers[start : start + REBUILD_NUMBERS], day_of)
