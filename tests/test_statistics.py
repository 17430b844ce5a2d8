"""The Statistics API over HTTP: exact bodies for hand-made calls, Laravel's 422s, local hours in
half-hour and daylight-saving timezones, and every report against a plain reading of random calls
(each call's local time computed here, bucket by bucket logic nowhere)."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from callhistory import store, tallies
from callhistory.models import CallStatus, CallType, NewCall
from callhistory.schema import caller_gaps
from callhistory.schema import calls as calls_table
from tests.conftest import Tenant, new_call

BASE = "/api/v1/statistic"
AddCalls = Callable[[int, list[NewCall]], list[int]]
IN, OUT, INT = CallType.INCOMING, CallType.OUTGOING, CallType.INTERNAL
NAMES = {IN: "incoming", OUT: "outgoing", INT: "internal"}


def ok(result: Any) -> dict[str, Any]:
    return {"status": "success", "code": 200, "result": result, "message": "Ok"}


def get(client: TestClient, tenant: Tenant, path: str, **params: str) -> Any:
    response = client.get(f"{BASE}/{path}", params=params, headers=tenant.headers)
    return response.status_code, response.json()


def test_calls_count_exact_body(
    client: TestClient, tenant: Tenant, make_tenant: Callable[..., Tenant], add_calls: AddCalls
) -> None:
    a = tenant.account_id
    at = datetime(2026, 1, 13, 7, 0, 0)  # 12:00 in Tashkent
    add_calls(
        a,
        [
            new_call(a, 1, type=IN, started_at=at),
            new_call(a, 2, type=IN, started_at=at, conversation=0),
            new_call(a, 3, type=IN, started_at=at, conversation=0),
            new_call(a, 4, type=OUT, started_at=at),
            new_call(a, 5, type=INT, started_at=at, external_number=None),
            new_call(a, 6, type=IN, started_at=at + timedelta(days=1)),  # the next day
        ],
    )
    other = make_tenant()
    add_calls(other.account_id, [new_call(other.account_id, 1, type=IN, started_at=at)])
    status, body = get(client, tenant, "calls-count", **{"from": "2026-01-13", "to": "2026-01-13"})
    assert status == 200
    assert body == ok(
        {
            "all": {"incoming": 3, "outgoing": 1, "internal": 1},
            "incoming": {"answered": 1, "not_answered": 2, "total": 3},
            "outgoing": {"answered": 1, "not_answered": 0, "total": 1},
            "internal": {"answered": 1, "not_answered": 0, "total": 1},
        }
    )
    assert list(body) == ["status", "code", "result", "message"]
    assert list(body["result"]) == ["all", "incoming", "outgoing", "internal"]


def test_calls_by_hour_and_external_number_exact_bodies(
    client: TestClient, make_tenant: Callable[..., Tenant], add_calls: AddCalls
) -> None:
    tenant = make_tenant(timezone="Asia/Kolkata")  # UTC+5:30
    a = tenant.account_id
    add_calls(
        a,
        [
            # 17:29:59 and 17:30:00 local are the 17:00 hour; 18:30 UTC-wise is the next
            new_call(a, 1, type=IN, started_at=datetime(2026, 1, 13, 11, 59, 59)),
            new_call(a, 2, type=IN, started_at=datetime(2026, 1, 13, 12, 0, 0), conversation=0),
            new_call(a, 3, type=IN, started_at=datetime(2026, 1, 13, 12, 30, 0)),
            new_call(a, 4, type=OUT, started_at=datetime(2026, 1, 13, 12, 29, 59),
                     external_number="712005060"),
        ],
    )  # fmt: skip
    period = {"from": "2026-01-13", "to": "2026-01-13"}
    status, body = get(client, tenant, "calls-by-hour", **period)
    assert (status, body) == (
        200,
        ok(
            {
                "incoming": {
                    "all": [
                        {"date_hour": "2026-01-13 17:00:00", "call_count": 2},
                        {"date_hour": "2026-01-13 18:00:00", "call_count": 1},
                    ],
                    "not_answered": [{"date_hour": "2026-01-13 17:00:00", "call_count": 1}],
                },
                "outgoing": {
                    "all": [{"date_hour": "2026-01-13 17:00:00", "call_count": 1}],
                    "not_answered": [],
                },
                "internal": {"all": [], "not_answered": []},
            }
        ),
    )
    status, body = get(client, tenant, "calls-by-external-number", **period)
    assert (status, body) == (
        200,
        ok(
            [
                {
                    "external_number": "781130590",
                    "incoming": {"answered": 2, "not_answered": 1, "total": 3},
                    "outgoing": {"answered": 0, "not_answered": 0, "total": 0},
                    "total": 3,
                },
                {
                    "external_number": "712005060",
                    "incoming": {"answered": 0, "not_answered": 0, "total": 0},
                    "outgoing": {"answered": 1, "not_answered": 0, "total": 1},
                    "total": 1,
                },
            ]
        ),
    )
    only = get(client, tenant, "calls-by-day", **period, external_number="712005060")[1]
    assert only["result"]["outgoing"]["all"] == [{"date_day": "2026-01-13", "call_count": 1}]
    assert only["result"]["incoming"]["all"] == []


def test_daylight_saving_hours(
    client: TestClient, make_tenant: Callable[..., Tenant], add_calls: AddCalls
) -> None:
    tenant = make_tenant(timezone="America/New_York")
    a = tenant.account_id
    # 2026-11-01: 01:00-02:00 EDT, then 01:00-02:00 again in EST; both are the local 01:00 hour.
    add_calls(
        a,
        [
            new_call(a, 1, type=IN, started_at=datetime(2026, 11, 1, 5, 15)),  # 01:15 EDT
            new_call(a, 2, type=IN, started_at=datetime(2026, 11, 1, 6, 15)),  # 01:15 EST
            new_call(a, 3, type=IN, started_at=datetime(2026, 11, 1, 7, 15)),  # 02:15 EST
        ],
    )
    body = get(client, tenant, "calls-by-hour", **{"from": "2026-11-01", "to": "2026-11-01"})[1]
    assert body["result"]["incoming"]["all"] == [
        {"date_hour": "2026-11-01 01:00:00", "call_count": 2},
        {"date_hour": "2026-11-01 02:00:00", "call_count": 1},
    ]


def test_calls_by_users_exact_body(client: TestClient, tenant: Tenant, add_calls: AddCalls) -> None:
    a = tenant.account_id
    at = datetime(2026, 1, 13, 7, 0, 0)
    add_calls(
        a,
        [
            new_call(a, 1, type=OUT, src="101", dst="998901112233", duration=40, conversation=30,
                     started_at=at),
            new_call(a, 2, type=OUT, src="101", dst="998901112234", duration=9, conversation=0,
                     started_at=at),
            new_call(a, 3, type=IN, src="998907654321", dst="1002", duration=50, conversation=45,
                     started_at=at),
            new_call(a, 4, type=INT, src="101", dst="99", duration=20, conversation=15,
                     started_at=at, external_number=None),
            new_call(a, 5, type=IN, src="998907654322", dst="99", duration=25, conversation=0,
                     started_at=at),
            # not an extension (the default pattern is 2-5 digits): left out
            new_call(a, 6, type=IN, src="998907654323", dst="781130590", started_at=at),
            new_call(a, 7, type=OUT, src="101", dst="998901112235",
                     started_at=at - timedelta(days=2)),
        ],
    )  # fmt: skip
    period = {"from": "2026-01-13", "to": "2026-01-13"}

    def row(number: str, *values: int) -> dict[str, Any]:
        keys = [
            f"{d}_{m}"
            for d in ("outgoing", "incoming")
            for m in ("count", "duration", "conversation")
        ]
        return {"number": number, **dict(zip(keys, values, strict=True))}

    assert get(client, tenant, "calls-by-users", **period) == (
        200,
        ok(
            [
                row("99", 0, 0, 0, 2, 45, 15),
                row("101", 3, 69, 45, 0, 0, 0),
                row("1002", 0, 0, 0, 1, 50, 45),
            ]
        ),
    )
    assert get(client, tenant, "calls-by-users", **period, status="2") == (
        200,
        ok([row("99", 0, 0, 0, 1, 25, 0), row("101", 1, 9, 0, 0, 0, 0)]),
    )
    assert get(client, tenant, "calls-by-users", **period, status="3") == (
        422,
        {
            "message": "The selected status is invalid.",
            "errors": {"status": ["The selected status is invalid."]},
        },
    )


def test_berlin_23_and_25_hour_days(
    client: TestClient, make_tenant: Callable[..., Tenant], add_calls: AddCalls
) -> None:
    """A call every 15 minutes of UTC from 2026-03-28 to 2026-03-30 and around 2026-10-25:
    Berlin's 2026-03-29 has 23 hours (92 calls), 2026-10-25 has 25 (100 calls)."""
    tenant = make_tenant(timezone="Europe/Berlin")
    a = tenant.account_id
    starts = [datetime(2026, 3, 27, 12) + timedelta(minutes=15 * n) for n in range(4 * 24 * 4)]
    starts += [datetime(2026, 10, 23, 12) + timedelta(minutes=15 * n) for n in range(4 * 24 * 4)]
    add_calls(a, [new_call(a, n, type=IN, started_at=at) for n, at in enumerate(starts)])
    for first, last, counts in (
        ("2026-03-28", "2026-03-30", [96, 92, 96]),
        ("2026-10-24", "2026-10-26", [96, 100, 96]),
    ):
        days = get(client, tenant, "calls-by-day", **{"from": first, "to": last})[1]
        assert [d["call_count"] for d in days["result"]["incoming"]["all"]] == counts
        assert days["result"]["incoming"]["all"][0]["date_day"] == first
    hours = get(client, tenant, "calls-by-hour", **{"from": "2026-10-25", "to": "2026-10-25"})
    series = hours[1]["result"]["incoming"]["all"]
    assert [h["date_hour"][11:13] for h in series] == [f"{h:02d}" for h in range(24)]
    assert [h["call_count"] for h in series if h["call_count"] != 4] == [8]  # 02:00 twice
    assert series[2] == {"date_hour": "2026-10-25 02:00:00", "call_count": 8}


