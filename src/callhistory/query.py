"""Request parameters → a frozen `CallQuery`, or the contract's 400/422 error. Pure: no I/O.

The rules mirror what the original Laravel service does: a FormRequest validates first (422 with
Laravel's messages, in rule order), then spatie/laravel-query-builder rejects unknown filters and
sorts (400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from callhistory.errors import ApiError, ValidationErrors
from callhistory.models import CallStatus, CallType

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 300
MAX_LIST_ITEMS = 50
#: A stored number is at most 255 characters: a longer substring can match nothing, and SQLite
#: refuses LIKE patterns past 50,000 bytes. Bounded the same on every database.
MAX_FILTER_LENGTH = 255

TEXT_FILTERS = ("src", "dst", "external_number")
NUMBER_FILTERS = ("duration", "conversation")
ALLOWED_FILTERS = (*TEXT_FILTERS, *NUMBER_FILTERS, "type", "status", "from", "to")
#: Beyond the contract: calls by the state of their CRM sync. Accepted, but not named in the
#: contract's 400 message, which existing clients compare verbatim.
EXTRA_FILTERS = ("integration_status",)
INTEGRATION_STATUSES = ("pending", "synced", "failed")
ALLOWED_SORTS = ("id", "datetime", "duration", "conversation")
#: Sort names → the column they order by.
SORT_COLUMNS = {
    "id": "id",
    "datetime": "started_at",
    "date_time": "started_at",
    "duration": "duration",
    "conversation": "conversation",
}

Comparison = Literal["=", ">", ">=", "<", "<="]
EnumT = TypeVar("EnumT", CallType, CallStatus)

_PHP_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_PHP_NUMERIC = re.compile(r"[ \t\n\r\v\f]*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")
_INT64 = 2**63
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class Sort:
    column: str
    descending: bool


@dataclass(frozen=True, slots=True)
class CallQuery:
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    sort: tuple[Sort, ...] = (Sort("id", False),)
    #: column → substrings, any of which must occur (case-insensitive)
    text: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: column → comparisons, any of which must hold
    numbers: dict[str, tuple[tuple[Comparison, int], ...]] = field(default_factory=dict)
    types: tuple[CallType, ...] = ()
    statuses: tuple[CallStatus, ...] = ()
    integration_statuses: tuple[str, ...] = ()
    #: inclusive bounds on the start time, naive UTC
    started_from: datetime | None = None
    started_to: datetime | None = None

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def counted_by_period(self) -> bool:
        """True when only type/status filters and the period apply: the rollups give the total."""
        return not (self.text or self.numbers or self.integration_statuses)

    @property
    def _undated(self) -> bool:
        """True when neither a period nor the CRM sync state filters: what the per-account
        tallies, which keep no time or sync state, can count (beside type and status)."""
        return (
            not self.integration_statuses and self.started_from is None and self.started_to is None
        )

    @property
    def _one_text_filter(self) -> bool:
        """True when substrings of one column filter, beside type and status at most."""
        return len(self.text) == 1 and not self.numbers and self._undated

    @property
    def external_substrings(self) -> tuple[str, ...] | None:
        """The substrings when only `external_number` filters, beside type and status at most:
        a call has one external number, so the rollups by external number give the total."""
        if not self._one_text_filter or "external_number" not in self.text:
            return None
        return self.text["external_number"]

    @property
    def gram(self) -> tuple[str, str] | None:
        """(column, substring) when one substring of one or two characters without letters
        filters, beside type and status at most: the per-account gram counts give the total."""
        if not self._one_text_filter:
            return None
        ((name, values),) = self.text.items()
        value = values[0]
        if len(values) != 1 or len(value) > 2 or value.lower() != value.upper():
            return None
        return name, value

    @property
    def lengths(self) -> tuple[str, tuple[tuple[Comparison, int], ...]] | None:
        """(column, comparisons) when only `duration` or only `conversation` filters, beside type
        and status at most: the per-account histograms of seconds give the total."""
        if len(self.numbers) != 1 or self.text or not self._undated:
            return None
        ((name, comparisons),) = self.numbers.items()
        return name, comparisons

    @property
    def paired(self) -> bool:
        """True when both `duration` and `conversation` filter, beside type and status at most:
        the per-account joint histograms of the two give the total."""
        return set(self.numbers) == {"duration", "conversation"} and not self.text and self._undated

    @property
    def pair_sorted(self) -> str | None:
        """`duration` or `conversation` when the list is sorted by it first and filtered by
        comparisons of the other (and of itself, perhaps), beside type and status at most: the
        joint histograms then tell which seconds of the sort key any page holds."""
        column = self._sorted_by_length
        if column is None or set(self.numbers) <= {column}:
            return None  # not sorted so, or `length_sorted`
        return column if set(self.numbers) <= {"duration", "conversation"} else None

    @property
    def length_sorted(self) -> str | None:
        """`duration` or `conversation` when the list is sorted by it first and filtered by
        nothing but type, status and comparisons of that same column: the per-account histograms
        of seconds then tell which seconds any page holds."""
        column = self._sorted_by_length
        return column if column is not None and set(self.numbers) <= {column} else None

    @property
    def _sorted_by_length(self) -> str | None:
        """`duration` or `conversation` when the list is sorted by it first, under no substring,
        period or sync state filter (which no histogram of seconds keeps)."""
        column = self.sort[0].column
        if column not in ("duration", "conversation") or self.text or not self._undated:
            return None
        return column

    @property
    def sorted_further(self) -> bool:
        """True when a key other than the id follows the first sort key (its ties are ordered by
        it, not by the id alone)."""
        return any(key.column != "id" for key in self.sort[1:])

    @property
    def tallied(self) -> bool:
        """True when `store.counts` reads the total from counters or rollups, not the calls."""
        return (
            self.counted_by_period
            or self.gram is not None
            or self.external_substrings is not None
            or self.lengths is not None
            or self.paired
        )

    @property
    def unfiltered(self) -> bool:
        """True when no filter applies: the whole account's calls, in the query's order."""
        return self.counted_by_type_and_status and not (self.types or self.statuses)

    @property
    def counted_by_type_and_status(self) -> bool:
        """True when only type/status filters apply, so the per-account counters give the total."""
        return self.counted_by_period and self.started_from is None and self.started_to is None


def php_int(value: Any) -> int | None:
    """PHP's `filter_var($value, FILTER_VALIDATE_INT)`: the int, or None."""
    # Longer than any int64: refuse before int() (which also caps digits it converts).
    if not isinstance(value, str) or len(value) > 40 or _PHP_INT.fullmatch(value.strip()) is None:
        return None
    number = int(value.strip())
    return number if -_INT64 <= number < _INT64 else None


