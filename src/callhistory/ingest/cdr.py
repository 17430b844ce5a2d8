"""One Asterisk CDR (one leg of a call), read from a Master.csv line or an AMI `Cdr` event. Pure.

Master.csv columns (cdr_csv): accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp,
lastdata, start, answer, end, duration, billsec, disposition, amaflags (16); then `uniqueid` and
`userfield` when loguniqueid/loguserfield are on, and `peeraccount, linkedid, sequence` with
newcdrcolumns. The layout is detected per line: admins change it, files change width. The
cdr_custom sample layout (clid first, accountcode after amaflags, sequence last) is read too.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from callhistory.models import DISPOSITIONS
from callhistory.query import to_utc

BASE_COLUMNS = (
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
    "lastdata", "start", "answer", "end", "duration", "billsec", "disposition", "amaflags",
)  # fmt: skip
#: The layout of cdr_custom.conf's sample `Master.csv => ...` mapping (the common custom one).
CUSTOM_COLUMNS = (
    "clid", "src", "dst", "dcontext", "channel", "dstchannel", "lastapp", "lastdata", "start",
    "answer", "end", "duration", "billsec", "disposition", "amaflags", "accountcode", "uniqueid",
    "userfield", "sequence",
)  # fmt: skip
_UNIQUEID = re.compile(r"(?:[^,]+-)?\d+\.\d+")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_MAX_FIELD = 1024
_DAY = timedelta(days=1)
_LAST_SECOND = timedelta(minutes=59, seconds=59)


class BadCdr(ValueError):
    """A line or event that is not a CDR; the message says why."""


#: Asterisk's caller id: `"Ali Valiyev" <998901234567>`, or `Ali <100>`, or a bare number.
_CLID = re.compile(r'\s*"?(?P<name>[^"<]*?)"?\s*<(?P<number>[^>]*)>\s*')


def caller_name(clid: str) -> str | None:
    """The name part of a caller id, or None when there is none (or it only repeats the number)."""
    found = _CLID.fullmatch(clid)
    if found is None:
        return None
    name = found.group("name").strip()
    return name if name and name != found.group("number").strip() else None


@dataclass(slots=True)
class Cdr:
    """One leg. Times are naive UTC. Never changed once made (its key is computed from its
    fields; `dataclasses.replace` makes another): not frozen only because a frozen dataclass
    sets each field through `object.__setattr__`, which doubles what reading a line costs."""

    accountcode: str
    src: str
    dst: str
    dcontext: str
    clid: str
    channel: str
    dstchannel: str
    lastapp: str
    lastdata: str
    start: datetime
    answer: datetime | None
    end: datetime
    duration: int
    billsec: int
    disposition: str
    amaflags: str
    uniqueid: str | None = None
    userfield: str | None = None
    peeraccount: str | None = None
    linkedid: str | None = None
    sequence: int | None = None
    #: Identity of this CDR: the same leg read twice (re-import, replay) has the same key.
    #: Computed once: a batch reads it to skip known legs, to order a call's legs and to store.
    leg_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.leg_key = self._identity()

    @property
    def call_key(self) -> str:
        """Which phone call this leg belongs to: the linkedid, else the uniqueid."""
        return self.linkedid or self.uniqueid or f"{self.channel}@{self.start:%Y%m%d%H%M%S}"

    def _identity(self) -> str:
        parts = (
            self.call_key, self.uniqueid, self.sequence, self.channel, self.dstchannel,
            self.start.isoformat(), self.end.isoformat(), self.disposition, self.billsec,
            self.dst, self.lastapp, self.lastdata,
        )  # fmt: skip
        return hashlib.sha256(repr(parts).encode()).hexdigest()


def decode(raw: bytes) -> str:
    """UTF-8, else Windows-1251 (the legacy caller-name encoding here), never an error."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1251", errors="replace")


@lru_cache(maxsize=4096)
def _hour_offset(hour: datetime, tz: ZoneInfo) -> timedelta | None:
    """The UTC offset every time of this local hour has in `tz` (what `to_utc` subtracts), or
    None if it changes within the hour (a transition) or the hour is at the calendar's ends."""
    if not datetime.min + _DAY < hour < datetime.max - _DAY:
        return None
    first = hour - to_utc(hour, tz)
    last = hour + _LAST_SECOND - to_utc(hour + _LAST_SECOND, tz)
    return first if first == last else None


def _time(value: str, name: str, tz: ZoneInfo | None) -> datetime:
    if not _TIME.fullmatch(value):
        raise BadCdr(f"{name} time {value[:40]!r} is not YYYY-MM-DD HH:MM:SS")
    try:
        local = datetime.fromisoformat(value)  # the regex above fixed the exact shape
    except ValueError:
        raise BadCdr(f"{name} time {value!r} is not a real date") from None
    if tz is None:
        return local
    # Converting through the zone costs more than the rest of a line: a file's times share a
    # few hours, so each hour's offset is looked up once.
    offset = _hour_offset(local.replace(minute=0, second=0), tz)
    return to_utc(local, tz) if offset is None else local - offset


