"""Master.csv import: scenarios written as the CDR lines Asterisk writes, and the call they make.

The account runs in Asia/Tashkent (UTC+5); its trunk is PJSIP/uztelecom-*, its DID 781130590.
Epoch 1768280400 is 2026-01-13 10:00:00 in Tashkent.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import DateTime, Engine, text
from sqlalchemy.dialects import sqlite
from typer.testing import CliRunner

from callhistory import accounts, bulk, migrate
from callhistory.classify import PbxConfig
from callhistory.cli import app
from callhistory.ingest import asterisk_csv
from callhistory.ingest.asterisk_csv import import_paths
from callhistory.ingest.pbx import Layout
from callhistory.models import derive_call_id
from callhistory.schema import make_engine, url_of
from tests.conftest import Tenant
from tests.test_roles import web_session

URL = "/api/v1/call-history"
CONFIG = PbxConfig(trunks=("PJSIP/uztelecom-*",), dids=("781130590",))

# --- the scenarios: (name, Master.csv lines, options, the call(s) they must produce) -----------

INBOUND_ANSWERED = '''\
"","998901234567","781130590","from-trunk","""998901234567"" <998901234567>","PJSIP/uztelecom-00000001","PJSIP/101-00000002","Dial","PJSIP/101,30,tT","2026-01-13 10:00:00","2026-01-13 10:00:05","2026-01-13 10:01:05",65,60,"ANSWERED","DOCUMENTATION","1768280400.1","","","1768280400.1",1
'''

RING_GROUP_THIRD_ANSWERS = '''\
"","998935550001","600","from-trunk","""998935550001"" <998935550001>","PJSIP/uztelecom-00000010","PJSIP/101-00000011","Dial","PJSIP/101&PJSIP/102&PJSIP/103,20","2026-01-13 10:00:00",,"2026-01-13 10:00:12",12,0,"NO ANSWER","DOCUMENTATION","1768280400.10","","","1768280400.10",10
"","998935550001","600","from-trunk","""998935550001"" <998935550001>","PJSIP/uztelecom-00000010","PJSIP/102-00000012","Dial","PJSIP/101&PJSIP/102&PJSIP/103,20","2026-01-13 10:00:00",,"2026-01-13 10:00:12",12,0,"NO ANSWER","DOCUMENTATION","1768280400.10","","","1768280400.10",11
"","998935550001","600","from-trunk","""998935550001"" <998935550001>","PJSIP/uztelecom-00000010","PJSIP/103-00000013","Dial","PJSIP/101&PJSIP/102&PJSIP/103,20","2026-01-13 10:00:00","2026-01-13 10:00:12","2026-01-13 10:00:52",52,40,"ANSWERED","DOCUMENTATION","1768280400.10","","","1768280400.10",12
'''

RING_GROUP_NOBODY = '''\
"","998935550002","600","from-trunk","""998935550002"" <998935550002>","PJSIP/uztelecom-00000020","PJSIP/101-00000021","Dial","PJSIP/101&PJSIP/102,20","2026-01-13 10:00:00",,"2026-01-13 10:00:20",20,0,"NO ANSWER","DOCUMENTATION","1768280400.20","","","1768280400.20",20
"","998935550002","600","from-trunk","""998935550002"" <998935550002>","PJSIP/uztelecom-00000020","PJSIP/102-00000022","Dial","PJSIP/101&PJSIP/102,20","2026-01-13 10:00:00",,"2026-01-13 10:00:20",20,0,"NO ANSWER","DOCUMENTATION","1768280400.20","","","1768280400.20",21
'''

OUTBOUND = '''\
"","101","998901112233","from-internal","""Ali"" <101>","PJSIP/101-00000030","PJSIP/uztelecom-00000031","Dial","PJSIP/998901112233@uztelecom,60","2026-01-13 10:00:00",,"2026-01-13 10:00:04",4,0,"BUSY","DOCUMENTATION","1768280400.30","","","1768280400.30",30
"","102","998901112244","from-internal","""Vali"" <102>","PJSIP/102-00000032","PJSIP/uztelecom-00000033","Dial","PJSIP/998901112244@uztelecom,60","2026-01-13 10:05:00",,"2026-01-13 10:05:01",1,0,"FAILED","DOCUMENTATION","1768280700.32","","","1768280700.32",32
"","103","998901112255","from-internal","""Sami"" <103>","PJSIP/103-00000034","PJSIP/uztelecom-00000035","Dial","PJSIP/998901112255@uztelecom,60","2026-01-13 10:10:00","2026-01-13 10:10:07","2026-01-13 10:12:07",127,120,"ANSWERED","DOCUMENTATION","1768281000.34","","","1768281000.34",34
'''

INTERNAL = '''\
"","101","102","from-internal","""Ali"" <101>","PJSIP/101-00000040","PJSIP/102-00000041","Dial","PJSIP/102,30","2026-01-13 10:00:00","2026-01-13 10:00:03","2026-01-13 10:00:33",33,30,"ANSWERED","DOCUMENTATION","1768280400.40","","","1768280400.40",40
'''

# 101 answers, consults 102 (a call of its own), then completes the transfer: 102 talks to the caller.
ATTENDED_TRANSFER = '''\
"","998901234500","781130590","from-trunk","""998901234500"" <998901234500>","PJSIP/uztelecom-00000050","PJSIP/101-00000051","Dial","PJSIP/101,30","2026-01-13 10:00:00","2026-01-13 10:00:04","2026-01-13 10:01:00",60,56,"ANSWERED","DOCUMENTATION","1768280400.50","","","1768280400.50",50
"","101","102","from-internal","""Ali"" <101>","PJSIP/101-00000052","PJSIP/102-00000053","Dial","PJSIP/102,30","2026-01-13 10:00:30","2026-01-13 10:00:35","2026-01-13 10:01:00",30,25,"ANSWERED","DOCUMENTATION","1768280430.52","","","1768280400.50",52
"","998901234500","102","from-trunk","""998901234500"" <998901234500>","PJSIP/uztelecom-00000050","PJSIP/102-00000053","AppDial","(Outgoing Line)","2026-01-13 10:01:00","2026-01-13 10:01:00","2026-01-13 10:03:00",120,120,"ANSWERED","DOCUMENTATION","1768280400.50","","","1768280400.50",54
'''

BLIND_TRANSFER = '''\
"","998901234501","781130590","from-trunk","""998901234501"" <998901234501>","PJSIP/uztelecom-00000060","PJSIP/101-00000061","Dial","PJSIP/101,30","2026-01-13 10:00:00","2026-01-13 10:00:02","2026-01-13 10:00:20",20,18,"ANSWERED","DOCUMENTATION","1768280400.60","","","1768280400.60",60
"","998901234501","102","from-internal-xfer","""998901234501"" <998901234501>","PJSIP/uztelecom-00000060","PJSIP/102-00000062","Dial","PJSIP/102,30","2026-01-13 10:00:20","2026-01-13 10:00:25","2026-01-13 10:01:25",65,60,"ANSWERED","DOCUMENTATION","1768280400.60","","","1768280400.60",61
'''

ACROSS_MIDNIGHT = '''\
"","998901234502","781130590","from-trunk","""998901234502"" <998901234502>","PJSIP/uztelecom-00000070","PJSIP/101-00000071","Dial","PJSIP/101,30","2026-01-13 23:59:50","2026-01-13 23:59:55","2026-01-14 00:01:10",80,75,"ANSWERED","DOCUMENTATION","1768330790.70","","","1768330790.70",70
'''

# The stock cdr.conf: usegmtime, loguniqueid, loguserfield (18 columns, UTC, no linkedid).
GMT_18_COLUMNS = '''\
"","998935550003","600","from-trunk","""998935550003"" <998935550003>","SIP/uztelecom-00000080","SIP/101-00000081","Dial","SIP/101&SIP/102,20","2026-01-13 05:00:00",,"2026-01-13 05:00:07",7,0,"NO ANSWER","DOCUMENTATION","1768280400.80",""
"","998935550003","600","from-trunk","""998935550003"" <998935550003>","SIP/uztelecom-00000080","SIP/102-00000082","Dial","SIP/101&SIP/102,20","2026-01-13 05:00:00","2026-01-13 05:00:07","2026-01-13 05:00:37",37,30,"ANSWERED","DOCUMENTATION","1768280400.80",""
'''

SYSTEMNAME_21_COLUMNS = '''\
"acc1","998901234503","781130590","from-trunk","""998901234503"" <998901234503>","PJSIP/uztelecom-00000090","PJSIP/104-00000091","Dial","PJSIP/104,30","2026-01-13 10:00:00","2026-01-13 10:00:01","2026-01-13 10:00:11",11,10,"ANSWERED","DOCUMENTATION","pbx1-1768280400.90","","","pbx1-1768280400.90",90
'''

FREEPBX_RECORDINGFILE = '''\
"","998901234504","781130590","from-trunk","""998901234504"" <998901234504>","PJSIP/uztelecom-00000100","PJSIP/105-00000101","Dial","PJSIP/105,30","2026-01-13 10:00:00","2026-01-13 10:00:01","2026-01-13 10:00:11",11,10,"ANSWERED","DOCUMENTATION","1768280400.100","in-781130590-998901234504-20260113-100000-1768280400.100.wav","","1768280400.100",100
'''


def expect(**fields: Any) -> dict[str, Any]:
    """The show resource of an inbound answered call, with `fields` overriding it."""
    base: dict[str, Any] = {
        "external_number": "781130590",
        "type": {"number": 1, "name": "Incoming"},
        "status": {"number": 1, "name": "Answered"},
        "integration": [],
        "disposition": "ANSWERED",
        "legs": 1,
    }
    base.update(fields)
    return base


SCENARIOS: list[tuple[str, str, bool, list[dict[str, Any]]]] = [
    (
        "inbound answered",
        INBOUND_ANSWERED,
        False,
        [
            expect(
                date_time="2026-01-13 10:00:00", src="998901234567", dst="101", duration=65,
                conversation=60, answered_at="2026-01-13 10:00:05", ended_at="2026-01-13 10:01:05",
                pbx_call_id="1768280400.1", recording=None,
            )
        ],
    ),
    (
        "ring group, the third phone answers",
        RING_GROUP_THIRD_ANSWERS,
        False,
        [
            expect(
                date_time="2026-01-13 10:00:00", src="998935550001", dst="103", duration=52,
                conversation=40, answered_at="2026-01-13 10:00:12", ended_at="2026-01-13 10:00:52",
                pbx_call_id="1768280400.10", legs=3, recording=None,
            )
        ],
    ),
    (
        "ring group, nobody answers",
        RING_GROUP_NOBODY,
        False,
        [
            expect(
                date_time="2026-01-13 10:00:00", src="998935550002", dst="600", duration=20,
                conversation=0, status={"number": 2, "name": "Not answered"},
                disposition="NO ANSWER", answered_at=None, ended_at="2026-01-13 10:00:20",
                pbx_call_id="1768280400.20", legs=2, recording=None,
            )
        ],
    ),
    (
        "outbound through the trunk: busy, failed, answered",
        OUTBOUND,
        False,
        [
            expect(
                date_time="2026-01-13 10:00:00", src="101", dst="998901112233", duration=4,
                conversation=0, type={"number": 2, "name": "Outgoing"},
                status={"number": 2, "name": "Not answered"}, disposition="BUSY",
                answered_at=None, ended_at="2026-01-13 10:00:04", pbx_call_id="1768280400.30",
                recording=None,
            ),
            expect(
                date_time="2026-01-13 10:05:00", src="102", dst="998901112244", duration=1,
                conversation=0, type={"number": 2, "name": "Outgoing"},
                status={"number": 2, "name": "Not answered"}, disposition="FAILED",
                answered_at=None, ended_at="2026-01-13 10:05:01", pbx_call_id="1768280700.32",
                recording=None,
            ),
            expect(
                date_time="2026-01-13 10:10:00", src="103", dst="998901112255", duration=127,
                conversation=120, type={"number": 2, "name": "Outgoing"},
                answered_at="2026-01-13 10:10:07", ended_at="2026-01-13 10:12:07",
                pbx_call_id="1768281000.34", recording=None,
            ),
        ],
    ),
    (
        "internal",
        INTERNAL,
        False,
        [
            expect(
                date_time="2026-01-13 10:00:00", src="101", dst="102", external_number=None,
                duration=33, conversation=30, type={"number": 3, "name": "Internal"},
                answered_at="2026-01-13 10:00:03", ended_at="2026-01-13 10:00:33",
                pbx_call_id="1768280400.40", recording=None,
            )
        ],
    ),
    (
        "attended transfer",
        ATTENDED_TRANSFER,
        False,
        [
            expect(
                # 10:00:04 to 10:03:00; the consultation (10:00:35-10:01:00) overlaps it
                date_time="2026-01-13 10:00:00", src="998901234500", dst="101", duration=180,
                conversation=176, answered_at="2026-01-13 10:00:04",
                ended_at="2026-01-13 10:03:00", pbx_call_id="1768280400.50", legs=3,
                recording=None,
            )
        ],
    ),
    (
        "blind transfer",
        BLIND_TRANSFER,
        False,
        [
            expect(
                date_time="2026-01-13 10:00:00", src="998901234501", dst="101", duration=85,
                conversation=78, answered_at="2026-01-13 10:00:02",
                ended_at="2026-01-13 10:01:25", pbx_call_id="1768280400.60", legs=2,
                recording=None,
            )
        ],
    ),
    (
        "legs straddle midnight",
        ACROSS_MIDNIGHT,
        False,
        [
            expect(
                date_time="2026-01-13 23:59:50", src="998901234502", dst="101", duration=80,
                conversation=75, answered_at="2026-01-13 23:59:55",
                ended_at="2026-01-14 00:01:10", pbx_call_id="1768330790.70",
                recording=None,
            )
        ],
    ),
    (
        "18 columns in UTC (usegmtime), grouped by uniqueid",
        GMT_18_COLUMNS,
        True,
        [
            expect(
                date_time="2026-01-13 10:00:00", src="998935550003", dst="102", duration=37,
                conversation=30, answered_at="2026-01-13 10:00:07",
                ended_at="2026-01-13 10:00:37", pbx_call_id="1768280400.80", legs=2,
                recording=None,
            )
        ],
    ),
    (
        "21 columns with systemname- uniqueids",
        SYSTEMNAME_21_COLUMNS,
        False,
        [
            expect(
                date_time="2026-01-13 10:00:00", src="998901234503", dst="104", duration=11,
                conversation=10, answered_at="2026-01-13 10:00:01",
                ended_at="2026-01-13 10:00:11", pbx_call_id="pbx1-1768280400.90",
                recording=None,
            )
        ],
    ),
    (
        "FreePBX recordingfile in userfield",
        FREEPBX_RECORDINGFILE,
        False,
        [
            expect(
                date_time="2026-01-13 10:00:00", src="998901234504", dst="105", duration=11,
                conversation=10, answered_at="2026-01-13 10:00:01",
                ended_at="2026-01-13 10:00:11", pbx_call_id="1768280400.100",
                recording="2026/01/13/in-781130590-998901234504-20260113-100000-1768280400.100.wav",
            )
        ],
    ),
]  # fmt: skip


@pytest.fixture
def pbx_tenant(make_tenant: Callable[..., Tenant], db: Engine) -> Tenant:
    tenant = make_tenant()
    with db.begin() as conn:
        accounts.set_pbx_config(conn, tenant.account_id, CONFIG)
    return tenant


def write(tmp_path: Path, text: str | bytes, name: str = "Master.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def stored_calls(client: TestClient, tenant: Tenant) -> list[dict[str, Any]]:
    listed = client.get(URL, params={"per_page": 300}, headers=tenant.headers).json()["data"]
    shown = [
        client.get(f"{URL}/{item['id']}", headers=tenant.headers).json()["data"] for item in listed
    ]
    return shown


def comparable(call: dict[str, Any]) -> dict[str, Any]:
    """The show resource with the recording URL reduced to its path, id and call_id dropped, and
    the call's detail (caller name, wait, route: test_the_route_of_a_call) left out."""
    dropped = ("id", "call_id", "recorded_file_url", "caller_name", "wait", "route")
    out = {k: v for k, v in call.items() if k not in dropped}
    url = call["recorded_file_url"]
    out["recording"] = url.split("/storage/monitor/", 1)[1].split("?", 1)[0] if url else None
    return out


