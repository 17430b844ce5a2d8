"""The JSON ingest body → calls to store, or Laravel's array validation errors. Pure."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from callhistory.classify import PbxConfig, classify
from callhistory.errors import ApiError, ValidationErrors
from callhistory.models import (
    DISPOSITIONS,
    CallStatus,
    CallType,
    NewCall,
    call_from_durations,
    default_disposition,
    derive_call_id,
    status_from_disposition,
)
from callhistory.query import to_utc
from callhistory.recordings import safe_path

MAX_BATCH = 1000
MAX_STRING = 255
MAX_RECORDING = 1024
BODY_MESSAGE = f"The request body must be a JSON array of 1 to {MAX_BATCH} calls."
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_INT_MAX = 2**31 - 1
#: Calls happen in this era: a year-1 date is a client's bug (and has no sane UTC offset).
EARLIEST = datetime(1970, 1, 1)
LATEST = datetime(2099, 12, 31, 23, 59, 59)


def _is_int(value: Any) -> bool:
    # JSON numbers: 5 and 5.0 are integers to Laravel; true/false are not.
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int)


class _Item:
    """Validates one call of the array, collecting messages under `{index}.{field}`."""

    def __init__(self, index: int, item: dict[str, Any], errors: ValidationErrors):
        self.index, self.item, self.errors = index, item, errors

    def key(self, name: str) -> str:
        return f"{self.index}.{name}"

    def fail(self, name: str, message: str) -> None:
        attribute = f"{self.index}.{name.replace('_', ' ')}"
        self.errors.add(self.key(name), message.format(attribute=attribute))

    def string(self, name: str, *, required: bool, max_length: int = MAX_STRING) -> str | None:
        value = self.item.get(name)
        if value is None or value == "":
            if required:
                self.fail(name, "The {attribute} field is required.")
            return None
        if not isinstance(value, str):
            self.fail(name, "The {attribute} field must be a string.")
            return None
        if "\0" in value:  # PostgreSQL text cannot hold it; refused alike on every database
            self.fail(name, "The {attribute} field format is invalid.")
            return None
        if len(value) > max_length:
            self.fail(
                name, f"The {{attribute}} field must not be greater than {max_length} characters."
            )
            return None
        return value

    def integer(self, name: str, *, minimum: int, maximum: int) -> int | None:
        value = self.item.get(name)
        if value is None:
            self.fail(name, "The {attribute} field is required.")
            return None
        if not _is_int(value):
            self.fail(name, "The {attribute} field must be an integer.")
            return None
        number = int(value)
        if not minimum <= number <= maximum:
            self.fail(name, f"The {{attribute}} field must be between {minimum} and {maximum}.")
            return None
        return number

    def choice(self, name: str, allowed: tuple[Any, ...], *, required: bool) -> Any:
        value = self.item.get(name)
        if value is None:
            if required:
                self.fail(name, "The {attribute} field is required.")
            return None
        if isinstance(value, bool) or value not in allowed:
            self.fail(name, "The selected {attribute} is invalid.")
            return None
        return value


def _parse_item(
    index: int,
    item: Any,
    account_id: int,
    pbx: tuple[PbxConfig, ZoneInfo],
    errors: ValidationErrors,
) -> NewCall | None:
    if not isinstance(item, dict):
        errors.add(str(index), f"The {index} field must be an array.")
        return None
    before = len(errors.errors)
    v = _Item(index, item, errors)

    call_id = v.string("call_id", required=False, max_length=36)
    if call_id is not None and _UUID.fullmatch(call_id) is None:
        v.fail("call_id", "The {attribute} field must be a valid UUID.")
    pbx_call_id = v.string("pbx_call_id", required=False)
    date_time = v.string("date_time", required=True)
    started_local: datetime | None = None
    if date_time is not None:
        try:
            if _DATETIME.fullmatch(date_time) is None:
                raise ValueError(date_time)
            started_local = datetime.strptime(date_time, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            v.fail("date_time", "The {attribute} field must match the format Y-m-d H:i:s.")
        else:
            if started_local < EARLIEST:
                v.fail(
                    "date_time",
                    f"The {{attribute}} field must be a date after or equal to {EARLIEST}.",
                )
                started_local = None
            elif started_local > LATEST:
                v.fail(
                    "date_time",
                    f"The {{attribute}} field must be a date before or equal to {LATEST}.",
                )
                started_local = None
    src = v.string("src", required=True)
    dst = v.string("dst", required=True)
    external_number = v.string("external_number", required=False)
    duration = v.integer("duration", minimum=0, maximum=_INT_MAX)
    conversation = v.integer("conversation", minimum=0, maximum=_INT_MAX)
    if duration is not None and conversation is not None and conversation > duration:
        v.fail("conversation", f"The {{attribute}} field must be between 0 and {duration}.")
    call_type = v.choice("type", tuple(t.value for t in CallType), required=False)
    disposition = v.choice("disposition", DISPOSITIONS, required=False)
    has_disposition = item.get("disposition") is not None
    status = v.choice("status", tuple(s.value for s in CallStatus), required=False)
    if item.get("status") is None and not has_disposition:
        v.fail(
            "status",
            f"The {{attribute}} field is required when {index}.disposition is not present.",
        )
    elif (
        status is not None
        and disposition is not None
        and status_from_disposition(disposition) != status
    ):
        v.fail("status", f"The {{attribute}} field does not match {index}.disposition.")
    recording = v.string("recording", required=False, max_length=MAX_RECORDING)
    if recording is not None and not safe_path(recording):
        v.fail("recording", "The {attribute} field format is invalid.")

    if len(errors.errors) != before or started_local is None:
        return None
    assert src is not None and dst is not None and duration is not None
    assert conversation is not None
    config, tz = pbx
    if call_type is None:
        # No type given: decide it as for the account's Asterisk calls, from the numbers.
        call_type, classified_external = classify(config, src=src, dst=dst)
        if "external_number" not in item:
            external_number = classified_external
    if disposition is None:
        disposition = default_disposition(CallStatus(status))
    if call_id is None:
        call_id = derive_call_id(account_id, pbx_call_id) if pbx_call_id else str(uuid.uuid4())
    # In 1970..2099, even the longest duration (int32 seconds, 68 years) cannot overflow.
    return call_from_durations(
        call_id=call_id.lower(),
        pbx_call_id=pbx_call_id,
        started_at=to_utc(started_local, tz),
        duration=duration,
        conversation=conversation,
        disposition=disposition,
        src=src,
        dst=dst,
        external_number=external_number,
        type=CallType(call_type),
        recording=recording,
    )


def parse_body(body: Any, account_id: int, pbx: tuple[PbxConfig, ZoneInfo]) -> list[NewCall]:
    """Every call of the body, or ApiError 422 listing every problem (nothing partial).

    `pbx` is the account's PBX layout and timezone; calls sent without `type` are classified
    with it."""
    if not isinstance(body, list) or not 1 <= len(body) <= MAX_BATCH:
        raise ApiError(422, BODY_MESSAGE, {"body": [BODY_MESSAGE]})
    errors = ValidationErrors()
    parsed = [_parse_item(i, item, account_id, pbx, errors) for i, item in enumerate(body)]
    errors.raise_if_any()
    return [c for c in parsed if c is not None]