def _int(value: str, name: str) -> int:
    """Whole seconds; cdr_custom's `CDR(duration,f)` writes fractions, cut to whole seconds."""
    whole, _, fraction = value.partition(".")
    if not whole.isdigit() or len(whole) > 9 or (fraction and not fraction.isdigit()):
        raise BadCdr(f"{name} {value[:40]!r} is not a whole number of seconds")
    return int(whole)


def build(fields: dict[str, str], tz: ZoneInfo | None) -> Cdr:
    """A Cdr from named raw fields; `tz` is the PBX's zone, None when times are UTC."""
    for name, value in fields.items():
        if len(value) > _MAX_FIELD:
            raise BadCdr(f"{name} is longer than {_MAX_FIELD} characters")
    disposition = fields["disposition"].strip().upper()
    if disposition not in DISPOSITIONS:
        raise BadCdr(f"unknown disposition {fields['disposition'][:40]!r}")
    start = _time(fields["start"], "start", tz)
    end = _time(fields["end"], "end", tz)
    answer = _time(fields["answer"], "answer", tz) if fields["answer"] else None
    if end < start:
        raise BadCdr("end time is before start time")
    sequence = fields.get("sequence") or None
    return Cdr(
        accountcode=fields["accountcode"],
        src=fields["src"],
        dst=fields["dst"],
        dcontext=fields["dcontext"],
        clid=fields["clid"],
        channel=fields["channel"],
        dstchannel=fields["dstchannel"],
        lastapp=fields["lastapp"],
        lastdata=fields["lastdata"],
        start=start,
        answer=answer,
        end=end,
        duration=_int(fields["duration"], "duration"),
        billsec=_int(fields["billsec"], "billsec"),
        disposition=disposition,
        amaflags=fields["amaflags"],
        uniqueid=fields.get("uniqueid") or None,
        userfield=fields.get("userfield") or None,
        peeraccount=fields.get("peeraccount") or None,
        linkedid=fields.get("linkedid") or None,
        sequence=_int(sequence, "sequence") if sequence is not None else None,
    )


def _extra_columns(values: list[str]) -> list[str]:
    """Names of the columns after the 16 base ones, from how many there are."""
    extra = len(values) - len(BASE_COLUMNS)
    new_columns = ["peeraccount", "linkedid", "sequence"]
    if extra == 0:
        return []
    if extra == 1:  # loguniqueid or loguserfield alone: a uniqueid looks like 1768308876.2
        return ["uniqueid" if _UNIQUEID.fullmatch(values[16]) else "userfield"]
    if extra == 2:
        return ["uniqueid", "userfield"]
    if extra == 3:
        return new_columns
    if extra == 4:
        return ["uniqueid" if _UNIQUEID.fullmatch(values[16]) else "userfield", *new_columns]
    if extra == 5:
        return ["uniqueid", "userfield", *new_columns]
    raise BadCdr(f"{len(values)} columns; a Master.csv line has 16 to 21")


def _is_disposition(value: str) -> bool:
    return value.strip().upper() in DISPOSITIONS


def _column_names(values: list[str]) -> list[str]:
    """The layout of a line: cdr_csv's, or the cdr_custom sample's (which moves clid first and
    accountcode after amaflags); any other order is named as such, not as a bad value."""
    if len(values) > 14 and _is_disposition(values[14]):
        return [*BASE_COLUMNS, *_extra_columns(values)]
    if len(values) > 13 and _is_disposition(values[13]):
        if not len(CUSTOM_COLUMNS) - 3 <= len(values) <= len(CUSTOM_COLUMNS):
            raise BadCdr(f"{len(values)} columns; a cdr_custom line has 16 to 19")
        return list(CUSTOM_COLUMNS[: len(values)])
    found = next((i for i, value in enumerate(values) if _is_disposition(value)), None)
    if found is None or len(values) < len(BASE_COLUMNS):
        return [*BASE_COLUMNS, *_extra_columns(values)]  # reports the count or the value
    raise BadCdr(
        f"the disposition is in column {found + 1}, not 15: the columns are not in "
        "Master.csv's order (cdr_csv) nor in the cdr_custom sample's"
    )


def parse_csv_line(line: str, tz: ZoneInfo | None) -> Cdr:
    """One Master.csv line (without its newline) → a Cdr, or BadCdr with the reason."""
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error as exc:
        raise BadCdr(f"not valid CSV ({exc})") from None
    if len(rows) != 1:
        raise BadCdr("not valid CSV")
    values = rows[0]
    return build(dict(zip(_column_names(values), values, strict=True)), tz)


