"""Realistic demo data: an Uzbek company's PBX over the last 60 days. Idempotent."""

from __future__ import annotations

import math
import random
import wave
from array import array
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from callhistory import accounts, store
from callhistory.models import CallType, NewCall, call_from_durations, derive_call_id
from callhistory.query import to_utc

DEMO_ACCOUNT = "Demo Company"
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"
DEMO_DIDS = ("781130590", "712005060", "781500070")
_OPERATOR_PREFIXES = ("90", "91", "93", "94", "97", "99", "88", "33")
#: Answered demo calls link one of these few short clips (written by `write_clips`), so every
#: recording plays without gigabytes of audio.
CLIPS = 8
_RATE = 8000  # Hz, mono, 16-bit: what Asterisk's MixMonitor writes for a phone call


def _phone(rng: random.Random) -> str:
    return f"998{rng.choice(_OPERATOR_PREFIXES)}{rng.randrange(10**7):07d}"


def _disposition(rng: random.Random, call_type: CallType) -> str:
    answered_share = 0.8 if call_type is CallType.INCOMING else 0.65
    if rng.random() < answered_share:
        return "ANSWERED"
    return rng.choices(("NO ANSWER", "BUSY", "FAILED", "CONGESTION"), (70, 20, 7, 3))[0]


def generate(
    account_id: int, count: int, now_local: datetime, tz: ZoneInfo, seed: int = 7
) -> Iterator[NewCall]:
    """`count` calls spread over the 60 days before `now_local` (account-local, naive)."""
    rng = random.Random(seed)
    for index in range(count):
        call_type = rng.choices(list(CallType), (50, 35, 15))[0]
        extension = str(rng.randint(100, 199))
        did = rng.choice(DEMO_DIDS)
        if call_type is CallType.INCOMING:
            src, dst, external = _phone(rng), extension, did
        elif call_type is CallType.OUTGOING:
            src, dst, external = extension, _phone(rng), did
        else:
            src, dst, external = extension, str(rng.randint(100, 199)), None
        disposition = _disposition(rng, call_type)
        ring = rng.randint(3, 25)
        conversation = int(rng.lognormvariate(4.2, 1.0)) + 1 if disposition == "ANSWERED" else 0
        duration = ring + conversation
        # Business hours mostly, some evenings.
        day = now_local - timedelta(days=rng.randrange(60))
        started_local = day.replace(
            hour=rng.choices(range(24), [1] * 8 + [6] * 10 + [2] * 6)[0],
            minute=rng.randrange(60),
            second=rng.randrange(60),
            microsecond=0,
        )
        if started_local > now_local:
            started_local -= timedelta(days=1)
        started_at = to_utc(started_local, tz)
        pbx_call_id = f"{int(started_at.replace(tzinfo=UTC).timestamp())}.{index}"
        answered = disposition == "ANSWERED"
        yield call_from_durations(
            call_id=derive_call_id(account_id, pbx_call_id),
            pbx_call_id=pbx_call_id,
            started_at=started_at,
            duration=duration,
            conversation=conversation,
            disposition=disposition,
            src=src,
            dst=dst,
            external_number=external,
            type=call_type,
            legs=rng.choice((1, 1, 1, 2, 3)) if call_type is CallType.INCOMING else 1,
            recording=f"demo/clip-{index % CLIPS}.wav" if answered else None,
        )


def load(conn: Connection, count: int) -> tuple[int, int, int]:
    """Create (once) the demo account, user and calls. Returns (account, user, calls created)."""
    account_id = accounts.find_account_by_name(conn, DEMO_ACCOUNT)
    if account_id is None:
        account_id = accounts.create_account(conn, DEMO_ACCOUNT)
    user = accounts.find_user(conn, DEMO_EMAIL)
    if user is None:
        user_id = accounts.create_user(conn, account_id, DEMO_EMAIL, "Demo Manager", DEMO_PASSWORD)
    else:
        user_id = int(user.id)
    tz = accounts.account_timezone(conn, account_id)
    now_local = datetime.now(tz).replace(tzinfo=None)
    created = 0
    batch: list[NewCall] = []
    for call in generate(account_id, count, now_local, tz):
        batch.append(call)
        if len(batch) == 1000:
            created += len(store.insert_calls(conn, account_id, batch))
            batch = []
    created += len(store.insert_calls(conn, account_id, batch))
    # No CRM rows: the demo account has no CRM connected (`integrations amocrm connect` adds it,
    # and then each new call is queued for it).
    return account_id, user_id, created


def write_clips(root: Path) -> int:
    """Write the demo's clips under `root/demo/` (those missing): a few seconds each of two
    voices taking turns, tones shaped like syllables. Returns how many were written."""
    folder = root / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for n in range(CLIPS):
        path = folder / f"clip-{n}.wav"
        if path.exists():
            continue
        rng = random.Random(n)
        samples = array("h")
        for turn in range(4 + n % 3):
            pitch = (140.0 if turn % 2 else 220.0) * (1 + 0.05 * n)
            for _ in range(rng.randint(3, 6)):  # syllables
                length = int(_RATE * rng.uniform(0.12, 0.3))
                for i in range(length):
                    envelope = math.sin(math.pi * i / length)
                    t = i / _RATE
                    wave_ = math.sin(2 * math.pi * pitch * t) + 0.4 * math.sin(
                        4 * math.pi * pitch * t
                    )
                    samples.append(int(9000 * envelope * wave_))
                samples.extend([0] * int(_RATE * 0.06))
            samples.extend([0] * int(_RATE * 0.35))  # the other side's turn
        partial = path.with_suffix(".part")
        with wave.open(str(partial), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(_RATE)
            out.writeframes(samples.tobytes())
        partial.replace(path)
        written += 1
    return written