def _php_number(value: Any) -> float | None:
    if isinstance(value, str) and _PHP_NUMERIC.fullmatch(value):
        return float(value)
    return None


def _attribute(name: str) -> str:
    return name.replace("_", " ")


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_page(value: Any) -> int:
    page = php_int(value)
    return page if page is not None and page >= 1 else 1


def parse_per_page(value: Any, errors: ValidationErrors) -> int:
    if value is None:
        return DEFAULT_PER_PAGE
    attribute = _attribute("per_page")
    number = php_int(value)
    if number is None:
        errors.add("per_page", f"The {attribute} field must be an integer.")
    # Laravel's `between` measures a numeric value by its value, anything else by its size.
    numeric = _php_number(value)
    if isinstance(value, dict):
        size: float = len(value)
    elif numeric is not None:
        size = numeric
    else:
        size = len(value)
    if not 1 <= size <= MAX_PER_PAGE:
        errors.add("per_page", f"The {attribute} field must be between 1 and {MAX_PER_PAGE}.")
    return number if number is not None and 1 <= number <= MAX_PER_PAGE else DEFAULT_PER_PAGE


def _parse_sort(value: Any, errors: ValidationErrors) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str):
        errors.add("sort", "The sort field must be a string.")
        return []
    return split_list(value)


def list_of(key: str, value: str, errors: ValidationErrors) -> list[str] | None:
    """A comma list's items, or None (and Laravel's message) when it has too many."""
    items = split_list(value)
    if len(items) > MAX_LIST_ITEMS:
        errors.add(
            key, f"The {_attribute(key)} field must not have more than {MAX_LIST_ITEMS} items."
        )
        return None
    return items


def _parse_comparison(item: str) -> tuple[Comparison, int] | None:
    op: Comparison = "="
    for prefix in (">=", "<=", ">", "<"):
        if item.startswith(prefix):
            op, item = prefix, item[len(prefix) :]
            break
    number = php_int(item)
    return None if number is None else (op, number)


def local_datetime(value: Any, end_of_day: bool) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        if _DATETIME.fullmatch(value):
            return datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        if _DATE.fullmatch(value):
            day = datetime.strptime(value, "%Y-%m-%d")
            return day.replace(hour=23, minute=59, second=59) if end_of_day else day
    except ValueError:
        return None
    return None


def to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """A naive local time of `tz` → naive UTC, clamped at the ends of the calendar."""
    try:
        return local.replace(tzinfo=tz).astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return datetime.min if local.year < 100 else datetime.max


