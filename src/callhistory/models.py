"""The domain's enums and records. Each rule about a call lives once, here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

#: The timezone of a new account.
DEFAULT_TIMEZONE = "Asia/Tashkent"


class CallType(IntEnum):
    INCOMING = 1
    OUTGOING = 2
    INTERNAL = 3

    @property
    def label(self) -> str:
        return {1: "Incoming", 2: "Outgoing", 3: "Internal"}[self.value]


class CallStatus(IntEnum):
    ANSWERED = 1
    NOT_ANSWERED = 2

    @property
    def label(self) -> str:
        return {1: "Answered", 2: "Not answered"}[self.value]


class UserType(IntEnum):
    ADMIN = 1
    USER = 2


#: Raw dispositions Asterisk writes (CANCEL since Asterisk 23).
DISPOSITIONS = ("ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION", "CANCEL")


def status_from_disposition(disposition: str) -> CallStatus:
    return CallStatus.ANSWERED if disposition == "ANSWERED" else CallStatus.NOT_ANSWERED


def default_disposition(status: CallStatus) -> str:
    return "ANSWERED" if status is CallStatus.ANSWERED else "NO ANSWER"


# Fixed namespace so a call_id derived from (account, pbx id) is the same on every machine.
_CALL_ID_NAMESPACE = uuid.UUID("6f1c8f4e-3b7a-5d2e-9c41-0a7be2d3c915")


def derive_call_id(account_id: int, pbx_call_id: str) -> str:
    """The call_id of a PBX call: stable across re-imports, distinct between accounts."""
    return str(uuid.uuid5(_CALL_ID_NAMESPACE, f"{account_id}:{pbx_call_id}"))


# Token abilities (Sanctum's `abilities`); "*" grants all.
ABILITY_CALLS_READ = "calls:read"
ABILITY_CALLS_WRITE = "calls:write"
ABILITY_RECORDINGS_READ = "recordings:read"
ABILITY_RECORDINGS_DELETE = "recordings:delete"
ABILITY_USERS_MANAGE = "users:manage"
ABILITIES = (
    ABILITY_CALLS_READ,
    ABILITY_CALLS_WRITE,
    ABILITY_RECORDINGS_READ,
    ABILITY_RECORDINGS_DELETE,
    ABILITY_USERS_MANAGE,
)
#: What only an ADMIN may do, whatever its token grants: a USER (an operator) reads its calls.
ADMIN_ABILITIES = (ABILITY_CALLS_WRITE, ABILITY_RECORDINGS_DELETE, ABILITY_USERS_MANAGE)


@dataclass(frozen=True, slots=True)
class NewCall:
    """A call ready to be stored; times are naive UTC."""

    call_id: str
    pbx_call_id: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    src: str
    dst: str
    external_number: str | None
    duration: int
    conversation: int
    type: CallType
    disposition: str
    legs: int = 1
    recording: str | None = None

    @property
    def status(self) -> CallStatus:
        return status_from_disposition(self.disposition)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as its fields, made again by its constructor: a third faster to unpickle (the
        import's writer unpickles every call) than a frozen dataclass's own state."""
        return NewCall, tuple(getattr(self, name) for name in self.__slots__)


def call_from_durations(
    *,
    call_id: str,
    pbx_call_id: str | None,
    started_at: datetime,
    duration: int,
    conversation: int,
    disposition: str,
    src: str,
    dst: str,
    external_number: str | None,
    type: CallType,
    legs: int = 1,
    recording: str | None = None,
) -> NewCall:
    """A call known by its start and lengths, as a PBX reports it without answer/end times:
    it ended `duration` after the start and, if answered, was answered `conversation` before
    the end. OverflowError when the end falls past the calendar."""
    ended_at = started_at + timedelta(seconds=duration)
    answered = status_from_disposition(disposition) is CallStatus.ANSWERED
    return NewCall(
        call_id=call_id,
        pbx_call_id=pbx_call_id,
        started_at=started_at,
        answered_at=ended_at - timedelta(seconds=conversation) if answered else None,
        ended_at=ended_at,
        src=src,
        dst=dst,
        external_number=external_number,
        duration=duration,
        conversation=conversation,
        type=type,
        disposition=disposition,
        legs=legs,
        recording=recording,
    )