def test_missed_unreturned(
    client: TestClient, tenant: Tenant, make_tenant: Callable[..., Tenant], add_calls: AddCalls
) -> None:
    a = tenant.account_id
    day = datetime(2026, 1, 13, 5, 0)  # 10:00 in Tashkent

    def missed(n: int, number: str, hours: float, **fields: Any) -> NewCall:
        return new_call(a, n, type=IN, src=number, dst="101", conversation=0,
                        started_at=day + timedelta(hours=hours), **fields)  # fmt: skip

    add_calls(
        a,
        [
            missed(1, "998901", 0), missed(2, "998901", 1),  # called back an hour later
            new_call(a, 3, type=OUT, src="101", dst="998901", started_at=day + timedelta(hours=2)),
            missed(4, "998902", 0),  # called back after 26 hours
            new_call(a, 5, type=OUT, src="101", dst="998902", started_at=day + timedelta(hours=26)),
            missed(6, "998903", -1),  # got through himself half an hour later
            new_call(a, 7, type=IN, src="998903", dst="102", started_at=day - timedelta(hours=0.5)),
            new_call(a, 8, type=OUT, src="101", dst="998904", started_at=day - timedelta(hours=3)),
            missed(9, "998904", 2),  # the only call to them came before the miss
            missed(10, "998905", 30),  # outside the period
            new_call(a, 11, type=INT, src="102", dst="101", conversation=0, started_at=day),
            missed(12, "998904", 1.5),
        ],
    )  # fmt: skip
    other = make_tenant()
    b = other.account_id
    add_calls(
        b, [new_call(b, 1, type=OUT, src="1", dst="998904", started_at=day + timedelta(hours=3))]
    )
    period = {"from": "2026-01-13", "to": "2026-01-13"}
    status, body = get(client, tenant, "missed-unreturned", **period)
    assert status == 200
    result = body["result"]
    assert result["data"] == [
        {"number": "998904", "missed_count": 2, "first_missed_at": "2026-01-13 11:30:00",
         "last_missed_at": "2026-01-13 12:00:00", "last_call_id": 9},
        {"number": "998902", "missed_count": 1, "first_missed_at": "2026-01-13 10:00:00",
         "last_missed_at": "2026-01-13 10:00:00", "last_call_id": 4},
    ]  # fmt: skip
    assert result["meta"]["total"] == 2
    longer = get(client, tenant, "missed-unreturned", **period, within="48")[1]["result"]
    assert [r["number"] for r in longer["data"]] == ["998904"]
    second = get(client, tenant, "missed-unreturned", **period, per_page="1", page="2")[1]
    assert [r["number"] for r in second["result"]["data"]] == ["998902"]
    assert second["result"]["meta"]["last_page"] == 2
    assert second["result"]["links"]["prev"].endswith("page=1")
    assert get(client, tenant, "missed-unreturned", **period, within="0") == (
        422,
        {"message": "The within field must be between 1 and 720.",
         "errors": {"within": ["The within field must be between 1 and 720."]}},
    )  # fmt: skip


