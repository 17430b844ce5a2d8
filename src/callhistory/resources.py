"""JSON shapes of the contract: one function per resource, keys in the contract's order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from callhistory.models import CallStatus, CallType
from callhistory.store import AnyRow

LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S"


def local_time(value: datetime | None, tz: ZoneInfo) -> str | None:
    """Naive UTC → `Y-m-d H:i:s` in the account's timezone."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC).astimezone(tz).strftime(LOCAL_FORMAT)


def laravel_timestamp(value: datetime) -> str:
    """Naive UTC → Laravel's JSON date, `2026-01-13T12:55:02.000000Z`."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def integration(row: AnyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "call_history_id": row.call_history_id,
        "integration_type": row.integration_type,
        "status": row.status,
        "error_message": row.error_message,
        "created_at": laravel_timestamp(row.created_at),
        "updated_at": laravel_timestamp(row.updated_at),
    }


def _enum(value: CallType | CallStatus) -> dict[str, Any]:
    return {"number": int(value), "name": value.label}


def call_index(
    row: AnyRow,
    integrations: Sequence[AnyRow],
    tz: ZoneInfo,
    recording_url: Callable[[str], str],
) -> dict[str, Any]:
    return {
        "id": row.id,
        "call_id": row.call_id,
        "date_time": local_time(row.started_at, tz),
        "src": row.src,
        "dst": row.dst,
        "external_number": row.external_number,
        "duration": row.duration,
        "conversation": row.conversation,
        "type": _enum(CallType(row.type)),
        "status": _enum(CallStatus(row.status)),
        "recorded_file_url": recording_url(row.recording) if row.recording else None,
        "integration": [integration(i) for i in integrations],
    }


def call_show(
    row: AnyRow,
    integrations: Sequence[AnyRow],
    tz: ZoneInfo,
    recording_url: Callable[[str], str],
) -> dict[str, Any]:
    return {
        **call_index(row, integrations, tz, recording_url),
        "disposition": row.disposition,
        "answered_at": local_time(row.answered_at, tz),
        "ended_at": local_time(row.ended_at, tz),
        "pbx_call_id": row.pbx_call_id,
        "legs": row.legs,
    }