@pytest.mark.parametrize(
    ("name", "lines", "gmt", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS]
)
def test_scenario(
    name: str,
    lines: str,
    gmt: bool,
    expected: list[dict[str, Any]],
    tmp_path: Path,
    db: Engine,
    client: TestClient,
    pbx_tenant: Tenant,
) -> None:
    path = write(tmp_path, lines)
    report = import_paths(db, pbx_tenant.account_id, [str(path)], gmt=gmt)
    assert report.bad == []
    assert report.outcome.created == len(expected)
    calls = stored_calls(client, pbx_tenant)
    assert [comparable(c) for c in calls] == expected
    for call in calls:
        assert call["call_id"] == derive_call_id(pbx_tenant.account_id, call["pbx_call_id"])


def test_the_route_of_a_call(
    tmp_path: Path, db: Engine, client: TestClient, pbx_tenant: Tenant
) -> None:
    """The detail of a call: the caller id's name, the wait before the answer, and every leg in
    the merge's order (a ring group's three phones, the third answering after 12 s)."""
    path = write(tmp_path, RING_GROUP_THIRD_ANSWERS + OUTBOUND)
    import_paths(db, pbx_tenant.account_id, [str(path)], gmt=False)
    by_pbx_id = {c["pbx_call_id"]: c for c in stored_calls(client, pbx_tenant)}
    ring_group = by_pbx_id["1768280400.10"]
    assert (ring_group["caller_name"], ring_group["wait"]) == (None, 12)  # the name is the number

    def leg(phone: str, answered: str | None, ended: str, ring: int, talk: int) -> dict[str, Any]:
        return {
            "src": "998935550001", "dst": "600", "channel": "PJSIP/uztelecom-00000010",
            "dstchannel": f"PJSIP/{phone}", "app": "Dial", "started_at": "2026-01-13 10:00:00",
            "answered_at": answered, "ended_at": ended, "ring": ring, "talk": talk,
            "disposition": "ANSWERED" if answered else "NO ANSWER",
        }  # fmt: skip

    assert ring_group["route"] == [
        leg("101-00000011", None, "2026-01-13 10:00:12", 12, 0),
        leg("102-00000012", None, "2026-01-13 10:00:12", 12, 0),
        leg("103-00000013", "2026-01-13 10:00:12", "2026-01-13 10:00:52", 12, 40),
    ]
    busy, answered = by_pbx_id["1768280400.30"], by_pbx_id["1768281000.34"]
    assert (busy["caller_name"], busy["wait"], len(busy["route"])) == ("Ali", None, 1)
    assert (answered["caller_name"], answered["wait"]) == ("Sami", 7)
    assert answered["route"][0]["ring"] == 7 and answered["route"][0]["talk"] == 120
    # The call's page shows the same route.
    web_session(client, pbx_tenant.email)
    page = client.get(f"/calls/{ring_group['id']}").text
    assert "<h2>Route</h2>" in page and page.count("PJSIP/uztelecom-00000010") == 3
    assert "<td>PJSIP/103-00000013</td>" in page and "(after 0:12)" in page


