"""The statistics' result bodies, from counted rows. Pure: no I/O.

Buckets are cut in the account's timezone: each quarter-hour of the rollups falls wholly inside
one local hour, day and month, whatever the offset (half-hour ones and daylight saving included).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal
from zoneinfo import ZoneInfo

from callhistory import tallies
from callhistory.models import CallStatus, CallType
from callhistory.resources import local_time

HOUR, DAY = tallies.HOUR, tallies.DAY


Unit = Literal["hour", "day", "month"]
#: Each unit's key in the result, how its local time is written, and the quarter-hours the
#: database counts it by (a month is summed from its days here).
UNITS: dict[Unit, tuple[str, str, int]] = {
    "hour": ("date_hour", "%Y-%m-%d %H:00:00", HOUR),
    "day": ("date_day", "%Y-%m-%d", DAY),
    "month": ("date_month", "%Y-%m", DAY),
}
DIRECTIONS = (
    ("incoming", CallType.INCOMING),
    ("outgoing", CallType.OUTGOING),
    ("internal", CallType.INTERNAL),
)
ANSWERED, NOT_ANSWERED = int(CallStatus.ANSWERED), int(CallStatus.NOT_ANSWERED)


def envelope(result: Any) -> dict[str, Any]:
    return {"status": "success", "code": 200, "result": result, "message": "Ok"}


def direction_counts(answered: int, not_answered: int) -> dict[str, int]:
    return {"answered": answered, "not_answered": not_answered, "total": answered + not_answered}


def calls_count(counts: Counter[tuple[int, int]]) -> dict[str, Any]:
    """`{"all": {...}, "incoming": {...}, "outgoing": {...}, "internal": {...}}`"""
    per = {
        name: direction_counts(counts[int(kind), ANSWERED], counts[int(kind), NOT_ANSWERED])
        for name, kind in DIRECTIONS
    }
    return {"all": {name: per[name]["total"] for name, _ in DIRECTIONS}, **per}


def by_period(rows: Iterable[Sequence[Any]], unit: Unit) -> dict[str, Any]:
    """Per direction, the series `all` and `not_answered`: one entry per local hour, day or month
    that has such calls, ascending. Rows are (local key, type, calls, not answered), counted by
    `UNITS[unit][2]` quarter-hours (several days make a month)."""
    key, pattern, per = UNITS[unit]
    every: dict[int, dict[str, int]] = {int(kind): {} for _, kind in DIRECTIONS}
    missed: dict[int, dict[str, int]] = {int(kind): {} for _, kind in DIRECTIONS}
    labels: dict[int, str] = {}
    day_pattern = pattern.partition(" ")[0]  # an hour's label is its day's and the hour
    days: dict[int, str] = {}
    for local, type_, n, m in rows:
        if (label := labels.get(local)) is None:
            # Written once per day (strftime costs more than the rest of a row).
            day, quarters = divmod(local * per - tallies.KEY_BASE, DAY)
            if (text := days.get(day)) is None:
                text = days[day] = tallies.start_of(day * DAY).strftime(day_pattern)
            label = labels[local] = text if per == DAY else f"{text} {quarters // HOUR:02d}:00:00"
        counted, lost = every[type_], missed[type_]
        counted[label] = counted.get(label, 0) + n
        lost[label] = lost.get(label, 0) + m

    def series(counts: dict[str, int]) -> list[dict[str, Any]]:
        return [{key: label, "call_count": n} for label, n in sorted(counts.items()) if n]

    return {
        name: {"all": series(every[kind]), "not_answered": series(missed[kind])}
        for name, kind in DIRECTIONS
    }


def _ratio(part: int, whole: int, digits: int) -> float | None:
    return round(part / whole, digits) if whole else None


def summary(
    rows: Iterable[Any],
    sla: int,
    callers: tuple[int, int],
    hours: Iterable[Sequence[Any]],
) -> dict[str, Any]:
    """Per direction: calls, answered, not answered, answer rate, average and longest wait before
    the answer, total and average talk (per answered call); the service level of incoming calls
    (answered within `sla` seconds, of all incoming); unique and new callers; the busiest local
    hour. Rows: `summary_rows`; hours: (local hour key, type, calls, not answered)."""
    found = {row.type: row for row in rows}
    result: dict[str, Any] = {}
    for name, kind in DIRECTIONS:
        row = found.get(int(kind))
        calls, answered = (row.calls, row.answered) if row else (0, 0)
        talk = row.talk_total if row else 0
        result[name] = {
            "calls": calls,
            "answered": answered,
            "not_answered": calls - answered,
            "answer_rate": _ratio(answered, calls, 4),
            "wait_avg": _ratio(row.wait_total or 0, answered, 1) if row else None,
            "wait_max": row.wait_max if row else None,
            "talk_total": talk,
            "talk_avg": _ratio(talk, answered, 1),
        }
    incoming = found.get(int(CallType.INCOMING))
    within = incoming.within_sla if incoming else 0
    result["service_level"] = {
        "sla": sla,
        "answered_within": within,
        "rate": _ratio(within, incoming.calls if incoming else 0, 4),
    }
    result["unique_callers"], result["new_callers"] = callers
    per_hour: Counter[int] = Counter()
    for local, _type, n, _missed in hours:
        per_hour[local] += n
    busiest = min(per_hour.items(), key=lambda item: (-item[1], item[0]), default=None)
    result["busiest_hour"] = (
        {
            "date_hour": tallies.key_start(busiest[0], HOUR).strftime(UNITS["hour"][1]),
            "call_count": busiest[1],
        }
        if busiest and busiest[1]
        else None
    )
    return result


def heatmap(rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """Calls per local weekday (Monday first) by hour of the day, answered and not. Rows are
    (local hour key, type, calls, not answered)."""
    grids = {status: [[0] * 24 for _ in range(7)] for status in (ANSWERED, NOT_ANSWERED)}
    for local, _type, n, missed in rows:
        start = tallies.key_start(local, HOUR)
        grids[ANSWERED][start.weekday()][start.hour] += n - missed
        grids[NOT_ANSWERED][start.weekday()][start.hour] += missed
    return {
        "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "answered": grids[ANSWERED],
        "not_answered": grids[NOT_ANSWERED],
    }


def by_external_number(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """One entry per external number: incoming and outgoing counts; most calls first."""
    counts: dict[str, Counter[tuple[int, int]]] = {}
    for number, type_, status, n in rows:
        counts.setdefault(number, Counter())[type_, status] += n
    found = []
    for number, per in counts.items():
        entry: dict[str, Any] = {"external_number": number}
        for name, kind in DIRECTIONS[:2]:
            entry[name] = direction_counts(per[int(kind), ANSWERED], per[int(kind), NOT_ANSWERED])
        entry["total"] = entry["incoming"]["total"] + entry["outgoing"]["total"]
        found.append(entry)
    return sorted(found, key=lambda e: (-e["total"], e["external_number"]))


def by_users(rows: Iterable[Sequence[Any]], is_extension: Callable[[str], bool]) -> list[Any]:
    """One entry per extension, in number order: its outgoing and incoming calls, with summed
    durations and conversations. Rows are (number, direction, calls, duration, conversation)."""
    found: dict[str, dict[str, Any]] = {}
    for number, direction, n, duration, conversation in rows:
        if not number or not is_extension(number):
            continue
        entry = found.setdefault(
            number,
            {"number": number}
            | {f"{d}_{m}": 0 for d in ("outgoing", "incoming") for m in MEASURES},
        )
        for measure, value in zip(MEASURES, (n, duration, conversation), strict=True):
            entry[f"{direction}_{measure}"] += int(value or 0)
    return [found[number] for number in sorted(found, key=_number_order)]


MEASURES = ("count", "duration", "conversation")


def _number_order(number: str) -> tuple[int, str]:
    return (len(number), number) if number.isdigit() else (1 << 30, number)


def missed_rows(rows: Iterable[dict[str, Any]], tz: ZoneInfo) -> list[Any]:
    return [
        {
            "number": row["number"],
            "missed_count": int(row["missed_count"]),
            "first_missed_at": local_time(row["first_missed_at"], tz),
            "last_missed_at": local_time(row["last_missed_at"], tz),
            "last_call_id": row["last_call_id"],
        }
        for row in rows
    ]
