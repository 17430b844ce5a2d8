from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callhistory import phpquery, query
from callhistory.errors import ApiError
from callhistory.models import CallStatus, CallType
from callhistory.query import CallQuery, Sort

TASHKENT = ZoneInfo("Asia/Tashkent")
ALLOWED_FILTERS = "src, dst, external_number, duration, conversation, type, status, from, to"


def parse(raw: str) -> CallQuery:
    return query.parse(phpquery.parse(raw.encode()), TASHKENT)


def error_of(raw: str) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiError) as caught:
        parse(raw)
    return caught.value.status, caught.value.body


def test_defaults() -> None:
    assert parse("") == CallQuery(page=1, per_page=20, sort=(Sort("id", False),))


@pytest.mark.parametrize(
    ("raw", "page"),
    [
        ("page=3", 3),
        ("page=0", 1),
        ("page=-3", 1),
        ("page=abc", 1),
        ("page=1.5", 1),
        ("page=", 1),
        ("page[]=2", 1),
        ("page=99999999999999999999999", 1),
        ("page=9223372036854775807", 9223372036854775807),
        ("page=007", 1),
        ("page=+4", 4),
    ],
)
def test_page_never_fails(raw: str, page: int) -> None:
    assert parse(raw).page == page


@pytest.mark.parametrize(
    ("raw", "per_page"), [("per_page=1", 1), ("per_page=300", 300), ("per_page= 15 ", 15)]
)
def test_per_page(raw: str, per_page: int) -> None:
    assert parse(raw).per_page == per_page


INT = "The per page field must be an integer."
BETWEEN = "The per page field must be between 1 and 300."


@pytest.mark.parametrize(
    ("raw", "messages"),
    [
        ("per_page=0", [BETWEEN]),
        ("per_page=301", [BETWEEN]),
        ("per_page=-1", [BETWEEN]),
        ("per_page=0.5", [INT, BETWEEN]),
        ("per_page=1.5", [INT]),  # numeric and within range: only not an integer
        ("per_page=abc", [INT]),  # Laravel measures a string by its length (3)
        ("per_page=" + "9" * 30, [INT, BETWEEN]),
        ("per_page=1e9", [INT, BETWEEN]),
        ("per_page[]=5", [INT]),
        ("per_page=" + "x" * 10_000, [INT, BETWEEN]),
    ],
)
def test_per_page_errors(raw: str, messages: list[str]) -> None:
    status, body = error_of(raw)
    assert status == 422
    assert body["errors"] == {"per_page": messages}


def test_more_errors_message_counts_every_further_message() -> None:
    status, body = error_of("per_page=0.5&filter[type]=9&filter[from]=yesterday")
    assert status == 422
    assert body == {
        "message": "The per page field must be an integer. (and 3 more errors)",
        "errors": {
            "per_page": [INT, BETWEEN],
            "filter.type": ["The selected filter.type is invalid."],
            "filter.from": ["The filter.from field must match the format Y-m-d H:i:s."],
        },
    }
    assert error_of("per_page=0.5")[1]["message"] == f"{INT} (and 1 more error)"
    assert error_of("per_page=0")[1]["message"] == BETWEEN


@pytest.mark.parametrize(
    ("raw", "sort"),
    [
        ("sort=id", (Sort("id", False),)),
        ("sort=-id", (Sort("id", True),)),
        ("sort=datetime", (Sort("started_at", False), Sort("id", False))),
        ("sort=-datetime", (Sort("started_at", True), Sort("id", True))),
        ("sort=-date_time", (Sort("started_at", True), Sort("id", True))),
        ("sort=-datetime,id", (Sort("started_at", True), Sort("id", False))),
        (
            "sort=duration,-conversation",
            (Sort("duration", False), Sort("conversation", True), Sort("id", True)),
        ),
        ("sort=duration,-duration", (Sort("duration", False), Sort("id", False))),
        ("sort=,,-duration,", (Sort("duration", True), Sort("id", True))),
        ("sort=", (Sort("id", False),)),
    ],
)
def test_sort(raw: str, sort: tuple[Sort, ...]) -> None:
    assert parse(raw).sort == sort


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            "sort=foo",
            "Requested sort(s) `foo` is not allowed. "
            "Allowed sort(s) are `id, datetime, duration, conversation`.",
        ),
        (
            "sort=-foo,id,bar",
            "Requested sort(s) `-foo, bar` is not allowed. "
            "Allowed sort(s) are `id, datetime, duration, conversation`.",
        ),
        (
            "filter[foo]=1",
            "Requested filter(s) `foo` are not allowed. "
            f"Allowed filter(s) are `{ALLOWED_FILTERS}`.",
        ),
        (
            "filter[foo]=1&filter[bar][x]=2&sort=nope",
            "Requested filter(s) `foo, bar` are not allowed. "
            f"Allowed filter(s) are `{ALLOWED_FILTERS}`.",
        ),
    ],
)
def test_unknown_filters_and_sorts_are_400(raw: str, message: str) -> None:
    assert error_of(raw) == (400, {"message": message})


def test_unknown_filter_with_empty_value_is_ignored() -> None:
    assert parse("filter[foo]=") == CallQuery()


