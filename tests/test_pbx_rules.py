"""How real Asterisk/FreePBX dialplans log calls, and the one call each must become.

Each case is the Master.csv legs (21 columns, PBX-local times in Asia/Tashkent) that a dialplan
writes: `Dial` to a ring group through FreePBX's `Local/` channels, follow-me, a queue member
behind `Local/<n>@from-queue`, `Hangup()`/`app-blackhole` after a failed Dial, feature codes,
ChanSpy, IVRs, call files. The account's trunk is PJSIP/uztelecom-*, its DID 781130590; the
`no trunk` account knows neither (a FreePBX whose admin never set them).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update
from typer.testing import CliRunner

from callhistory import accounts, crmstore
from callhistory.classify import PbxConfig
from callhistory.cli import app
from callhistory.config import Settings
from callhistory.ingest.asterisk_csv import import_paths
from callhistory.schema import call_integrations
from tests.conftest import Tenant
from tests.test_asterisk_csv import URL, stored_calls, write

CONFIG = PbxConfig(trunks=("PJSIP/uztelecom-*",), dids=("781130590",))
DAY = "2026-01-13"


def cdr(
    channel: str,
    dstchannel: str,
    *,
    src: str,
    dst: str,
    dcontext: str,
    lastapp: str,
    start: str,
    answer: str | None,
    end: str,
    disposition: str,
    uniqueid: str,
    linkedid: str,
    sequence: int,
    lastdata: str = "",
    userfield: str = "",
) -> str:
    """One Master.csv line as cdr_csv writes it with loguniqueid, loguserfield and
    newcdrcolumns; times are HH:MM:SS on DAY; duration and billsec computed as Asterisk does."""

    def at(clock: str) -> datetime:
        return datetime.fromisoformat(f"{DAY} {clock}")

    duration = int((at(end) - at(start)).total_seconds())
    billsec = int((at(end) - at(answer)).total_seconds()) if answer else 0
    clid = f'""{src}"" <{src}>' if src else ""
    fields = [
        "", src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata, f"{DAY} {start}",
        f"{DAY} {answer}" if answer else None, f"{DAY} {end}", duration, billsec, disposition,
        "DOCUMENTATION", uniqueid, userfield, "", linkedid, sequence,
    ]  # fmt: skip
    return ",".join("" if f is None else str(f) if isinstance(f, int) else f'"{f}"' for f in fields)


CALLER = "998901234567"

# --- 1. feature codes, IVRs, applications: Internal, however long, never Answered ------------
VOICEMAIL = [
    cdr("PJSIP/101-00000001", "", src="101", dst="*98", dcontext="app-vmmain", lastapp="Hangup",
        start="10:00:00", answer="10:00:00", end="10:00:41", disposition="ANSWERED",
        uniqueid="1768280400.1", linkedid="1768280400.1", sequence=1),
]  # fmt: skip
DAYNIGHT_TOGGLE = [
    cdr("PJSIP/102-00000002", "", src="102", dst="s", dcontext="app-daynight-toggle",
        lastapp="Playback", lastdata="beep&silence/1&day&reception", start="10:01:00",
        answer="10:01:00", end="10:01:04", disposition="ANSWERED", uniqueid="1768280460.2",
        linkedid="1768280460.2", sequence=2),
]  # fmt: skip
CHANSPY = [
    cdr("PJSIP/103-00000003", "", src="103", dst="555101", dcontext="app-chanspy",
        lastapp="ChanSpy", lastdata="PJSIP/101,q", start="10:02:00", answer="10:02:00",
        end="10:05:00", disposition="ANSWERED", uniqueid="1768280520.3", linkedid="1768280520.3",
        sequence=3),
]  # fmt: skip
# A phone whose call ran in an inbound context (a misconfigured device) dials a colleague.
EXTENSION_IN_INBOUND_CONTEXT = [
    cdr("SIP/466-00000004", "SIP/467-00000005", src="466", dst="467", dcontext="from-pstn",
        lastapp="Dial", lastdata="SIP/467,20", start="10:03:00", answer="10:03:05",
        end="10:03:35", disposition="ANSWERED", uniqueid="1768280580.4",
        linkedid="1768280580.4", sequence=4),
]  # fmt: skip

# --- 2. the PBX's own channels: call files and ChanSpy helpers ----------------------------------
# A call file (Channel: Local/101@from-internal, Context: from-internal, Extension: 998901112233):
# the ;1 side dials out through the trunk once the ;2 side has reached phone 101.
CALL_FILE_OUT = [
    cdr("Local/101@from-internal-00000006;1", "PJSIP/uztelecom-00000008", src="",
        dst="998901112233", dcontext="from-internal", lastapp="Dial",
        lastdata="PJSIP/998901112233@uztelecom,300", start="10:04:00", answer="10:04:12",
        end="10:05:12", disposition="ANSWERED", uniqueid="1768280640.6", linkedid="1768280640.6",
        sequence=6),
    cdr("Local/101@from-internal-00000006;2", "PJSIP/101-00000007", src="", dst="101",
        dcontext="from-internal", lastapp="Dial", lastdata="PJSIP/101,30", start="10:04:00",
        answer="10:04:03", end="10:05:12", disposition="ANSWERED", uniqueid="1768280640.7",
        linkedid="1768280640.6", sequence=7),
]  # fmt: skip
# A call file that rings 101 and connects it to 102: no trunk anywhere.
CALL_FILE_INTERNAL = [
    cdr("Local/101@from-internal-00000009;1", "PJSIP/102-0000000b", src="", dst="102",
        dcontext="from-internal", lastapp="Dial", lastdata="PJSIP/102,30", start="10:06:00",
        answer="10:06:09", end="10:06:39", disposition="ANSWERED", uniqueid="1768280760.9",
        linkedid="1768280760.9", sequence=9),
    cdr("Local/101@from-internal-00000009;2", "PJSIP/101-0000000a", src="", dst="101",
        dcontext="from-internal", lastapp="Dial", lastdata="PJSIP/101,30", start="10:06:00",
        answer="10:06:04", end="10:06:39", disposition="ANSWERED", uniqueid="1768280760.10",
        linkedid="1768280760.9", sequence=10),
]  # fmt: skip

# --- 3. a failed Dial, then Hangup()/terminate call: missed, not answered -------------------------
# An IVR answered the caller, rang 101 for 20 s, then FreePBX's "terminate call" (app-blackhole)
# held the line 71 s before hanging up. (FreePBX's CDR dst is the last extension: `hangup`.)
MISSED_THEN_BLACKHOLE = [
    cdr("PJSIP/uztelecom-0000000c", "", src=CALLER, dst="hangup", dcontext="app-blackhole",
        lastapp="Hangup", start="10:07:00", answer="10:07:00", end="10:08:31",
        disposition="ANSWERED", uniqueid="1768280820.12", linkedid="1768280820.12", sequence=13),
    cdr("PJSIP/uztelecom-0000000c", "PJSIP/101-0000000d", src=CALLER, dst="101",
        dcontext="ext-local", lastapp="Dial", lastdata="PJSIP/101,20", start="10:07:00",
        answer=None, end="10:07:20", disposition="NO ANSWER", uniqueid="1768280820.12",
        linkedid="1768280820.12", sequence=12),
]  # fmt: skip
# 101 calls out, the far end is busy, the outbound route plays "all circuits busy".
BUSY_THEN_CONGESTION = [
    cdr("PJSIP/101-0000000e", "PJSIP/uztelecom-0000000f", src="101", dst="998935550009",
        dcontext="from-internal", lastapp="Dial", lastdata="PJSIP/998935550009@uztelecom,300",
        start="10:09:00", answer=None, end="10:09:03", disposition="BUSY",
        uniqueid="1768280940.14", linkedid="1768280940.14", sequence=14),
    cdr("PJSIP/101-0000000e", "", src="101", dst="998935550009", dcontext="from-internal",
        lastapp="Congestion", lastdata="", start="10:09:03", answer="10:09:03", end="10:09:10",
        disposition="ANSWERED", uniqueid="1768280940.14", linkedid="1768280940.14",
        sequence=15),
]  # fmt: skip

# --- 4. the party that really answered, behind Local helpers --------------------------------------
# A ring group with a time delay: the helper Local/ch1@TimeDelay;1 "answers" with billsec 0,
# phone 301 behind it talks; 302 rang and was cancelled.
RING_GROUP_TIME_DELAY = [
    cdr("PJSIP/uztelecom-00000010", "Local/ch1@TimeDelay-00000001;1", src=CALLER,
        dst="781130590", dcontext="from-trunk", lastapp="Dial",
        lastdata="Local/ch1@TimeDelay&Local/ch2@TimeDelay,30", start="10:10:00",
        answer="10:10:08", end="10:10:08", disposition="ANSWERED", uniqueid="1768281000.16",
        linkedid="1768281000.16", sequence=16),
    cdr("Local/ch1@TimeDelay-00000001;2", "PJSIP/301-00000012", src=CALLER, dst="s",
        dcontext="TimeDelay", lastapp="Dial", lastdata="PJSIP/301,30", start="10:10:00",
        answer="10:10:08", end="10:11:08", disposition="ANSWERED", uniqueid="1768281000.17",
        linkedid="1768281000.16", sequence=17),
    cdr("Local/ch2@TimeDelay-00000002;2", "PJSIP/302-00000013", src=CALLER, dst="s",
        dcontext="TimeDelay", lastapp="Dial", lastdata="PJSIP/302,30", start="10:10:00",
        answer=None, end="10:10:08", disposition="NO ANSWER", uniqueid="1768281000.18",
        linkedid="1768281000.16", sequence=18),
]  # fmt: skip
# FreePBX follow-me: the Local/FMGL-1002 row answers with billsec 0; after Local optimisation a
# new row (start = that moment) holds the conversation with SIP/1002.
FOLLOW_ME = [
    cdr("SIP/uztelecom-00000014", "Local/FMGL-1002#@ext-findmefollow-00000003;1", src=CALLER,
        dst="781130590", dcontext="ext-findmefollow", lastapp="Dial",
        lastdata="Local/FMGL-1002#@ext-findmefollow,20", start="10:12:00", answer="10:12:06",
        end="10:12:06", disposition="ANSWERED", uniqueid="1768281120.20",
        linkedid="1768281120.20", sequence=20),
    cdr("Local/FMGL-1002#@ext-findmefollow-00000003;2", "SIP/1002-00000015", src=CALLER,
        dst="1002", dcontext="ext-local", lastapp="Dial", lastdata="SIP/1002,20",
        start="10:12:00", answer="10:12:06", end="10:12:06", disposition="ANSWERED",
        uniqueid="1768281120.21", linkedid="1768281120.20", sequence=21),
    cdr("SIP/uztelecom-00000014", "SIP/1002-00000015", src=CALLER, dst="781130590",
        dcontext="ext-findmefollow", lastapp="Dial",
        lastdata="Local/FMGL-1002#@ext-findmefollow,20", start="10:12:06", answer="10:12:06",
        end="10:12:51", disposition="ANSWERED", uniqueid="1768281120.20",
        linkedid="1768281120.20", sequence=22),
]  # fmt: skip
# A FreePBX queue rings its member 460 through Local/460@from-queue (not optimised away).
QUEUE_MEMBER = [
    cdr("PJSIP/uztelecom-00000016", "Local/460@from-queue-00000004;1", src=CALLER, dst="400",
        dcontext="ext-queues", lastapp="Queue", lastdata="400,t,,,300", start="10:13:00",
        answer="10:13:10", end="10:14:10", disposition="ANSWERED", uniqueid="1768281180.23",
        linkedid="1768281180.23", sequence=23),
]  # fmt: skip

# --- 6. recordings: only a file the CDR names, with FreePBX 2.x's `audio:` prefix understood ------
FREEPBX2_AUDIO_USERFIELD = [
    cdr("SIP/uztelecom-00000017", "SIP/105-00000018", src=CALLER, dst="781130590",
        dcontext="from-trunk", lastapp="Dial", lastdata="SIP/105,20", start="10:15:00",
        answer="10:15:02", end="10:15:32", disposition="ANSWERED", uniqueid="1768281300.24",
        linkedid="1768281300.24", sequence=24,
        userfield="audio:20260113-101500-1768281300.24.wav"),
]  # fmt: skip


def outcome(**fields: Any) -> dict[str, Any]:
    """What the show resource must say; `type`/`status` by name."""
    return fields


CASES: list[tuple[str, list[str], PbxConfig, dict[str, Any]]] = [
    ("*98 voicemail", VOICEMAIL, PbxConfig(),
     outcome(type="Internal", status="Not answered", disposition="NO ANSWER", src="101",
             dst="*98", external_number=None, duration=41, conversation=0, recording=None)),
    ("day/night toggle", DAYNIGHT_TOGGLE, PbxConfig(),
     outcome(type="Internal", status="Not answered", disposition="NO ANSWER", src="102",
             dst="s", external_number=None, duration=4, conversation=0, recording=None)),
    ("ChanSpy", CHANSPY, PbxConfig(),
     outcome(type="Internal", status="Not answered", disposition="NO ANSWER", src="103",
             dst="555101", external_number=None, duration=180, conversation=0, recording=None)),
    ("extension in an inbound context", EXTENSION_IN_INBOUND_CONTEXT, CONFIG,
     outcome(type="Internal", status="Answered", disposition="ANSWERED", src="466", dst="467",
             external_number=None, duration=35, conversation=30, recording=None)),
    ("call file out through the trunk", CALL_FILE_OUT, CONFIG,
     outcome(type="Outgoing", status="Answered", disposition="ANSWERED", src="",
             dst="998901112233", external_number="781130590", duration=72, conversation=69,
             recording=None)),
    ("call file out, no trunk configured", CALL_FILE_OUT, PbxConfig(),
     outcome(type="Outgoing", status="Answered", disposition="ANSWERED", src="",
             dst="998901112233", external_number=None, duration=72, conversation=69,
             recording=None)),
    ("call file between extensions", CALL_FILE_INTERNAL, CONFIG,
     outcome(type="Internal", status="Answered", disposition="ANSWERED", src="", dst="102",
             external_number=None, duration=39, conversation=35, recording=None)),
    ("missed, then terminate call", MISSED_THEN_BLACKHOLE, CONFIG,
     outcome(type="Incoming", status="Not answered", disposition="NO ANSWER", src=CALLER,
             dst="101", external_number="781130590", duration=91, conversation=0,
             recording=None)),
    ("busy, then congestion", BUSY_THEN_CONGESTION, CONFIG,
     outcome(type="Outgoing", status="Not answered", disposition="BUSY", src="101",
             dst="998935550009", external_number="781130590", duration=10, conversation=0,
             recording=None)),
    ("ring group behind TimeDelay helpers", RING_GROUP_TIME_DELAY, CONFIG,
     outcome(type="Incoming", status="Answered", disposition="ANSWERED", src=CALLER, dst="301",
             external_number="781130590", duration=68, conversation=60, recording=None)),
    ("follow-me through Local/FMGL-", FOLLOW_ME, CONFIG,
     outcome(type="Incoming", status="Answered", disposition="ANSWERED", src=CALLER,
             dst="1002", external_number="781130590", duration=51, conversation=45,
             recording=None)),
    ("queue member behind Local/460@from-queue", QUEUE_MEMBER, CONFIG,
     outcome(type="Incoming", status="Answered", disposition="ANSWERED", src=CALLER, dst="460",
             external_number="781130590", duration=70, conversation=60, recording=None)),
    ("FreePBX 2.x audio: userfield", FREEPBX2_AUDIO_USERFIELD, CONFIG,
     outcome(type="Incoming", status="Answered", disposition="ANSWERED", src=CALLER, dst="105",
             external_number="781130590", duration=32, conversation=30,
             recording="2026/01/13/20260113-101500-1768281300.24.wav")),
]  # fmt: skip


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant()


def configure(db: Engine, tenant: Tenant, config: PbxConfig) -> None:
    with db.begin() as conn:
        accounts.set_pbx_config(conn, tenant.account_id, config)


def summary(call: dict[str, Any]) -> dict[str, Any]:
    url = call["recorded_file_url"]
    return {
        "type": call["type"]["name"],
        "status": call["status"]["name"],
        "disposition": call["disposition"],
        "src": call["src"],
        "dst": call["dst"],
        "external_number": call["external_number"],
        "duration": call["duration"],
        "conversation": call["conversation"],
        "recording": url.split("/storage/monitor/", 1)[1].split("?", 1)[0] if url else None,
    }


@pytest.mark.parametrize(("name", "legs", "config", "expected"), CASES, ids=[c[0] for c in CASES])
def test_real_dialplan_legs_make_the_right_call(
    name: str,
    legs: list[str],
    config: PbxConfig,
    expected: dict[str, Any],
    tmp_path: Path,
    db: Engine,
    client: TestClient,
    tenant: Tenant,
) -> None:
    configure(db, tenant, config)
    report = import_paths(db, tenant.account_id, [str(write(tmp_path, "\n".join(legs) + "\n"))])
    assert report.bad == []
    (call,) = stored_calls(client, tenant)
    assert summary(call) == expected
    assert call["legs"] == len(legs)


def test_any_order_of_the_legs_gives_the_same_calls(
    tmp_path: Path, db: Engine, client: TestClient, tenant: Tenant
) -> None:
    """Rule 5: legs that tie on sequence and start (a BUSY and a NO ANSWER of one uniqueid) and
    every other case, shuffled: byte-identical calls."""
    tie = [
        cdr("PJSIP/101-00000020", "PJSIP/102-00000021", src="101", dst="102",
            dcontext="from-internal", lastapp="Dial", lastdata="PJSIP/102,20", start="11:00:00",
            answer=None, end="11:00:02", disposition=disposition, uniqueid="1768284000.30",
            linkedid="1768284000.30", sequence=30)
        for disposition in ("BUSY", "NO ANSWER")
    ]  # fmt: skip
    lines = [line for _, legs, _, _ in CASES if legs is not CALL_FILE_OUT for line in legs]
    lines += CALL_FILE_OUT + tie
    configure(db, tenant, CONFIG)
    seen = []
    for attempt in range(4):
        shuffled = random.Random(attempt).sample(lines, len(lines))
        with db.begin() as conn:
            conn.exec_driver_sql("DELETE FROM call_legs")
            conn.exec_driver_sql("DELETE FROM calls")
            conn.exec_driver_sql("DELETE FROM call_counts")
            conn.exec_driver_sql("DELETE FROM call_rollups")
        path = write(tmp_path, "\n".join(shuffled) + "\n", f"shuffled{attempt}.csv")
        import_paths(db, tenant.account_id, [str(path)])
        calls = sorted(
            ({k: v for k, v in c.items() if k != "id"} for c in stored_calls(client, tenant)),
            key=lambda c: c["call_id"],
        )
        seen.append(calls)
    assert all(calls == seen[0] for calls in seen)
    assert [c["disposition"] for c in seen[0] if c["pbx_call_id"] == "1768284000.30"] == ["BUSY"]


def test_a_recording_nobody_names_is_linked_only_when_its_file_exists(
    tmp_path: Path, db: Engine, client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    """MixMonitor's default `YYYY/MM/DD/<uniqueid>.wav` is linked if it is there; a call
    that never bridged gets no link even when MixMonitor left its header-only file."""
    configure(db, tenant, CONFIG)
    root = settings.recordings_root.resolve() / str(tenant.account_id)
    (root / "2026/01/13").mkdir(parents=True)
    for name in ("1768281000.16.wav", "1768280820.12.wav"):  # answered / missed
        (root / "2026/01/13" / name).write_bytes(b"RIFF" + b"\0" * 40)
    legs = RING_GROUP_TIME_DELAY + MISSED_THEN_BLACKHOLE + QUEUE_MEMBER
    path = write(tmp_path, "\n".join(legs) + "\n")
    import_paths(db, tenant.account_id, [str(path)], recordings_base=settings.recordings_root)
    recordings = {c["pbx_call_id"]: summary(c)["recording"] for c in stored_calls(client, tenant)}
    assert recordings == {
        "1768281000.16": "2026/01/13/1768281000.16.wav",
        "1768280820.12": None,
        "1768281180.23": None,
    }


def test_outside_numbers_decide_without_a_trunk(
    tmp_path: Path, db: Engine, client: TestClient, tenant: Tenant
) -> None:
    """With no trunk configured, a 7+ digit number is outside; a custom pattern changes it."""
    legs = [
        cdr("SIP/201-00000030", "SIP/provider-00000031", src="201", dst=dst,
            dcontext="from-internal", lastapp="Dial", lastdata=f"SIP/provider/{dst}",
            start=f"12:00:0{n}", answer=f"12:00:0{n + 1}", end=f"12:00:1{n}",
            disposition="ANSWERED", uniqueid=f"176828760{n}.4{n}",
            linkedid=f"176828760{n}.4{n}", sequence=40 + n)
        for n, dst in enumerate(["998901112233", "+74951234567", "0012025550100", "8800", "202"])
    ]  # fmt: skip
    path = write(tmp_path, "\n".join(legs) + "\n")
    import_paths(db, tenant.account_id, [str(path)])
    types = {c["dst"]: c["type"]["name"] for c in stored_calls(client, tenant)}
    assert types == {
        "998901112233": "Outgoing",
        "+74951234567": "Outgoing",
        "0012025550100": "Outgoing",
        "8800": "Internal",
        "202": "Internal",
    }


def test_utc_or_local_is_told_from_the_uniqueids(
    tmp_path: Path, db: Engine, client: TestClient, tenant: Tenant
) -> None:
    """The uniqueid is the channel's creation epoch: 1768280400 is 10:00 in Tashkent, 05:00
    UTC. A file written with a UTC clock and one written in local time give the same call."""
    local = cdr("PJSIP/uztelecom-00000040", "PJSIP/101-00000041", src=CALLER, dst="781130590",
                dcontext="from-trunk", lastapp="Dial", start="10:00:00", answer="10:00:05",
                end="10:01:05", disposition="ANSWERED", uniqueid="1768280400.50",
                linkedid="1768280400.50", sequence=50)  # fmt: skip
    in_utc = local.replace(f"{DAY} 10:0", f"{DAY} 05:0")
    configure(db, tenant, CONFIG)
    report = import_paths(db, tenant.account_id, [str(write(tmp_path, in_utc + "\n", "a.csv"))])
    assert report.notes == [
        f"{tmp_path / 'a.csv'}: times read as UTC: on 1 of 1 lines the start is the uniqueid's "
        "time in UTC, not in Asia/Tashkent (a UTC server clock or cdr.conf usegmtime=yes; "
        "--local-time forces local)"
    ]
    (call,) = stored_calls(client, tenant)
    assert (call["date_time"], call["ended_at"]) == ("2026-01-13 10:00:00", "2026-01-13 10:01:05")

    report = import_paths(db, tenant.account_id, [str(write(tmp_path, local + "\n", "b.csv"))])
    assert report.notes == [
        f"{tmp_path / 'b.csv'}: times read as Asia/Tashkent time: on 1 of 1 lines the start is "
        "the uniqueid's time in that zone (--gmt forces UTC)"
    ]
    assert report.outcome.duplicate_legs == 1  # the same leg, read right both times

    forced = import_paths(
        db, tenant.account_id, [str(write(tmp_path, in_utc + "\n", "c.csv"))], gmt=False
    )
    assert forced.notes == []  # forced: read as Tashkent time, a leg 5 hours before the call's
    (call,) = stored_calls(client, tenant)
    assert (call["date_time"], call["legs"]) == ("2026-01-13 05:00:00", 2)


def test_a_file_without_linkedid_says_so(
    tmp_path: Path, db: Engine, client: TestClient, tenant: Tenant
) -> None:
    line = (
        '"","998935550003","600","from-trunk","""998935550003"" <998935550003>",'
        '"SIP/uztelecom-00000080","SIP/102-00000082","Dial","SIP/101&SIP/102,20",'
        '"2026-01-13 10:00:00","2026-01-13 10:00:07","2026-01-13 10:00:37",37,30,"ANSWERED",'
        '"DOCUMENTATION","1768280400.80",""'
    )
    path = write(tmp_path, line + "\n")
    report = import_paths(db, tenant.account_id, [str(path)])
    assert report.notes[-1] == (
        f"{path}: 1 lines have no linkedid, so the legs of one call are told apart by uniqueid "
        "only: queues, ring groups, transfers and call files may count as several calls. Fix: "
        "newcdrcolumns=yes in the [csv] section of cdr.conf"
    )