def test_every_scenario_in_one_file_in_any_order(
    tmp_path: Path, db: Engine, client: TestClient, pbx_tenant: Tenant
) -> None:
    """Legs of different calls interleaved, a call's legs out of order: the same calls result."""
    local = [line for _, text, gmt, _ in SCENARIOS if not gmt for line in text.splitlines()]
    shuffled = local[::-1]
    path = write(tmp_path, "\n".join(shuffled) + "\n")
    report = import_paths(db, pbx_tenant.account_id, [str(path)], gmt=False)
    expected = [call for _, _, gmt, calls in SCENARIOS if not gmt for call in calls]
    assert report.outcome.created == len(expected)
    got = sorted(
        (comparable(c) for c in stored_calls(client, pbx_tenant)), key=lambda c: c["pbx_call_id"]
    )
    assert got == sorted(expected, key=lambda c: c["pbx_call_id"])


class Interrupted(Exception):
    """Stands for Ctrl-C during an import."""


@pytest.mark.parametrize("child", [False, True], ids=["threads", "child process"])
def test_small_batches_and_an_interruption_give_the_same_calls(
    child: bool,
    tmp_path: Path,
    db: Engine,
    client: TestClient,
    make_tenant: Callable[..., Tenant],
) -> None:
    """Every scenario's legs six times over (other uniqueids), interleaved, read two legs per
    transaction so that calls straddle batches, and stopped after the third batch, then
    resumed: exactly the calls and routes of the same file read in one batch (on PostgreSQL
    that one goes through the staging tables, bulk.MIN_ROWS legs and more). The small batches
    are parsed and merged on a thread, or in a child process as a big file's are."""
    scenarios = [line for _, text, gmt, _ in SCENARIOS if not gmt for line in text.splitlines()]
    local = [line.replace("17682", f"1768{2 + n}") for n in range(6) for line in scenarios]
    assert len(local) >= bulk.MIN_ROWS
    path = write(tmp_path, "\n".join(local[::-1]) + "\n")
    whole, batched = make_tenant(), make_tenant()
    with db.begin() as conn:
        for tenant in (whole, batched):
            accounts.set_pbx_config(conn, tenant.account_id, CONFIG)
    report = import_paths(db, whole.account_id, [str(path)], gmt=False)

    seen: list[int] = []

    def stop_after_three(_name: str, _size: int | None) -> Callable[[int, int], None]:
        def progress(_done: int, lines: int) -> None:
            seen.append(lines)
            if len(seen) == 3:
                raise Interrupted

        return progress

    with pytest.raises(Interrupted):
        import_paths(
            db, batched.account_id, [str(path)], gmt=False, batch_lines=2,
            progress_for=stop_after_three, child=child,
        )  # fmt: skip
    assert seen == [2, 4, 6]
    resumed = import_paths(
        db, batched.account_id, [str(path)], gmt=False, batch_lines=2, child=child
    )
    assert resumed.lines_skipped == 6
    assert resumed.lines_read + 6 == report.lines_read == len(local)

    def calls_of(tenant: Tenant) -> list[dict[str, Any]]:
        shown = [
            {**comparable(call), "route": call["route"], "wait": call["wait"]}
            for call in stored_calls(client, tenant)
        ]
        return sorted(shown, key=lambda call: call["pbx_call_id"])

    assert calls_of(batched) == calls_of(whole)
    assert len(calls_of(whole)) == report.outcome.created