def test_validation_comes_before_unknown_names() -> None:
    assert error_of("filter[foo]=1&per_page=0")[0] == 422


def test_text_filters() -> None:
    q = parse("filter[src]=1234&filter[dst]=a,b,,a&filter[external_number]=%25_")
    assert q.text == {"src": ("1234",), "dst": ("a", "b"), "external_number": ("%_",)}


@pytest.mark.parametrize(
    ("raw", "numbers"),
    [
        ("filter[duration]=60", {"duration": (("=", 60),)}),
        ("filter[duration]=>60", {"duration": ((">", 60),)}),
        ("filter[duration]=>=60", {"duration": ((">=", 60),)}),
        ("filter[conversation]=<10", {"conversation": (("<", 10),)}),
        ("filter[conversation]=<=10,0", {"conversation": (("<=", 10), ("=", 0))}),
    ],
)
def test_number_filters(raw: str, numbers: dict[str, Any]) -> None:
    assert parse(raw).numbers == numbers


@pytest.mark.parametrize(
    ("raw", "key", "message"),
    [
        (
            "filter[duration]=abc",
            "filter.duration",
            "The filter.duration field must be an integer.",
        ),
        (
            "filter[duration]=1.5",
            "filter.duration",
            "The filter.duration field must be an integer.",
        ),
        ("filter[duration]==5", "filter.duration", "The filter.duration field must be an integer."),
        ("filter[duration]=>", "filter.duration", "The filter.duration field must be an integer."),
        (
            "filter[duration]=1,x",
            "filter.duration",
            "The filter.duration field must be an integer.",
        ),
        (
            "filter[conversation]=" + "9" * 40,
            "filter.conversation",
            "The filter.conversation field must be an integer.",
        ),
        (
            "filter[duration][]=1",
            "filter.duration",
            "The filter.duration field must be an integer.",
        ),
        ("filter[src][]=1", "filter.src", "The filter.src field must be a string."),
        (
            "filter[external_number][a]=1",
            "filter.external_number",
            "The filter.external number field must be a string.",
        ),
        ("filter[type]=4", "filter.type", "The selected filter.type is invalid."),
        ("filter[type]=1,4", "filter.type", "The selected filter.type is invalid."),
        ("filter[type]=Incoming", "filter.type", "The selected filter.type is invalid."),
        ("filter[type][]=1", "filter.type", "The selected filter.type is invalid."),
        ("filter[status]=3", "filter.status", "The selected filter.status is invalid."),
        ("filter[status]=,", "filter.status", "The selected filter.status is invalid."),
        ("filter=x", "filter", "The filter field must be an array."),
        ("sort[]=id", "sort", "The sort field must be a string."),
        (
            "filter[src]=" + ",".join(str(i) for i in range(51)),
            "filter.src",
            "The filter.src field must not have more than 50 items.",
        ),
    ],
)
def test_filter_errors(raw: str, key: str, message: str) -> None:
    status, body = error_of(raw)
    assert (status, body["errors"]) == (422, {key: [message]})
    assert body["message"] == message


def test_enum_filters() -> None:
    q = parse("filter[type]=1,3&filter[status]=2")
    assert q.types == (CallType.INCOMING, CallType.INTERNAL)
    assert q.statuses == (CallStatus.NOT_ANSWERED,)


@pytest.mark.parametrize(
    ("raw", "started_from", "started_to"),
    [
        # Tashkent is UTC+5: local midnight is 19:00 UTC the day before.
        ("filter[from]=2026-01-13", datetime(2026, 1, 12, 19, 0, 0), None),
        ("filter[to]=2026-01-13", None, datetime(2026, 1, 13, 18, 59, 59)),
        (
            "filter[from]=2026-01-13 17:54:36&filter[to]=2026-01-13 17:54:36",
            datetime(2026, 1, 13, 12, 54, 36),
            datetime(2026, 1, 13, 12, 54, 36),
        ),
        ("filter[from]=0001-01-01 00:00:00", datetime.min, None),
        ("filter[to]=9999-12-31 23:59:59", None, datetime(9999, 12, 31, 18, 59, 59)),
    ],
)
def test_period(raw: str, started_from: datetime | None, started_to: datetime | None) -> None:
    q = parse(raw)
    assert (q.started_from, q.started_to) == (started_from, started_to)


@pytest.mark.parametrize(
    "value",
    [
        "2026-1-13",
        "2026-01-13 7:00:00",
        "2026-01-13T07:00:00",
        "2026-02-30",
        "2026-01-13 24:00:00",
        "2026-01-13 10:00",
        "13.01.2026",
        "x" * 10_000,
    ],
)
def test_period_format_errors(value: str) -> None:
    status, body = error_of(f"filter[from]={value}")
    assert (status, body["errors"]) == (
        422,
        {"filter.from": ["The filter.from field must match the format Y-m-d H:i:s."]},
    )


def test_to_before_from() -> None:
    status, body = error_of("filter[from]=2026-01-13 10:00:00&filter[to]=2026-01-13 09:59:59")
    assert (status, body["errors"]) == (
        422,
        {"filter.to": ["The filter.to field must be a date after or equal to filter.from."]},
    )