def test_cdr_custom_layout_is_read(
    tmp_path: Path, db: Engine, client: TestClient, tenant: Tenant
) -> None:
    """cdr_custom.conf's sample mapping: clid first, accountcode after amaflags, sequence last,
    every value quoted (integers too), `CDR(duration,f)` fractions."""
    line = (
        '"""998901234567"" <998901234567>","998901234567","781130590","from-trunk",'
        '"PJSIP/uztelecom-00000001","PJSIP/101-00000002","Dial","PJSIP/101,30",'
        '"2026-01-13 10:00:00","2026-01-13 10:00:05","2026-01-13 10:01:05","65.340","60.120",'
        '"ANSWERED","DOCUMENTATION","","1768280400.1","","1"'
    )
    misordered = line.replace('"ANSWERED","DOCUMENTATION",', '"DOCUMENTATION","","ANSWERED",')
    configure(db, tenant, CONFIG)
    path = write(tmp_path, f"{line}\n{misordered}\n")
    report = import_paths(db, tenant.account_id, [str(path)])
    assert [str(b) for b in report.bad] == [
        f"{path}:2: the disposition is in column 16, not 15: the columns are not in Master.csv's "
        "order (cdr_csv) nor in the cdr_custom sample's"
    ]
    (call,) = stored_calls(client, tenant)
    assert summary(call) == outcome(
        type="Incoming", status="Answered", disposition="ANSWERED", src=CALLER, dst="101",
        external_number="781130590", duration=65, conversation=60, recording=None,
    )  # fmt: skip