def test_upgrading_keeps_the_legs_and_their_call_key(tmp_path: Path) -> None:
    """Migration 0014 rebuilds SQLite's call_legs without its foreign key to accounts: the legs,
    their unique key (a re-import recognises them) and the cascade from their call stay."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    migrate.upgrade(engine)
    with engine.begin() as conn:
        account = accounts.create_account(conn, "Old")
        accounts.set_pbx_config(conn, account, CONFIG)
    path = write(tmp_path, RING_GROUP_THIRD_ANSWERS + OUTBOUND)
    assert import_paths(engine, account, [str(path)], gmt=False).outcome.created == 4
    config = Config()  # back to 0013 (today's code imports into today's schema only)
    config.set_main_option("script_location", "callhistory:migrations")
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0013")
    with engine.begin() as conn:
        keys = conn.execute(text("PRAGMA foreign_key_list(call_legs)")).all()
        assert sorted(k.table for k in keys) == ["accounts", "calls"]
    migrate.upgrade(engine)
    with engine.begin() as conn:
        keys = conn.execute(text("PRAGMA foreign_key_list(call_legs)")).all()
        assert [(k.table, k.on_delete) for k in keys] == [("calls", "CASCADE")]
        assert conn.execute(text("SELECT count(*) FROM call_legs")).scalar() == 6
    again = import_paths(engine, account, [str(path)], gmt=False, resume=False)
    assert (again.outcome.duplicate_legs, again.outcome.created) == (6, 0)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM calls WHERE pbx_call_id = '1768280400.10'"))
        assert conn.execute(text("SELECT count(*) FROM call_legs")).scalar() == 3
    engine.dispose()


def test_an_import_gives_its_connection_back_with_the_page_cache_it_had(tmp_path: Path) -> None:
    """A bulk import writes through a SQLite connection with a bigger page cache; the pool gets
    the connection back with the cache it had, after an import stopped half-way too."""
    engine = make_engine(f"sqlite:///{tmp_path / 'cache.sqlite3'}")
    migrate.upgrade(engine)
    with engine.begin() as conn:
        account = accounts.create_account(conn, "Cache")
        accounts.set_pbx_config(conn, account, CONFIG)
        default = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
    path = write(tmp_path, RING_GROUP_THIRD_ANSWERS + OUTBOUND)

    def stop_after_one(_name: str, _size: int | None) -> Callable[[int, int], None]:
        def progress(_done: int, _lines: int) -> None:
            raise Interrupted

        return progress

    with pytest.raises(Interrupted):
        import_paths(
            engine, account, [str(path)], gmt=False, batch_lines=2, progress_for=stop_after_one
        )
    report = import_paths(engine, account, [str(path)], gmt=False, batch_lines=2)
    # The first batch (two legs of the ring group) was committed before the stop.
    assert (report.lines_skipped, report.outcome.updated) == (2, 1)
    pooled = [engine.connect() for _ in range(engine.pool.checkedin())]  # type: ignore[attr-defined]
    sizes = [conn.exec_driver_sql("PRAGMA cache_size").scalar_one() for conn in pooled]
    for conn in pooled:
        conn.close()
    assert pooled and sizes == [default] * len(pooled)
    engine.dispose()


def test_reimport_and_a_file_that_grew(
    tmp_path: Path, db: Engine, client: TestClient, pbx_tenant: Tenant
) -> None:
    first_two, third = (
        RING_GROUP_THIRD_ANSWERS.splitlines(keepends=True)[:2],
        RING_GROUP_THIRD_ANSWERS.splitlines(keepends=True)[2],
    )
    path = write(tmp_path, INBOUND_ANSWERED + "".join(first_two))
    report = import_paths(db, pbx_tenant.account_id, [str(path)], gmt=False)
    assert (report.outcome.created, report.lines_read) == (2, 3)
    ring = next(c for c in stored_calls(client, pbx_tenant) if c["legs"] == 2)
    assert (ring["status"]["number"], ring["dst"]) == (2, "600")

    again = import_paths(db, pbx_tenant.account_id, [str(path)], gmt=False)
    assert (again.lines_read, again.lines_skipped, again.outcome.created) == (0, 3, 0)

    with path.open("a") as f:  # Asterisk appends the answered leg
        f.write(third)
    grown = import_paths(db, pbx_tenant.account_id, [str(path)], gmt=False)
    assert (grown.lines_read, grown.outcome.created, grown.outcome.updated) == (1, 0, 1)
    calls = stored_calls(client, pbx_tenant)
    assert len(calls) == 2
    ring = next(c for c in calls if c["pbx_call_id"] == "1768280400.10")
    assert comparable(ring) == SCENARIOS[1][3][0]
    body = client.get(URL, params={"filter[status]": "1"}, headers=pbx_tenant.headers).json()
    assert (
        body["meta"]["total"] == 2
    )  # the counters followed the call from not answered to answered

    # Reading the whole file again from the start changes nothing.
    full = import_paths(db, pbx_tenant.account_id, [str(path)], gmt=False, resume=False)
    assert (full.lines_read, full.outcome.duplicate_legs, full.outcome.created) == (4, 4, 0)


def test_truncated_last_line_waits_for_the_rest(
    tmp_path: Path, db: Engine, client: TestClient, pbx_tenant: Tenant
) -> None:
    line = INTERNAL.rstrip("\n")
    path = write(tmp_path, INBOUND_ANSWERED + line[:70])
    report = import_paths(db, pbx_tenant.account_id, [str(path)], gmt=False)
    assert (report.lines_read, report.outcome.created, report.bad) == (1, 1, [])
    assert report.notes == [f"{path}:2: incomplete last line left for the next import"]
    with path.open("a") as f:
        f.write(line[70:] + "\n")
    report = import_paths(db, pbx_tenant.account_id, [str(path)], gmt=False)
    assert (report.lines_read, report.outcome.created, report.notes) == (1, 1, [])
    assert len(stored_calls(client, pbx_tenant)) == 2


def test_windows_1251_caller_name(
    tmp_path: Path, db: Engine, client: TestClient, pbx_tenant: Tenant
) -> None:
    line = INBOUND_ANSWERED.replace(
        '"""998901234567"" <998901234567>"', '"""Иван Петров"" <998901234567>"'
    )
    path = write(tmp_path, line.encode("cp1251"))
    report = import_paths(db, pbx_tenant.account_id, [str(path)], gmt=False)
    assert (report.bad, report.outcome.created) == ([], 1)
    assert comparable(stored_calls(client, pbx_tenant)[0]) == SCENARIOS[0][3][0]


