"""The CDR legs of one phone call → the one call record the user sees. Pure.

- start = earliest start; end = latest end; duration = end - start; src = the caller of the
  first leg (by Asterisk's sequence, then start; ties broken by the legs' content, so the order
  the legs arrive in never matters).
- Answered only if a leg *bridged to a party* was answered: its `dstchannel` is set. An ANSWERED
  leg without one is the PBX answering the caller itself — an IVR, voicemail, a feature code, or
  `Hangup()`/`Congestion()`/FreePBX's "terminate call" after a failed Dial — not an answer.
- conversation = the time covered by those bridged legs' talk (billsec; overlapping legs, as
  Local channels and consultations make, count once), at most the duration.
- dst = the extension that answered first (resolving FreePBX's Local helpers; a helper that
  names no extension is passed over for a leg that talked); for calls out, the number dialled;
  for unanswered calls, the number dialled first.
- recording: only for answered calls, only a file the CDR names (`userfield`/recordingfile) or
  one that exists (MixMonitor's default `YYYY/MM/DD/<uniqueid>.wav`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from callhistory.classify import PbxConfig, classify, dialled
from callhistory.ingest.cdr import Cdr
from callhistory.models import CallType, NewCall, derive_call_id

_AUDIO = re.compile(r"[^\0]+\.(wav|WAV|wav49|gsm|ulaw|alaw|mp3|ogg|opus)")
_SYSTEM_PREFIX = re.compile(r"^.+-(?=\d+\.\d+$)")
#: FreePBX 2.x writes `audio:<file>` in userfield; paths may be absolute under the spool.
_AUDIO_PREFIX = re.compile(r"^audio:", re.IGNORECASE)
_MONITOR_DIR = re.compile(r"^.*/monitor/")
#: When two legs tie on sequence and start, the more telling disposition comes first.
_DISPOSITION_RANK = {"ANSWERED": 0, "BUSY": 1, "NO ANSWER": 2, "CANCEL": 3, "CONGESTION": 4}

#: Does this path (relative to the account's recordings root) exist?
RecordingExists = Callable[[str], bool]


def leg_order(leg: Cdr) -> tuple[object, ...]:
    """Sequence when Asterisk gives it, else start time, then uniqueid; then the leg's content,
    so that legs which tie give the same call in any order."""
    return (
        leg.sequence if leg.sequence is not None else 1 << 62,
        leg.start,
        leg.uniqueid or "",
        _DISPOSITION_RANK.get(leg.disposition, 9),
        leg.leg_key,
    )


def bridged(leg: Cdr) -> bool:
    """Answered by a party the call was bridged to (not by the PBX's own applications)."""
    return leg.disposition == "ANSWERED" and bool(leg.dstchannel)


def _talk_seconds(legs: Sequence[Cdr]) -> int:
    """Seconds covered by the legs' talk (the billsec before each end), overlaps counted once.
    (billsec, not end - answer: Asterisk rounds it from exact times, the times are truncated.)"""
    spans: list[tuple[datetime, datetime]] = []
    for leg in legs:
        if leg.billsec > 0:
            spans.append((leg.end - timedelta(seconds=leg.billsec), leg.end))
    total = 0.0
    covered_to: datetime | None = None
    for begin, finish in sorted(spans):
        if covered_to is not None and begin < covered_to:
            begin = covered_to
        if finish > begin:
            total += (finish - begin).total_seconds()
            covered_to = finish
    return int(total)


def _named_recording(legs: Sequence[Cdr]) -> str | None:
    """The file a leg's userfield names (MixMonitor via CDR(userfield), FreePBX's
    recordingfile, FreePBX 2.x `audio:<file>`), relative to the recordings root."""
    for leg in legs:
        name = _AUDIO_PREFIX.sub("", (leg.userfield or "").strip())
        if name and _AUDIO.fullmatch(name):
            return _MONITOR_DIR.sub("", name).lstrip("/")
    return None


def recording_path(
    first: Cdr, legs: Sequence[Cdr], tz: ZoneInfo, exists: RecordingExists | None
) -> str | None:
    """A named file (a bare name lives in MixMonitor's `YYYY/MM/DD/` of the PBX-local day, or
    flat as FreePBX 2.x kept it — whichever exists), else MixMonitor's default
    `YYYY/MM/DD/<uniqueid>.wav` if that file exists."""
    local_day = first.start.replace(tzinfo=UTC).astimezone(tz).strftime("%Y/%m/%d")
    named = _named_recording(legs)
    if named is not None:
        if "/" in named:
            return named
        dated = f"{local_day}/{named}"
        return named if exists and not exists(dated) and exists(named) else dated
    name = first.linkedid or first.uniqueid
    if not name or exists is None:
        return None
    default = f"{local_day}/{_SYSTEM_PREFIX.sub('', name)}.wav"
    return default if exists(default) else None


def _answered_by(
    config: PbxConfig, call_type: CallType, answered: Sequence[Cdr], first: Cdr
) -> str:
    """Of an answered call: the number dialled out (calls out), else the extension that answered
    first (through Local helpers; a helper naming no extension gives way to a leg that talked)."""
    if call_type is CallType.OUTGOING:
        out = next(
            (
                leg
                for leg in answered
                if config.is_trunk(leg.dstchannel) or config.is_outside(leg.dst)
            ),
            None,
        )
        return out.dst if out is not None and dialled(out.dst) else first.dst
    for leg in answered:
        party = config.party(leg.dstchannel)
        if party is not None:
            return party
    talked = next((leg for leg in answered if leg.billsec > 0), answered[0])
    return talked.dst if dialled(talked.dst) else first.dst


def _dialled_first(config: PbxConfig, ordered: Sequence[Cdr]) -> str:
    """Of an unanswered call: the number first dialled, not the `s`/`hangup` of where it
    failed over to."""
    first = ordered[0]
    if dialled(first.dst):
        return first.dst
    for leg in ordered:
        if leg.dstchannel:
            if dialled(leg.dst):
                return leg.dst
            party = config.party(leg.dstchannel)
            if party is not None:
                return party
    return next((leg.dst for leg in ordered if dialled(leg.dst)), first.dst)


def merge(
    account_id: int,
    legs: Sequence[Cdr],
    config: PbxConfig,
    tz: ZoneInfo,
    recording_exists: RecordingExists | None = None,
) -> NewCall:
    """One call from all the legs known so far (any order; at least one)."""
    ordered = sorted(legs, key=leg_order)
    first = ordered[0]
    start = min(leg.start for leg in legs)
    end = max(leg.end for leg in legs)
    duration = int((end - start).total_seconds())
    answered_legs = [leg for leg in ordered if bridged(leg)]

    call_type, external = classify(
        config,
        src=first.src,
        dst=first.dst,
        channel=first.channel,
        dcontext=first.dcontext,
        reached=[
            first.dstchannel,
            *(c for leg in ordered[1:] for c in (leg.channel, leg.dstchannel)),
        ],
    )
    if answered_legs:
        dst = _answered_by(config, call_type, answered_legs, first)
        conversation = min(_talk_seconds(answered_legs), duration)
        answered_at = min((leg.answer for leg in answered_legs if leg.answer), default=None)
        answered_at = answered_at or end - timedelta(seconds=conversation)
        disposition = "ANSWERED"
    else:
        dst = _dialled_first(config, ordered)
        conversation = 0
        answered_at = None
        disposition = next(
            (leg.disposition for leg in ordered if leg.disposition != "ANSWERED"), "NO ANSWER"
        )
    pbx_call_id = first.call_key
    return NewCall(
        call_id=derive_call_id(account_id, pbx_call_id),
        pbx_call_id=pbx_call_id,
        started_at=start,
        answered_at=answered_at,
        ended_at=end,
        src=first.src,
        dst=dst,
        external_number=external,
        duration=duration,
        conversation=conversation,
        type=call_type,
        disposition=disposition,
        legs=len(legs),
        recording=(recording_path(first, ordered, tz, recording_exists) if answered_legs else None),
    )