FORMAT = "The {} field must match the format Y-m-d H:i:s."


@pytest.mark.parametrize(
    ("path", "params", "errors"),
    [
        ("calls-count", {}, {"from": ["The from field is required."],
                             "to": ["The to field is required."]}),
        ("calls-count", {"from": "2026-01-01", "to": "31.01.2026"}, {"to": [FORMAT.format("to")]}),
        ("calls-count", {"from": "2026-02-30", "to": ""},
         {"from": [FORMAT.format("from")], "to": ["The to field is required."]}),
        ("calls-count", {"from": "2026-01-02", "to": "2026-01-01"},
         {"to": ["The to field must be a date after or equal to from."]}),
        ("calls-by-hour", {"from": "2026-01-01", "to": "2026-02-01"},
         {"to": ["The to field must be a date before or equal to 2026-02-01 00:00:00."]}),
        ("calls-by-day", {"from": "2026-01-01 10:00:00", "to": "2027-01-02 10:00:01"},
         {"to": ["The to field must be a date before or equal to 2027-01-02 10:00:00."]}),
        ("calls-by-month", {"from": "2024-02-29", "to": "2034-03-01"},
         {"to": ["The to field must be a date before or equal to 2034-02-28 00:00:00."]}),
        ("calls-count", {"from": "2026-01-01", "to": "2026-01-02", "external_number[]": "1"},
         {"external_number": ["The external number field must be a string."]}),
        ("summary", {"from": "2026-01-01", "to": "2026-01-02", "sla": "x"},
         {"sla": ["The sla field must be an integer."]}),
        ("summary", {"from": "2026-01-01", "to": "2026-01-02", "sla": "3601"},
         {"sla": ["The sla field must be between 0 and 3600."]}),
        ("summary", {"from": "2026-01-01", "to": "2027-01-03"},
         {"to": ["The to field must be a date before or equal to 2027-01-02 00:00:00."]}),
    ],
)  # fmt: skip
def test_validation_errors(
    client: TestClient,
    tenant: Tenant,
    path: str,
    params: dict[str, str],
    errors: dict[str, list[str]],
) -> None:
    messages = [m for ms in errors.values() for m in ms]
    more = len(messages) - 1
    message = messages[0] + (f" (and {more} more error{'s' * (more > 1)})" if more else "")
    assert get(client, tenant, path, **params) == (422, {"message": message, "errors": errors})