def test_mixed_layouts_in_one_file(
    tmp_path: Path, db: Engine, client: TestClient, pbx_tenant: Tenant
) -> None:
    lines = [
        # 16 columns: no uniqueid at all
        '"","101","102","from-internal","""Ali"" <101>","PJSIP/101-000000a0","PJSIP/102-000000a1","Dial","PJSIP/102","2026-01-13 09:00:00","2026-01-13 09:00:02","2026-01-13 09:00:12",12,10,"ANSWERED","DOCUMENTATION"',
        # 17 columns: loguniqueid only
        '"","101","103","from-internal","""Ali"" <101>","PJSIP/101-000000a2","PJSIP/103-000000a3","Dial","PJSIP/103","2026-01-13 09:01:00",,"2026-01-13 09:01:05",5,0,"NO ANSWER","DOCUMENTATION","1768276860.162"',
        # 17 columns: loguserfield only
        '"","101","104","from-internal","""Ali"" <101>","PJSIP/101-000000a4","PJSIP/104-000000a5","Dial","PJSIP/104","2026-01-13 09:02:00",,"2026-01-13 09:02:05",5,0,"BUSY","DOCUMENTATION","note"',
        # 19 columns: newcdrcolumns without uniqueid/userfield
        '"","101","105","from-internal","""Ali"" <101>","PJSIP/101-000000a6","PJSIP/105-000000a7","Dial","PJSIP/105","2026-01-13 09:03:00",,"2026-01-13 09:03:05",5,0,"CONGESTION","DOCUMENTATION","","1768276980.166",166',
    ]
    path = write(tmp_path, "\n".join(lines) + "\n")
    report = import_paths(db, pbx_tenant.account_id, [str(path)], gmt=False)
    assert (report.bad, report.outcome.created) == ([], 4)
    got = [(c["dst"], c["disposition"], c["pbx_call_id"]) for c in stored_calls(client, pbx_tenant)]
    assert got == [
        ("102", "ANSWERED", "PJSIP/101-000000a0@20260113040000"),
        ("103", "NO ANSWER", "1768276860.162"),
        ("104", "BUSY", "PJSIP/101-000000a4@20260113040200"),
        ("105", "CONGESTION", "1768276980.166"),
    ]