def test_reclassify_after_the_layout_changes(
    tmp_path: Path,
    db: Engine,
    client: TestClient,
    tenant: Tenant,
    cli_env: dict[str, str],
) -> None:
    """Calls out through a trunk nobody configured, to short numbers (a PBX across town): Internal
    until `--trunk` names it and `calls reclassify` runs; ids stay, counters move, the CRM gets
    the calls that are now outside ones (and only when something it is sent changed); `--trunk ''`
    clears the list again."""
    legs = [
        cdr("SIP/201-00000050", "SIP/citylink-00000051", src="201", dst=f"5{n}00",
            dcontext="from-internal", lastapp="Dial", lastdata=f"SIP/citylink/5{n}00",
            start=f"13:00:0{n}", answer=f"13:00:0{n + 1}", end=f"13:01:0{n}",
            disposition="ANSWERED", uniqueid=f"176829120{n}.6{n}",
            linkedid=f"176829120{n}.6{n}", sequence=60 + n)
        for n in range(3)
    ]  # fmt: skip
    path = write(tmp_path, "\n".join(legs) + "\n")
    with db.begin() as conn:
        crmstore.connect(
            conn, tenant.account_id, "amocrm", "http://127.0.0.1:9", "oauth", "sealed", None
        )
    runner = CliRunner()
    account = str(tenant.account_id)
    result = runner.invoke(
        app, ["import", "asterisk-csv", str(path), "--account", account], env=cli_env
    )
    assert result.exit_code == 0, result.output
    before = {c["id"]: c["type"]["name"] for c in stored_calls(client, tenant)}
    assert set(before.values()) == {"Internal"}

    args = ["accounts", "configure", account, "--trunk", "SIP/citylink-*"]
    assert runner.invoke(app, args, env=cli_env).exit_code == 0
    result = runner.invoke(app, ["calls", "reclassify", "--account", account], env=cli_env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        "calls examined: 3, changed: 3; CRM syncs queued again: 3"
    )
    after = {c["id"]: c["type"]["name"] for c in stored_calls(client, tenant)}
    assert after == dict.fromkeys(before, "Outgoing")
    totals = client.get(URL, params={"filter[type]": "2"}, headers=tenant.headers).json()
    assert totals["meta"]["total"] == 3
    assert sync_rows(db) == {"pending": 3}
    with db.begin() as conn:
        conn.execute(update(call_integrations).values(status="synced"))

    again = runner.invoke(app, ["calls", "reclassify", "--account", account], env=cli_env)
    assert again.stdout.splitlines()[-1] == (
        "calls examined: 3, changed: 0; CRM syncs queued again: 0"
    )
    assert sync_rows(db) == {"synced": 3}  # nothing changed: nothing sent again
    cleared = runner.invoke(app, ["accounts", "configure", account, "--trunk", ""], env=cli_env)
    assert '"trunks": []' in cleared.stdout
    runner.invoke(
        app, ["calls", "reclassify", "--account", account, "--from", "2026-01-13"], env=cli_env
    )
    internal = client.get(URL, params={"filter[type]": "3"}, headers=tenant.headers).json()
    assert internal["meta"]["total"] == 3
    assert sync_rows(db) == {"synced": 3}  # what was pushed stays pushed

    # The CRM is disconnected (its rows stay as history, with no CRM) and connected anew: the
    # calls that turn outside again go to the new connection; the history is not queued again.
    with db.begin() as conn:
        crmstore.disconnect(conn, tenant.account_id, "amocrm")
        crmstore.connect(
            conn, tenant.account_id, "amocrm", "http://127.0.0.1:9", "oauth", "sealed", None
        )
    args = ["accounts", "configure", account, "--trunk", "SIP/citylink-*"]
    assert runner.invoke(app, args, env=cli_env).exit_code == 0
    result = runner.invoke(app, ["calls", "reclassify", "--account", account], env=cli_env)
    assert result.stdout.splitlines()[-1] == (
        "calls examined: 3, changed: 3; CRM syncs queued again: 3"
    )
    assert sync_rows(db) == {"synced": 3, "pending": 3}


