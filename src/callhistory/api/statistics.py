"""The Statistics API: counts of the account's calls by direction, period and number."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from callhistory import accounts, pagination, phpquery, query, store
from callhistory.api import docs
from callhistory.api.deps import ConnDep, ReaderDep, SettingsDep, base_url
from callhistory.api.responses import JSONResponse
from callhistory.stats import params, report
from callhistory.stats import store as stats_store

# -- the response shapes, for the OpenAPI description (routes render their own JSON) --------------

Result = TypeVar("Result")


class Envelope(BaseModel, Generic[Result]):
    status: Literal["success"]
    code: Literal[200]
    result: Result
    message: Literal["Ok"]


class DirectionCounts(BaseModel):
    answered: int
    not_answered: int
    total: int


class Totals(BaseModel):
    incoming: int
    outgoing: int
    internal: int


class CallsCount(BaseModel):
    all: Totals
    incoming: DirectionCounts
    outgoing: DirectionCounts
    internal: DirectionCounts


class HourBucket(BaseModel):
    date_hour: str = Field(examples=["2026-01-13 17:00:00"])
    call_count: int


class DayBucket(BaseModel):
    date_day: str = Field(examples=["2026-01-13"])
    call_count: int


class MonthBucket(BaseModel):
    date_month: str = Field(examples=["2026-01"])
    call_count: int


Bucket = TypeVar("Bucket", HourBucket, DayBucket, MonthBucket)


class Series(BaseModel, Generic[Bucket]):
    all: list[Bucket]
    not_answered: list[Bucket]


class ByPeriod(BaseModel, Generic[Bucket]):
    incoming: Series[Bucket]
    outgoing: Series[Bucket]
    internal: Series[Bucket]


class NumberCounts(BaseModel):
    external_number: str
    incoming: DirectionCounts
    outgoing: DirectionCounts
    total: int


class UserCounts(BaseModel):
    number: str
    outgoing_count: int
    outgoing_duration: int
    outgoing_conversation: int
    incoming_count: int
    incoming_duration: int
    incoming_conversation: int


class MissedCaller(BaseModel):
    number: str
    missed_count: int
    first_missed_at: str = Field(examples=["2026-01-13 09:12:40"])
    last_missed_at: str = Field(examples=["2026-01-13 17:54:36"])
    last_call_id: int


class MissedPage(BaseModel):
    data: list[MissedCaller]
    links: docs.PageLinks
    meta: docs.PageMeta


class Heatmap(BaseModel):
    weekdays: list[str] = Field(examples=[["mon", "tue", "wed", "thu", "fri", "sat", "sun"]])
    answered: list[list[int]] = Field(description="7 rows (Monday first) of 24 hourly counts")
    not_answered: list[list[int]]


class DirectionSummary(BaseModel):
    calls: int
    answered: int
    not_answered: int
    answer_rate: float | None = Field(description="answered / calls, 4 decimals; null: no calls")
    wait_avg: float | None = Field(description="seconds from start to answer, answered calls")
    wait_max: int | None
    talk_total: int = Field(description="seconds of conversation")
    talk_avg: float | None = Field(description="per answered call")


class ServiceLevel(BaseModel):
    sla: int = Field(description="seconds, the `sla` parameter (default 20)")
    answered_within: int = Field(description="incoming calls answered within `sla` seconds")
    rate: float | None = Field(description="answered_within / incoming calls (missed included)")


class Summary(BaseModel):
    incoming: DirectionSummary
    outgoing: DirectionSummary
    internal: DirectionSummary
    service_level: ServiceLevel
    unique_callers: int = Field(description="numbers with incoming calls in the period")
    new_callers: int = Field(description="of them, those that never called before the period")
    busiest_hour: HourBucket | None


router = APIRouter(prefix="/api/v1/statistic", tags=["statistics"])

_COMMON: dict[str, Any] = {
    "responses": docs.errors(401, 403, 422),
    "openapi_extra": {"parameters": docs.STATS_PARAMETERS},
}


def _params(request: Request) -> dict[str, Any]:
    return phpquery.parse(request.scope.get("query_string", b""))


@router.get(
    "/calls-count",
    summary="Calls by direction, answered and not",
    response_model=Envelope[CallsCount],
    **_COMMON,
)
def calls_count(request: Request, principal: ReaderDep, conn: ConnDep) -> JSONResponse:
    stats_query = params.parse(_params(request), principal.timezone)
    counts = stats_store.counts(conn, principal.scope, stats_query, principal.timezone)
    return JSONResponse(report.envelope(report.calls_count(counts)))


def _by_period(
    request: Request, principal: ReaderDep, conn: ConnDep, unit: report.Unit, limit: Any
) -> JSONResponse:
    stats_query = params.parse(_params(request), principal.timezone, limit)
    per = report.UNITS[unit][2]
    rows = stats_store.local_counts(conn, principal.scope, stats_query, principal.timezone, per)
    return JSONResponse(report.envelope(report.by_period(rows, unit)))


@router.get(
    "/calls-by-hour",
    summary="Calls per local hour (at most 31 days)",
    response_model=Envelope[ByPeriod[HourBucket]],
    **_COMMON,
)
def calls_by_hour(request: Request, principal: ReaderDep, conn: ConnDep) -> JSONResponse:
    return _by_period(request, principal, conn, "hour", params.HOUR_LIMIT)


@router.get(
    "/calls-by-day",
    summary="Calls per local day (at most 366 days)",
    response_model=Envelope[ByPeriod[DayBucket]],
    **_COMMON,
)
def calls_by_day(request: Request, principal: ReaderDep, conn: ConnDep) -> JSONResponse:
    return _by_period(request, principal, conn, "day", params.DAY_LIMIT)


@router.get(
    "/calls-by-month",
    summary="Calls per local month (at most 10 years)",
    response_model=Envelope[ByPeriod[MonthBucket]],
    **_COMMON,
)
def calls_by_month(request: Request, principal: ReaderDep, conn: ConnDep) -> JSONResponse:
    return _by_period(request, principal, conn, "month", params.MONTH_LIMIT_YEARS)


@router.get(
    "/calls-by-external-number",
    summary="Incoming and outgoing calls per number",
    response_model=Envelope[list[NumberCounts]],
    **_COMMON,
)
def calls_by_external_number(request: Request, principal: ReaderDep, conn: ConnDep) -> JSONResponse:
    stats_query = params.parse(_params(request), principal.timezone)
    rows = stats_store.by_external_number(conn, principal.scope, stats_query, principal.timezone)
    return JSONResponse(report.envelope(report.by_external_number(rows)))


@router.get(
    "/calls-by-users",
    summary="Per extension: outgoing and incoming calls, durations, conversations",
    response_model=Envelope[list[UserCounts]],
    responses=docs.errors(401, 403, 422),
    openapi_extra={"parameters": [*docs.STATS_PARAMETERS, docs.STATUS_PARAMETER]},
)
def calls_by_users(request: Request, principal: ReaderDep, conn: ConnDep) -> JSONResponse:
    stats_query = params.parse(_params(request), principal.timezone, with_status=True)
    config, _tz = accounts.pbx_settings(conn, principal.account_id)
    rows = stats_store.by_number(conn, principal.scope, stats_query, principal.timezone)
    return JSONResponse(report.envelope(report.by_users(rows, config.is_extension)))


@router.get(
    "/missed-unreturned",
    summary="Callers missed and not called back within `within` hours (default 24), paginated",
    response_model=Envelope[MissedPage],
    responses=docs.errors(401, 403, 422),
    openapi_extra={"parameters": [*docs.STATS_PARAMETERS, *docs.MISSED_PARAMETERS]},
)
def missed_unreturned(
    request: Request, principal: ReaderDep, conn: ConnDep, settings: SettingsDep
) -> JSONResponse:
    raw = _params(request)
    stats_query = params.parse(raw, principal.timezone, params.DAY_LIMIT, paged=True)
    rows, total = stats_store.unreturned_page(
        conn, principal.scope, stats_query, principal.timezone
    )
    body = pagination.envelope(
        report.missed_rows(rows, principal.timezone),
        total=total,
        page=stats_query.page,
        per_page=stats_query.per_page,
        path=f"{base_url(request, settings)}{router.prefix}/missed-unreturned",
        params=raw,
    )
    return JSONResponse(report.envelope(body))


@router.get(
    "/summary",
    summary="Per direction: answer rate, wait, talk time; service level, callers, busiest hour",
    response_model=Envelope[Summary],
    responses=docs.errors(401, 403, 422),
    openapi_extra={"parameters": [*docs.STATS_PARAMETERS, docs.SLA_PARAMETER]},
)
def summary(request: Request, principal: ReaderDep, conn: ConnDep) -> JSONResponse:
    stats_query = params.parse(
        _params(request), principal.timezone, params.DAY_LIMIT, with_sla=True
    )
    scope, zone = principal.scope, principal.timezone
    rows, callers, hours = stats_store.summary_parts(conn, scope, stats_query, zone)
    result = report.summary(rows, stats_query.sla_seconds, callers, hours)
    return JSONResponse(report.envelope(result))


@router.get(
    "/heatmap",
    summary="Calls per local weekday by hour of day, answered and not (at most 366 days)",
    response_model=Envelope[Heatmap],
    **_COMMON,
)
def heatmap(request: Request, principal: ReaderDep, conn: ConnDep) -> JSONResponse:
    stats_query = params.parse(_params(request), principal.timezone, params.DAY_LIMIT)
    zone = principal.timezone
    rows = stats_store.local_counts(conn, principal.scope, stats_query, zone, report.HOUR)
    return JSONResponse(report.envelope(report.heatmap(rows)))


@router.get(
    "/calls-count-by-history",
    summary="The calls-count of what GET /call-history lists with the same filters",
    response_model=Envelope[CallsCount],
    responses=docs.errors(400, 401, 403, 422),
    openapi_extra={
        "parameters": [p for p in docs.LIST_PARAMETERS if p["name"].startswith("filter[")]
    },
)
def calls_count_by_history(request: Request, principal: ReaderDep, conn: ConnDep) -> JSONResponse:
    call_query = query.parse(_params(request), principal.timezone)
    counts = store.counts(conn, principal.scope, call_query)
    return JSONResponse(report.envelope(report.calls_count(counts)))