BAD_LINES = [
    ('"","101","102"', "3 columns; a Master.csv line has 16 to 21"),
    (INTERNAL.strip().replace(",33,30,", ",3x,30,"), "duration '3x' is not a whole number of seconds"),
    (INTERNAL.strip().replace('"2026-01-13 10:00:00"', '"2026-13-13 10:00:00"'), "start time '2026-13-13 10:00:00' is not a real date"),
    (INTERNAL.strip().replace('"2026-01-13 10:00:33"', '"yesterday"'), "end time 'yesterday' is not YYYY-MM-DD HH:MM:SS"),
    (INTERNAL.strip().replace('"ANSWERED"', '"HUNG"'), "unknown disposition 'HUNG'"),
    (INTERNAL.strip().replace('"Dial"', '"Di"al"'), "not valid CSV (',' expected after '\"')"),
    (INTERNAL.strip().replace('"2026-01-13 10:00:33"', '"2026-01-13 09:00:33"'), "end time is before start time"),
]  # fmt: skip


def test_bad_lines_are_reported_and_the_rest_imported(
    tmp_path: Path, db: Engine, client: TestClient, pbx_tenant: Tenant
) -> None:
    text = INBOUND_ANSWERED + "".join(line + "\n" for line, _ in BAD_LINES) + OUTBOUND
    path = write(tmp_path, text)
    report = import_paths(db, pbx_tenant.account_id, [str(path)], gmt=False)
    assert [(b.line, b.reason) for b in report.bad] == [
        (n + 2, reason) for n, (_, reason) in enumerate(BAD_LINES)
    ]
    assert report.outcome.created == 4


