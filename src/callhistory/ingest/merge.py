"""The CDR legs of one phone call → the one call record the user sees. Pure.

start = earliest start; end = latest end; duration = end - start; answered if any leg was;
conversation = the billsec of the answered legs (at most the duration); src = the caller of the
first leg; dst = who answered (else the number dialled first); legs = how many CDRs were merged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

from callhistory.classify import PbxConfig, channel_peer, classify
from callhistory.ingest.cdr import Cdr
from callhistory.models import CallType, NewCall, derive_call_id

_AUDIO = re.compile(r"[^/\\\0]+\.(wav|WAV|wav49|gsm|ulaw|alaw|mp3|ogg|opus)")
_SYSTEM_PREFIX = re.compile(r"^.+-(?=\d+\.\d+$)")


def leg_order(leg: Cdr) -> tuple[int, object, object]:
    """Sequence when Asterisk gives it, else start time, then uniqueid."""
    return (leg.sequence if leg.sequence is not None else 1 << 62, leg.start, leg.uniqueid or "")


def recording_path(first: Cdr, legs: Sequence[Cdr], tz: ZoneInfo) -> str | None:
    """MixMonitor's `YYYY/MM/DD/<uniqueid>.wav` (PBX-local date), or FreePBX's recordingfile."""
    local_day = first.start.replace(tzinfo=UTC).astimezone(tz).strftime("%Y/%m/%d")
    for leg in legs:
        if leg.userfield and _AUDIO.fullmatch(leg.userfield):
            return f"{local_day}/{leg.userfield}"
    name = first.linkedid or first.uniqueid
    if not name:
        return None
    return f"{local_day}/{_SYSTEM_PREFIX.sub('', name)}.wav"


def merge(account_id: int, legs: Sequence[Cdr], config: PbxConfig, tz: ZoneInfo) -> NewCall:
    """One call from all the legs known so far (any order; at least one)."""
    ordered = sorted(legs, key=leg_order)
    first = ordered[0]
    start = min(leg.start for leg in legs)
    end = max(leg.end for leg in legs)
    duration = int((end - start).total_seconds())
    answered_legs = [leg for leg in ordered if leg.disposition == "ANSWERED"]
    conversation = min(sum(leg.billsec for leg in answered_legs), duration)

    call_type, external = classify(
        config,
        src=first.src,
        dst=first.dst,
        channel=first.channel,
        dcontext=first.dcontext,
        dstchannels=[leg.dstchannel for leg in ordered if leg.dstchannel],
    )
    dst = first.dst
    if answered_legs:
        answerer = answered_legs[0]
        peer = channel_peer(answerer.dstchannel) if answerer.dstchannel else ""
        # An extension that picked up (ring group, queue) is "who answered"; for calls out through
        # a trunk, the number dialled is.
        if call_type is not CallType.OUTGOING and config.is_extension(peer):
            dst = peer
        else:
            dst = answerer.dst
    answered_at = None
    if answered_legs:
        answered_at = min((leg.answer for leg in answered_legs if leg.answer), default=None)
        answered_at = answered_at or end - timedelta(seconds=conversation)
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
        disposition="ANSWERED" if answered_legs else first.disposition,
        legs=len(legs),
        recording=recording_path(first, ordered, tz) if answered_legs else None,
    )