#: AMI `Cdr` event keys → our field names (cdr_manager.c).
AMI_FIELDS = {
    "AccountCode": "accountcode",
    "Source": "src",
    "Destination": "dst",
    "DestinationContext": "dcontext",
    "CallerID": "clid",
    "Channel": "channel",
    "DestinationChannel": "dstchannel",
    "LastApplication": "lastapp",
    "LastData": "lastdata",
    "StartTime": "start",
    "AnswerTime": "answer",
    "EndTime": "end",
    "Duration": "duration",
    "BillableSeconds": "billsec",
    "Disposition": "disposition",
    "AMAFlags": "amaflags",
    "UniqueID": "uniqueid",
    "UserField": "userfield",
    "PeerAccount": "peeraccount",
    "LinkedID": "linkedid",
    "Sequence": "sequence",
}


_AMI_BY_LOWER = {key.lower(): name for key, name in AMI_FIELDS.items()}


def from_ami(event: dict[str, str], tz: ZoneInfo | None) -> Cdr:
    """An AMI `Event: Cdr` (keys in any case) → a Cdr. AMI times are the PBX's local time."""
    fields = dict.fromkeys(AMI_FIELDS.values(), "")
    for key, value in event.items():
        name = _AMI_BY_LOWER.get(key.lower())
        if name is not None:
            fields[name] = value.strip()
    return build(fields, tz)


_EPOCH = re.compile(r"(?:.+-)?(\d{9,11})\.\d+")
#: A leg starts when its channel is created (uniqueid) or a few seconds later; legs that start
#: much later (transfers, Local optimisation) do not vote.
_CLOCK_SLACK = 60
_EPOCH_START = datetime(1970, 1, 1)


@dataclass(frozen=True)
class ClockGuess:
    """Whether a file's times are UTC or PBX-local, from how its uniqueids (the channel's
    creation, seconds since the epoch) line up with its start times."""

    utc: bool | None  # None: nothing told them apart (no uniqueid, or the zone is UTC)
    utc_votes: int
    local_votes: int

    def explain(self, tz: ZoneInfo) -> str:
        lines = self.utc_votes + self.local_votes
        if self.utc is None:
            return (
                f"times read as {tz.key} time: no line tells UTC from local "
                "(--gmt if the file is in UTC)"
            )
        if self.utc:
            return (
                f"times read as UTC: on {self.utc_votes} of {lines} lines the start is the "
                f"uniqueid's time in UTC, not in {tz.key} (a UTC server clock or cdr.conf "
                "usegmtime=yes; --local-time forces local)"
            )
        return (
            f"times read as {tz.key} time: on {self.local_votes} of {lines} lines the start "
            "is the uniqueid's time in that zone (--gmt forces UTC)"
        )


def _clock_vote(leg: Cdr, tz: ZoneInfo) -> bool | None:
    """For a leg read with naive times: True if its start is its uniqueid's moment in UTC,
    False if in `tz`, None if it cannot tell (no uniqueid, a late leg, the zone is UTC)."""
    found = _EPOCH.fullmatch(leg.uniqueid or "")
    if found is None:
        return None
    created = int(found.group(1))
    as_utc = (leg.start - _EPOCH_START).total_seconds() - created
    as_local = (to_utc(leg.start, tz) - _EPOCH_START).total_seconds() - created
    if abs(as_utc - as_local) <= _CLOCK_SLACK:
        return None  # the zone is UTC at that moment: either reading is right
    if -2 <= as_utc <= _CLOCK_SLACK:
        return True
    if -2 <= as_local <= _CLOCK_SLACK:
        return False
    return None


def guess_clock(lines: list[str], tz: ZoneInfo) -> ClockGuess:
    """Vote over Master.csv lines: is `start` the uniqueid's epoch in UTC or in `tz`?"""
    utc_votes = local_votes = 0
    for line in lines:
        try:
            vote = _clock_vote(parse_csv_line(line, None), tz)
        except BadCdr:
            continue
        utc_votes += vote is True
        local_votes += vote is False
    utc = None if utc_votes == local_votes else utc_votes > local_votes
    return ClockGuess(utc, utc_votes, local_votes)


class Clock:
    """UTC or PBX-local for a stream of legs (the AMI feed: cdr_manager writes the server's local
    time, which is UTC on many servers): learnt as legs arrive, by the same vote as a file's."""

    def __init__(self, tz: ZoneInfo):
        self.tz = tz
        self.guess = ClockGuess(None, 0, 0)

    def read(self, naive: Cdr) -> Cdr:
        """The leg (read with `tz=None`) with its times in UTC."""
        vote = _clock_vote(naive, self.tz)
        if vote is not None:
            utc_votes = self.guess.utc_votes + (vote is True)
            local_votes = self.guess.local_votes + (vote is False)
            utc = None if utc_votes == local_votes else utc_votes > local_votes
            self.guess = ClockGuess(utc, utc_votes, local_votes)
        if self.guess.utc:
            return naive
        return replace(
            naive,
            start=to_utc(naive.start, self.tz),
            answer=to_utc(naive.answer, self.tz) if naive.answer else None,
            end=to_utc(naive.end, self.tz),
        )