def test_cli_import_with_rejects_and_stdin(
    tmp_path: Path,
    db: Engine,
    client: TestClient,
    make_tenant: Callable[..., Tenant],
    data_dir: Path,
) -> None:
    tenant = make_tenant()
    env = {"DATA_DIR": str(data_dir), "DATABASE_URL": os.environ.get("DATABASE_URL", "")}
    runner = CliRunner()
    path = write(tmp_path, INBOUND_ANSWERED + BAD_LINES[0][0] + "\n")
    args = ["import", "asterisk-csv", str(path), "--account", str(tenant.account_id)]
    config = ["--trunk", "PJSIP/uztelecom-*", "--did", "781130590"]
    result = runner.invoke(app, args + config, env=env)
    assert result.exit_code == 3, result.output
    assert (
        "lines read: 2; calls created: 1, updated: 0; legs already stored: 0; bad lines: 1"
        in result.output
    )
    assert f"rejected: {path}:2: 3 columns; a Master.csv line has 16 to 21" in result.output
    shown = runner.invoke(app, ["accounts", "show", str(tenant.account_id)], env=env)
    assert '"781130590"' in shown.output and '"PJSIP/uztelecom-*"' in shown.output

    result = runner.invoke(
        app,
        ["import", "asterisk-csv", "-", "--account", str(tenant.account_id)],
        input=OUTBOUND,
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "calls created: 3" in result.output
    assert client.get(URL, headers=tenant.headers).json()["meta"]["total"] == 4

    for bad_args, message in (
        (["import", "asterisk-csv", str(tmp_path / "nope.csv"), "--account", "1"], "no such file"),
        (["import", "asterisk-csv", str(path), "--account", "999"], "No account with id 999"),
        (
            ["accounts", "configure", str(tenant.account_id), "--extensions", "("],
            "not a valid regular expression",
        ),
    ):
        result = runner.invoke(app, bad_args, env=env)
        assert result.exit_code == 1 and message in result.output, result.output


def test_an_error_in_the_reading_process_reaches_the_import(
    tmp_path: Path, db: Engine, pbx_tenant: Tenant
) -> None:
    """A big file is read, parsed and merged by a child process: what fails there (here the
    file, gone before the child opens it) is raised in the importing process, the child's
    traceback attached, and the child is gone."""
    with db.connect() as conn:
        layout = Layout.load(conn, pbx_tenant.account_id, None)
    reading = asterisk_csv._Reading(
        "gone.csv", None, resumable=True, offset=0, last_line=0, size=10
    )
    job = asterisk_csv._Job(
        url_of(db), pbx_tenant.account_id, layout, str(tmp_path / "gone.csv"), reading
    )
    committed = asterisk_csv._Committed()
    with pytest.raises(FileNotFoundError) as raised:
        list(asterisk_csv._from_child(job, committed))
    assert any("in the process reading gone.csv" in note for note in raised.value.__notes__)
    assert multiprocessing.active_children() == []


def test_a_big_batch_stores_times_on_sqlite_as_sqlalchemy_writes_them() -> None:
    """A big batch on SQLite formats its times in C, not through SQLAlchemy's processor: the
    stored text must be the processor's to the character (filters compare it as text)."""
    dialect = sqlite.dialect()
    ours = bulk._sqlite_processor(dialect, DateTime())
    theirs = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None and theirs is not None
    values = [
        datetime(2026, 1, 13, 10, 0, 0), datetime(2026, 3, 29, 1, 59, 59, 999_999),
        datetime(1, 1, 1), datetime(999, 12, 31, 23, 0, 0, 5), datetime(9999, 12, 31, 23, 59, 59),
        datetime(2026, 1, 13, 10, 0, tzinfo=UTC),
        datetime(2026, 1, 13, 10, 0, tzinfo=timezone(timedelta(hours=5))),
        date(2026, 1, 2), None,
    ]  # fmt: skip
    for value in values:
        assert ours(value) == theirs(value), value