def parse(params: dict[str, Any], tz: ZoneInfo) -> CallQuery:
    """Validate `params` (as parsed by `phpquery.parse`) into a CallQuery.

    Raises ApiError: 422 with Laravel's messages, or 400 for unknown filters/sorts.
    """
    errors = ValidationErrors()
    page = parse_page(params.get("page"))
    per_page = parse_per_page(params.get("per_page"), errors)
    sort_names = _parse_sort(params.get("sort"), errors)

    raw_filters = params.get("filter")
    if raw_filters is not None and not isinstance(raw_filters, dict):
        errors.add("filter", "The filter field must be an array.")
        raw_filters = None
    filters: dict[str, Any] = {k: v for k, v in (raw_filters or {}).items() if v is not None}

    text: dict[str, tuple[str, ...]] = {}
    for name in TEXT_FILTERS:
        key, value = f"filter.{name}", filters.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            errors.add(key, f"The {_attribute(key)} field must be a string.")
        elif "\0" in value:  # no stored value holds a NUL (PostgreSQL text cannot)
            errors.add(key, f"The {_attribute(key)} field format is invalid.")
        elif (items := list_of(key, value, errors)) is not None and items:
            if any(len(item) > MAX_FILTER_LENGTH for item in items):
                errors.add(
                    key,
                    f"The {_attribute(key)} field must not be greater than "
                    f"{MAX_FILTER_LENGTH} characters.",
                )
            else:
                text[name] = tuple(dict.fromkeys(items))

    numbers: dict[str, tuple[tuple[Comparison, int], ...]] = {}
    for name in NUMBER_FILTERS:
        key, value = f"filter.{name}", filters.get(name)
        if value is None:
            continue
        message = f"The {_attribute(key)} field must be an integer."
        if not isinstance(value, str):
            errors.add(key, message)
        elif (items := list_of(key, value, errors)) is not None and items:
            comparisons = [_parse_comparison(item) for item in items]
            if any(c is None for c in comparisons):
                errors.add(key, message)
            else:
                numbers[name] = tuple(dict.fromkeys(c for c in comparisons if c is not None))

    types = _parse_enum("type", filters.get("type"), CallType, errors)
    statuses = _parse_enum("status", filters.get("status"), CallStatus, errors)

    integration_statuses: tuple[str, ...] = ()
    value = filters.get("integration_status")
    if value is not None:
        key = "filter.integration_status"
        items = split_list(value) if isinstance(value, str) else None
        if not items or any(item not in INTEGRATION_STATUSES for item in items):
            errors.add(key, f"The selected {_attribute(key)} is invalid.")
        else:
            integration_statuses = tuple(dict.fromkeys(items))

    bounds: dict[str, datetime] = {}
    for name in ("from", "to"):
        value = filters.get(name)
        if value is None:
            continue
        local = local_datetime(value, end_of_day=name == "to")
        if local is None:
            errors.add(
                f"filter.{name}", f"The filter.{name} field must match the format Y-m-d H:i:s."
            )
        else:
            bounds[name] = local
    if "from" in bounds and "to" in bounds and bounds["to"] < bounds["from"]:
        errors.add("filter.to", "The filter.to field must be a date after or equal to filter.from.")

    errors.raise_if_any()

    unknown_filters = [n for n in filters if n not in ALLOWED_FILTERS and n not in EXTRA_FILTERS]
    if unknown_filters:
        raise ApiError(
            400,
            f"Requested filter(s) `{', '.join(unknown_filters)}` are not allowed. "
            f"Allowed filter(s) are `{', '.join(ALLOWED_FILTERS)}`.",
        )
    sort = _build_sort(sort_names)

    return CallQuery(
        page=page,
        per_page=per_page,
        sort=sort,
        text=text,
        numbers=numbers,
        types=types,
        statuses=statuses,
        integration_statuses=integration_statuses,
        started_from=to_utc(bounds["from"], tz) if "from" in bounds else None,
        started_to=to_utc(bounds["to"], tz) if "to" in bounds else None,
    )


def _parse_enum(
    name: str, value: Any, enum: type[EnumT], errors: ValidationErrors
) -> tuple[EnumT, ...]:
    if value is None:
        return ()
    key = f"filter.{name}"
    items = split_list(value) if isinstance(value, str) else None
    numbers = [php_int(item) for item in items] if items is not None else [None]
    valid = {member.value for member in enum}
    if not items or any(n not in valid for n in numbers):
        errors.add(key, f"The selected {key} is invalid.")
        return ()
    return tuple(dict.fromkeys(enum(n) for n in numbers if n is not None))


def _build_sort(names: list[str]) -> tuple[Sort, ...]:
    unknown = [n for n in names if n.removeprefix("-") not in SORT_COLUMNS]
    if unknown:
        raise ApiError(
            400,
            f"Requested sort(s) `{', '.join(unknown)}` is not allowed. "
            f"Allowed sort(s) are `{', '.join(ALLOWED_SORTS)}`.",
        )
    sorts: list[Sort] = []
    seen: set[str] = set()
    for name in names:
        column = SORT_COLUMNS[name.removeprefix("-")]
        if column not in seen:
            seen.add(column)
            sorts.append(Sort(column, name.startswith("-")))
    if not sorts:
        return (Sort("id", False),)
    if "id" not in seen:
        # The tie-breaker follows the last key's direction so pages never overlap or skip.
        sorts.append(Sort("id", sorts[-1].descending))
    return tuple(sorts)