def test_auth(client: TestClient, make_tenant: Callable[..., Tenant]) -> None:
    period = {"from": "2026-01-01", "to": "2026-01-02"}
    response = client.get(f"{BASE}/calls-count", params=period)
    assert (response.status_code, response.json()) == (401, {"message": "Unauthenticated."})
    writer = make_tenant(abilities=("calls:write",))
    response = client.get(f"{BASE}/heatmap", params=period, headers=writer.headers)
    assert (response.status_code, response.json()) == (
        403,
        {"message": "This action is unauthorized."},
    )


# -- every report against a plain reading of random calls -----------------------------------------

START = datetime(2026, 3, 5)  # naive UTC; New York's clocks change on 2026-03-08


def random_calls(rng: random.Random, account_id: int) -> list[NewCall]:
    out = []
    for n in range(700):
        seconds = rng.randrange(0, 8 * 86400)
        if rng.random() < 0.3:  # on and around quarter-hours
            seconds = seconds // 900 * 900 + rng.choice([-1, 0, 1])
        kind = rng.choice([IN, IN, OUT, INT])
        conversation = rng.choice([0, 12, 95])
        phone, extension = f"99890{rng.randrange(40):07d}", rng.choice(["100", "101", "1002"])
        caller = phone if kind is IN else rng.choice(["100", "101"])
        out.append(
            new_call(
                account_id,
                n,
                type=kind,
                src=caller,
                dst=phone if kind is OUT else extension,
                conversation=conversation,
                duration=conversation + rng.randrange(1, 30),
                started_at=START + timedelta(seconds=max(seconds, 0)),
                external_number=None if kind is INT else rng.choice(["781130590", "712005060"]),
            )
        )
    return out