def sync_rows(db: Engine) -> dict[str, int]:
    with db.connect() as conn:
        rows = conn.execute(
            select(call_integrations.c.status, func.count()).group_by(call_integrations.c.status)
        ).all()
    return {str(status): int(n) for status, n in rows}


def test_the_timezone_can_change_and_a_bad_option_changes_nothing(
    tmp_path: Path, db: Engine, client: TestClient, tenant: Tenant, cli_env: dict[str, str]
) -> None:
    """Stored calls keep their instant; they are shown in the new zone. A bad value among good
    ones is refused whole."""
    configure(db, tenant, CONFIG)
    import_paths(db, tenant.account_id, [str(write(tmp_path, VOICEMAIL[0] + "\n"))])
    account = str(tenant.account_id)
    runner = CliRunner()
    moved = runner.invoke(
        app, ["accounts", "configure", account, "--timezone", "Europe/Berlin"], env=cli_env
    )
    assert moved.exit_code == 0, moved.output
    assert '"timezone": "Europe/Berlin"' in moved.stdout
    (call,) = stored_calls(client, tenant)
    assert call["date_time"] == "2026-01-13 06:00:00"  # 10:00 in Tashkent is 06:00 in Berlin

    bad = runner.invoke(
        app,
        ["accounts", "configure", account, "--trunk", "SIP/other-*", "--timezone", "Mars/Base"],
        env=cli_env,
    )
    assert (bad.exit_code, bad.stderr) == (
        1,
        "error: Unknown timezone 'Mars/Base'; use an IANA name such as Asia/Tashkent.\n",
    )
    shown = runner.invoke(app, ["accounts", "show", account], env=cli_env).stdout
    assert '"timezone": "Europe/Berlin"' in shown
    assert '"PJSIP/uztelecom-*"' in shown and "SIP/other-*" not in shown
