"""One Asterisk CDR (one leg of a call), read from a Master.csv line or an AMI `Cdr` event. Pure.

Master.csv columns (cdr_csv): accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp,
lastdata, start, answer, end, duration, billsec, disposition, amaflags (16); then `uniqueid` and
`userfield` when loguniqueid/loguserfield are on, and `peeraccount, linkedid, sequence` with
newcdrcolumns. The layout is detected per line: admins change it, files change width.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from callhistory.models import DISPOSITIONS
from callhistory.query import to_utc

BASE_COLUMNS = (
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
    "lastdata", "start", "answer", "end", "duration", "billsec", "disposition", "amaflags",
)  # fmt: skip
_UNIQUEID = re.compile(r"(?:[^,]+-)?\d+\.\d+")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_MAX_FIELD = 1024


class BadCdr(ValueError):
    """A line or event that is not a CDR; the message says why."""


@dataclass(frozen=True, slots=True)
class Cdr:
    """One leg. Times are naive UTC."""

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

    @property
    def call_key(self) -> str:
        """Which phone call this leg belongs to: the linkedid, else the uniqueid."""
        return self.linkedid or self.uniqueid or f"{self.channel}@{self.start:%Y%m%d%H%M%S}"

    @property
    def leg_key(self) -> str:
        """Identity of this CDR: the same leg read twice (re-import, replay) has the same key."""
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


def _time(value: str, name: str, tz: ZoneInfo | None) -> datetime:
    if not _TIME.fullmatch(value):
        raise BadCdr(f"{name} time {value[:40]!r} is not YYYY-MM-DD HH:MM:SS")
    try:
        local = datetime.fromisoformat(value)  # the regex above fixed the exact shape
    except ValueError:
        raise BadCdr(f"{name} time {value!r} is not a real date") from None
    return local if tz is None else to_utc(local, tz)


def _int(value: str, name: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise BadCdr(f"{name} {value[:40]!r} is not a whole number of seconds")
    return int(value)


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


def parse_csv_line(line: str, tz: ZoneInfo | None) -> Cdr:
    """One Master.csv line (without its newline) → a Cdr, or BadCdr with the reason."""
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error as exc:
        raise BadCdr(f"not valid CSV ({exc})") from None
    if len(rows) != 1:
        raise BadCdr("not valid CSV")
    values = rows[0]
    names = [*BASE_COLUMNS, *_extra_columns(values)]
    return build(dict(zip(names, values, strict=True)), tz)


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