@pytest.mark.parametrize(
    "timezone", ["Asia/Kolkata", "America/New_York", "Asia/Kathmandu", "America/Havana"]
)
def test_reports_match_a_plain_reading(
    client: TestClient,
    make_tenant: Callable[..., Tenant],
    add_calls: AddCalls,
    timezone: str,
) -> None:
    tenant = make_tenant(timezone=timezone)
    zone = ZoneInfo(timezone)
    rng = random.Random(timezone)
    stored = random_calls(rng, tenant.account_id)
    add_calls(tenant.account_id, stored)

    def local(moment: datetime) -> datetime:
        return moment.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)

    for _ in range(25):
        lo = local(START) + timedelta(seconds=rng.randrange(-3600, 8 * 86400))
        hi = lo + timedelta(seconds=rng.randrange(0, 5 * 86400))
        if rng.random() < 0.3:
            lo = lo.replace(minute=0, second=0)
        if rng.random() < 0.3:  # whole local days: the rollups by day answer
            lo, hi = (
                lo.replace(hour=0, minute=0, second=0),
                hi.replace(hour=23, minute=59, second=59),
            )
        period = {"from": f"{lo:%Y-%m-%d %H:%M:%S}", "to": f"{hi:%Y-%m-%d %H:%M:%S}"}
        numbers = rng.choice([None, "781130590", "712005060,781130590"])
        if numbers:
            period["external_number"] = numbers
        inside = [
            c
            for c in stored
            if lo <= local(c.started_at) <= hi
            and (numbers is None or c.external_number in numbers.split(","))
        ]
        counts = Counter((c.type, c.status) for c in inside)
        expected_count = {
            "all": {NAMES[k]: sum(n for (t, _), n in counts.items() if t == k) for k in NAMES},
            **{
                NAMES[k]: {
                    "answered": counts[k, CallStatus.ANSWERED],
                    "not_answered": counts[k, CallStatus.NOT_ANSWERED],
                    "total": counts[k, CallStatus.ANSWERED] + counts[k, CallStatus.NOT_ANSWERED],
                }
                for k in NAMES
            },
        }
        assert get(client, tenant, "calls-count", **period) == (200, ok(expected_count)), period

        for unit, key, pattern in (
            ("hour", "date_hour", "%Y-%m-%d %H:00:00"),
            ("day", "date_day", "%Y-%m-%d"),
            ("month", "date_month", "%Y-%m"),
        ):

            def series(calls: list[NewCall], key: str = key, pattern: str = pattern) -> list[Any]:
                found = Counter(local(c.started_at).strftime(pattern) for c in calls)
                return [{key: label, "call_count": n} for label, n in sorted(found.items())]

            expected = {
                NAMES[k]: {
                    "all": series([c for c in inside if c.type == k]),
                    "not_answered": series(
                        [c for c in inside if c.type == k and c.status == CallStatus.NOT_ANSWERED]
                    ),
                }
                for k in NAMES
            }
            got = get(client, tenant, f"calls-by-{unit}", **period)
            assert got == (200, ok(expected)), (unit, period)
            for name, total in expected_count["all"].items():  # every series sums to calls-count
                assert sum(b["call_count"] for b in got[1]["result"][name]["all"]) == total

        grid = {s: [[0] * 24 for _ in range(7)] for s in CallStatus}
        for c in inside:
            moment = local(c.started_at)
            grid[c.status][moment.weekday()][moment.hour] += 1
        heat = get(client, tenant, "heatmap", **period)[1]["result"]
        assert (heat["answered"], heat["not_answered"]) == (
            grid[CallStatus.ANSWERED],
            grid[CallStatus.NOT_ANSWERED],
        ), period

        per_number = Counter((c.external_number, c.type, c.status) for c in inside if c.type != INT)
        expected_numbers = [
            {
                "external_number": number,
                **{
                    NAMES[k]: {
                        "answered": per_number[number, k, CallStatus.ANSWERED],
                        "not_answered": per_number[number, k, CallStatus.NOT_ANSWERED],
                        "total": per_number[number, k, CallStatus.ANSWERED]
                        + per_number[number, k, CallStatus.NOT_ANSWERED],
                    }
                    for k in (IN, OUT)
                },
                "total": sum(n for (e, _, _), n in per_number.items() if e == number),
            }
            for number in sorted({e for e, _, _ in per_number})
        ]
        expected_numbers.sort(key=lambda e: -e["total"])
        got = get(client, tenant, "calls-by-external-number", **period)
        assert got == (200, ok(expected_numbers)), period

        status = rng.choice([None, CallStatus.ANSWERED, CallStatus.NOT_ANSWERED])
        assert get(
            client,
            tenant,
            "calls-by-users",
            **period,
            **({"status": str(int(status))} if status else {}),
        ) == (200, ok(plain_users(inside, status))), (period, status)

        sla = rng.choice([None, 0, 20, 60])
        asked = period if sla is None else {**period, "sla": str(sla)}
        assert get(client, tenant, "summary", **asked) == (
            200,
            ok(plain_summary(inside, stored, lo, 20 if sla is None else sla, local)),
        ), asked


def plain_users(inside: list[NewCall], status: CallStatus | None) -> list[dict[str, Any]]:
    """calls-by-users read plainly: each extension's calls placed (outgoing, internal) and
    received (incoming, internal); the extensions are 2-5 digits (the default layout)."""
    found: dict[str, dict[str, int]] = {}
    for c in inside:
        if status is not None and c.status != status:
            continue
        for number, direction, kinds in (
            (c.src, "outgoing", (OUT, INT)),
            (c.dst, "incoming", (IN, INT)),
        ):
            if c.type in kinds and number.isdigit() and 2 <= len(number) <= 5:
                entry = found.setdefault(
                    number,
                    {
                        f"{d}_{m}": 0
                        for d in ("outgoing", "incoming")
                        for m in ("count", "duration", "conversation")
                    },
                )
                entry[f"{direction}_count"] += 1
                entry[f"{direction}_duration"] += c.duration
                entry[f"{direction}_conversation"] += c.conversation
    return [{"number": n, **found[n]} for n in sorted(found, key=lambda n: (len(n), n))]


