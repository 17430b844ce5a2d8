"""Statistics parameters → a frozen `StatsQuery`, or Laravel's 422. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from callhistory.errors import ValidationErrors
from callhistory.models import CallStatus
from callhistory.query import (
    DEFAULT_PER_PAGE,
    MAX_FILTER_LENGTH,
    list_of,
    local_datetime,
    parse_page,
    parse_per_page,
    php_int,
    to_utc,
)

DEFAULT_WITHIN_HOURS = 24
MAX_WITHIN_HOURS = 24 * 30
#: summary: seconds within which an answer counts for the service level
DEFAULT_SLA_SECONDS = 20
MAX_SLA_SECONDS = 3600

#: How long a period each bucketed report accepts (None: any).
HOUR_LIMIT = timedelta(days=31)
DAY_LIMIT = timedelta(days=366)
MONTH_LIMIT_YEARS = 10


@dataclass(frozen=True, slots=True)
class StatsQuery:
    #: inclusive bounds on the start time, naive UTC
    started_from: datetime
    started_to: datetime
    #: exact external numbers, any of which (empty: every call)
    external_numbers: tuple[str, ...] = ()
    status: CallStatus | None = None
    #: missed-unreturned: hours a caller has to be called back in, and the page
    within_hours: int = DEFAULT_WITHIN_HOURS
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    sla_seconds: int = DEFAULT_SLA_SECONDS


def _later(local: datetime, limit: timedelta | int) -> datetime:
    """`local` plus the limit: a timedelta, or a number of calendar years."""
    if isinstance(limit, timedelta):
        return local + limit
    try:
        return local.replace(year=local.year + limit)
    except ValueError:  # 29 February
        return local.replace(year=local.year + limit, day=28)


def _bounded(
    params: dict[str, Any], name: str, low: int, high: int, default: int, errors: ValidationErrors
) -> int:
    """An optional integer parameter within [low, high], Laravel's messages when it is not."""
    value = params.get(name)
    if value is None:
        return default
    number = php_int(value)
    if number is None:
        errors.add(name, f"The {name} field must be an integer.")
    elif not low <= number <= high:
        errors.add(name, f"The {name} field must be between {low} and {high}.")
    else:
        return number
    return default


def parse(
    params: dict[str, Any],
    tz: ZoneInfo,
    limit: timedelta | int | None = None,
    with_status: bool = False,
    paged: bool = False,
    with_sla: bool = False,
) -> StatsQuery:
    """Validate `from`, `to` (account-local), `external_number` (and `status`, `within` with
    the page, `sla` when asked)."""
    errors = ValidationErrors()
    bounds: dict[str, datetime] = {}
    for name in ("from", "to"):
        value = params.get(name)
        if value is None or value == "":
            errors.add(name, f"The {name} field is required.")
            continue
        local = local_datetime(value, end_of_day=name == "to")
        if local is None:
            errors.add(name, f"The {name} field must match the format Y-m-d H:i:s.")
        else:
            bounds[name] = local
    if "from" in bounds and "to" in bounds:
        if bounds["to"] < bounds["from"]:
            errors.add("to", "The to field must be a date after or equal to from.")
        elif limit is not None and bounds["to"] > (latest := _later(bounds["from"], limit)):
            errors.add(
                "to", f"The to field must be a date before or equal to {latest:%Y-%m-%d %H:%M:%S}."
            )
    numbers: tuple[str, ...] = ()
    value = params.get("external_number")
    if value is not None:
        if not isinstance(value, str):
            errors.add("external_number", "The external number field must be a string.")
        elif (items := list_of("external_number", value, errors)) is not None:
            if any(len(item) > MAX_FILTER_LENGTH or "\0" in item for item in items):
                errors.add("external_number", "The external number field format is invalid.")
            numbers = tuple(dict.fromkeys(items))
    status = None
    if with_status and params.get("status") is not None:
        value = params["status"]
        if value not in ("1", "2"):
            errors.add("status", "The selected status is invalid.")
        else:
            status = CallStatus(int(value))
    within, page, per_page = DEFAULT_WITHIN_HOURS, 1, DEFAULT_PER_PAGE
    if paged:
        within = _bounded(params, "within", 1, MAX_WITHIN_HOURS, DEFAULT_WITHIN_HOURS, errors)
        page = parse_page(params.get("page"))
        per_page = parse_per_page(params.get("per_page"), errors)
    sla = DEFAULT_SLA_SECONDS
    if with_sla:
        sla = _bounded(params, "sla", 0, MAX_SLA_SECONDS, DEFAULT_SLA_SECONDS, errors)
    errors.raise_if_any()
    return StatsQuery(
        started_from=to_utc(bounds["from"], tz),
        started_to=to_utc(bounds["to"], tz),
        external_numbers=numbers,
        status=status,
        within_hours=within,
        page=page,
        per_page=per_page,
        sla_seconds=sla,
    )