def plain_summary(
    inside: list[NewCall],
    stored: list[NewCall],
    lo: datetime,
    sla: int,
    local: Callable[[datetime], datetime],
) -> dict[str, Any]:
    """The summary read plainly from the calls in the period (and, for new callers, all)."""

    def ratio(part: float, whole: int, digits: int) -> float | None:
        return round(part / whole, digits) if whole else None

    result: dict[str, Any] = {}
    waits: dict[CallType, list[int]] = {}
    for kind, name in NAMES.items():
        mine = [c for c in inside if c.type == kind]
        answered = [c for c in mine if c.answered_at is not None]
        waits[kind] = [int((c.answered_at - c.started_at).total_seconds()) for c in answered]  # type: ignore[operator]
        talk = sum(c.conversation for c in answered)
        result[name] = {
            "calls": len(mine),
            "answered": len(answered),
            "not_answered": len(mine) - len(answered),
            "answer_rate": ratio(len(answered), len(mine), 4),
            "wait_avg": ratio(sum(waits[kind]), len(answered), 1) if mine else None,
            "wait_max": max(waits[kind], default=None),
            "talk_total": talk,
            "talk_avg": ratio(talk, len(answered), 1),
        }
    within = sum(1 for w in waits[IN] if w <= sla)
    incoming = result["incoming"]["calls"]
    result["service_level"] = {"sla": sla, "answered_within": within,
                               "rate": ratio(within, incoming, 4)}  # fmt: skip
    callers = {c.src for c in inside if c.type == IN}
    known = {c.src for c in stored if c.type == IN and local(c.started_at) < lo}
    result["unique_callers"], result["new_callers"] = len(callers), len(callers - known)
    hours = Counter(local(c.started_at).strftime("%Y-%m-%d %H:00:00") for c in inside)
    busiest = min(hours.items(), key=lambda item: (-item[1], item[0]), default=None)
    result["busiest_hour"] = busiest and {"date_hour": busiest[0], "call_count": busiest[1]}
    return result


def test_summary_exact_body(client: TestClient, tenant: Tenant, add_calls: AddCalls) -> None:
    a = tenant.account_id
    at = datetime(2026, 1, 13, 5, 0, 0)  # 10:00 in Tashkent
    add_calls(
        a,
        [
            new_call(a, 0, type=IN, src="998900000001", started_at=at - timedelta(days=30)),
            # answered after 10 s (talk 20) and after 40 s (talk 60); one missed
            new_call(a, 1, type=IN, src="998900000001", started_at=at, duration=30),
            new_call(a, 2, type=IN, src="998900000002", started_at=at + timedelta(minutes=5),
                     duration=100, conversation=60),
            new_call(a, 3, type=IN, src="998900000003", started_at=at + timedelta(hours=2),
                     conversation=0),
            new_call(a, 4, type=OUT, started_at=at + timedelta(hours=2, minutes=1), duration=25,
                     conversation=20),
        ],
    )  # fmt: skip
    status, body = get(client, tenant, "summary", **{"from": "2026-01-13", "to": "2026-01-13"})
    assert status == 200
    assert body == ok(
        {
            "incoming": {"calls": 3, "answered": 2, "not_answered": 1, "answer_rate": 0.6667,
                         "wait_avg": 25.0, "wait_max": 40, "talk_total": 80, "talk_avg": 40.0},
            "outgoing": {"calls": 1, "answered": 1, "not_answered": 0, "answer_rate": 1.0,
                         "wait_avg": 5.0, "wait_max": 5, "talk_total": 20, "talk_avg": 20.0},
            "internal": {"calls": 0, "answered": 0, "not_answered": 0, "answer_rate": None,
                         "wait_avg": None, "wait_max": None, "talk_total": 0, "talk_avg": None},
            "service_level": {"sla": 20, "answered_within": 1, "rate": 0.3333},
            "unique_callers": 3,
            "new_callers": 2,
            "busiest_hour": {"date_hour": "2026-01-13 10:00:00", "call_count": 2},
        }
    )  # fmt: skip
    empty = get(client, tenant, "summary", **{"from": "2026-02-01", "to": "2026-02-01"})[1]
    assert empty["result"]["busiest_hour"] is None
    assert empty["result"]["service_level"] == {"sla": 20, "answered_within": 0, "rate": None}


def test_callers_and_missed_unreturned_follow_calls_that_move(
    client: TestClient, db: Engine, tenant: Tenant, add_calls: AddCalls
) -> None:
    """Numbers that call in (answered or missed) and are called on scattered days, some called
    back exactly `within` hours after a miss or a second later, stored out of order in several
    batches, then re-merged onto other days, into other directions and statuses and from other
    numbers (as late legs do): the summary's unique and new callers and the missed-unreturned
    list (every page, total) over whole local days (read from the numbers' days and the missed
    calls' stories) and over periods with partial days agree with the calls."""
    a, zone, rng = tenant.account_id, ZoneInfo("Asia/Tashkent"), random.Random(12)

    def moment() -> datetime:
        return START + timedelta(seconds=rng.randrange(0, 21 * 86400))

    def call(n: int, at: datetime | None = None, **fields: Any) -> NewCall:
        kind = rng.choice([IN, IN, IN, OUT])
        phone = f"99890{rng.randrange(30):07d}"
        values = {"type": kind, "src": phone if kind is IN else "101",
                  "dst": "101" if kind is IN else phone, "conversation": rng.choice([0, 0, 20]),
                  "started_at": at or moment(), **fields}  # fmt: skip
        return new_call(a, n, **values)

    made = [call(n) for n in range(300)]
    for n in range(300, 340, 2):  # a miss, and a call back 24 hours later or a second after
        miss = call(n, type=IN, conversation=0, dst="101")
        late = timedelta(hours=24, seconds=n % 4 // 2)
        back = call(n + 1, miss.started_at + late, type=OUT, src="102", dst=miss.src)
        made += [miss, back]
    shuffled = rng.sample(made, len(made))
    for start in range(0, len(made), 100):
        add_calls(a, shuffled[start : start + 100])
    # Numbers whose only call was answered, until a late leg makes it a miss.
    answered = [call(n, type=IN, src=f"99891{n:07d}", dst="101", conversation=20)
                for n in range(340, 350)]  # fmt: skip
    add_calls(a, answered)
    for round_ in range(2):
        with db.begin() as conn:
            moved = rng.sample(made, 80)
            again = [dataclasses.replace(call(0), call_id=c.call_id) for c in moved]
            if round_ == 0:
                moved += answered
                again += [call(n, c.started_at, type=IN, src=c.src, dst="101", conversation=0)
                          for n, c in zip(range(340, 350), answered, strict=True)]  # fmt: skip
            stored = store.get_many_by_call_id(conn, a, [c.call_id for c in moved])
            store.update_calls(conn, a, [(stored[c.call_id], c) for c in again])
    with db.connect() as conn:
        rows = conn.execute(select(calls_table).where(calls_table.c.account_id == a)).all()

    def local(moment: datetime) -> datetime:
        return moment.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)

    def text(moment: datetime) -> str:
        return f"{local(moment):%Y-%m-%d %H:%M:%S}"

    def unreturned(lo: datetime, hi: datetime, within: int) -> list[dict[str, Any]]:
        waiting = []
        for number in sorted({r.src for r in rows if r.type == IN}):
            misses = [r for r in rows if r.type == IN and r.status == CallStatus.NOT_ANSWERED
                      and r.src == number and lo <= local(r.started_at) <= hi]  # fmt: skip
            if not misses:
                continue
            last = max(misses, key=lambda r: (r.started_at, r.id))
            deadline = last.started_at + timedelta(hours=within)
            if any(
                last.started_at < r.started_at <= deadline
                and ((r.type == OUT and r.dst == number)
                     or (r.type == IN and r.status == CallStatus.ANSWERED and r.src == number))
                for r in rows
            ):  # fmt: skip
                continue
            waiting.append({"number": number, "missed_count": len(misses),
                            "first_missed_at": text(min(r.started_at for r in misses)),
                            "last_missed_at": text(last.started_at), "last_call_id": last.id,
                            "at": last.started_at})  # fmt: skip
        waiting.sort(key=lambda e: (-(e["at"] - START).total_seconds(), e["number"]))
        return [{k: v for k, v in e.items() if k != "at"} for e in waiting]

    whole = listed = 0
    for _ in range(40):
        lo = local(START) + timedelta(seconds=rng.randrange(-86400, 21 * 86400))
        hi = lo + timedelta(seconds=rng.randrange(0, 12 * 86400))
        if rng.random() < 0.6:
            lo, hi = (
                lo.replace(hour=0, minute=0, second=0),
                hi.replace(hour=23, minute=59, second=59),
            )
            whole += 1
        callers = {r.src for r in rows if r.type == IN and lo <= local(r.started_at) <= hi}
        known = {r.src for r in rows if r.type == IN and local(r.started_at) < lo}
        period = {"from": f"{lo:%Y-%m-%d %H:%M:%S}", "to": f"{hi:%Y-%m-%d %H:%M:%S}"}
        status, body = get(client, tenant, "summary", **period)
        assert status == 200
        found = (body["result"]["unique_callers"], body["result"]["new_callers"])
        assert found == (len(callers), len(callers - known)), period
        within = rng.choice([1, 24, 24, 100])
        expected = unreturned(lo, hi, within)
        listed += len(expected)
        for page in (1, 2, 3):
            params = {**period, "within": str(within), "per_page": "4", "page": str(page)}
            status, body = get(client, tenant, "missed-unreturned", **params)
            assert status == 200
            got = (body["result"]["meta"]["total"], body["result"]["data"])
            assert got == (len(expected), expected[page * 4 - 4 : page * 4]), params
    assert whole > 15 and listed > 100


def test_callers_kept_a_day_at_a_time_equal_the_rebuilt_ones(
    client: TestClient, db: Engine, tenant: Tenant, add_calls: AddCalls
) -> None:
    """Calls stored as a PBX stores them, a day at a time (a few calls: `tallies.add`; one busy
    day of 150: `add_stored`), from numbers that call again after pauses of days or weeks (longer
    than the margin a batch reads its numbers' days in), some days arriving late (before days
    already stored), then re-merged onto other days and numbers: the kept `caller_gaps` equal
    the ones rebuilt from the calls, and the summary's unique and new callers over whole local
    days agree with the calls."""
    a, zone, rng = tenant.account_id, ZoneInfo("Asia/Tashkent"), random.Random(29)
    phones = [f"99893{n:07d}" for n in range(40)]

    def call(n: int, day: int) -> NewCall:
        at = START + timedelta(days=day, seconds=rng.randrange(86400))
        return new_call(a, n, type=IN, src=rng.choice(phones), dst="101", started_at=at)

    made = [call(n, rng.randrange(90)) for n in range(300)] + [call(n, 45) for n in range(300, 450)]
    batches: dict[int, list[NewCall]] = {}
    for c in made:
        batches.setdefault((c.started_at - START).days, []).append(c)
    late = set(rng.sample(sorted(batches), 10)) | {45}
    for day in [d for d in sorted(batches) if d not in late] + sorted(late, reverse=True):
        add_calls(a, batches[day])
    with db.begin() as conn:  # late legs: other days, other numbers
        moved = rng.sample(made, 30)
        stored = store.get_many_by_call_id(conn, a, [c.call_id for c in moved])
        again = [dataclasses.replace(call(0, rng.randrange(90)), call_id=c.call_id) for c in moved]
        store.update_calls(conn, a, [(stored[c.call_id], c) for c in again])
    gaps = select(caller_gaps).where(caller_gaps.c.account_id == a, caller_gaps.c.callers != 0)
    with db.begin() as conn:
        kept = sorted(conn.execute(gaps).all())
        tallies.rebuild_numbers(conn, a, zone)
        assert sorted(conn.execute(gaps).all()) == kept
        rows = conn.execute(select(calls_table).where(calls_table.c.account_id == a)).all()
    assert len({row.since for row in kept}) > 30  # pauses of many lengths

    def local(moment: datetime) -> datetime:
        return moment.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)

    for _ in range(10):
        first = local(START).date() + timedelta(days=rng.randrange(95))
        last = first + timedelta(days=rng.randrange(30))
        inside = {r.src for r in rows if first <= local(r.started_at).date() <= last}
        known = {r.src for r in rows if local(r.started_at).date() < first}
        period = {"from": f"{first}", "to": f"{last}"}
        result = get(client, tenant, "summary", **period)[1]["result"]
        found = (result["unique_callers"], result["new_callers"])
        assert found == (len(inside), len(inside - known)), period


def test_calls_count_by_history_agrees_with_the_list(
    client: TestClient, tenant: Tenant, add_calls: AddCalls
) -> None:
    rng = random.Random(11)
    add_calls(tenant.account_id, random_calls(rng, tenant.account_id))
    for filters in (
        {},
        {"filter[type]": "1,3"},
        {"filter[status]": "2", "filter[from]": "2026-03-06 10:17:00"},
        {"filter[from]": "2026-03-06", "filter[to]": "2026-03-08 12:00:01", "filter[type]": "2"},
        {"filter[src]": "10", "filter[duration]": ">20"},
    ):
        listed = client.get("/api/v1/call-history", params=filters, headers=tenant.headers)
        counted = client.get(
            f"{BASE}/calls-count-by-history", params=filters, headers=tenant.headers
        )
        assert counted.status_code == 200
        result = counted.json()["result"]
        assert sum(result["all"].values()) == listed.json()["meta"]["total"], filters
    bad = client.get(
        f"{BASE}/calls-count-by-history", params={"filter[nope]": "1"}, headers=tenant.headers
    )
    assert bad.status_code == 400
