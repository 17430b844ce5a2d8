"""Real calls through a real Asterisk, placed with SIPp, and what callhistory stores of them.

Each case is a call whose truth we know because we placed it: who called whom, who answered,
how long they talked. The test PBX (tests/pbx/) logs it as Asterisk does — to Master.csv and as
AMI `Cdr` events — and both paths must store the same call, and the true one: the live
`callhistory ami` feed against the real manager interface, and `import asterisk-csv` of the real
Master.csv. The PBX's clock is UTC and the account's zone Asia/Tashkent, as on many real servers:
both paths must notice. Answered calls link their MixMonitor WAV, served through its signed URL;
a call that never bridged links nothing, although MixMonitor left a header-only file.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, make_url, select

from callhistory import accounts
from callhistory.classify import PbxConfig
from callhistory.config import Settings
from callhistory.ingest.ami import AmiFeed, AmiSettings, FeedStats
from callhistory.ingest.asterisk_csv import import_paths
from callhistory.ingest.cdr import parse_csv_line
from callhistory.ingest.pbx import Layout
from callhistory.ingest.spool import Spool
from callhistory.schema import call_legs, make_engine
from tests import realpbx
from tests.conftest import Tenant
from tests.tcpproxy import TcpProxy
from tests.test_asterisk_csv import stored_calls

pytestmark = pytest.mark.pbx
_missing = realpbx.missing()
if _missing and os.environ.get("CI"):
    pytest.fail(f"CI must run the real-PBX tests: {_missing}", pytrace=False)
if _missing:
    pytest.skip(_missing, allow_module_level=True)

OUT = realpbx.OUTSIDE_CALLER
DIDS = ("781130590", "781130591", "781130592", "781130593")
LAYOUT = PbxConfig(trunks=("SIP/operator-*",), dids=DIDS)


@dataclass(frozen=True)
class Case:
    name: str
    phones: tuple[tuple[str, str, int], ...]
    caller: str
    number: str
    how: str
    ms: int
    truth: dict[str, Any]
    talk: int = 0  # seconds of conversation (±1)
    recorded: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def truth(
    type_: str, status: str, disposition: str, src: str, dst: str, ext: str | None
) -> dict[str, Any]:
    return {
        "type": type_, "status": status, "disposition": disposition, "src": src, "dst": dst,
        "external_number": ext,
    }  # fmt: skip


ANSWERED = ("Answered", "ANSWERED")
CASES = [
    Case("internal, answered", (("102", "answer", 1000),), "101", "102", "talk", 2000,
         truth("Internal", *ANSWERED, "101", "102", None), talk=2, recorded=True),
    Case("internal, cancelled while ringing", (("102", "ring", 0),), "101", "102", "cancel", 2000,
         truth("Internal", "Not answered", "NO ANSWER", "101", "102", None)),
    Case("internal, busy", (("102", "busy", 0),), "101", "102", "refused", 0,
         truth("Internal", "Not answered", "BUSY", "101", "102", None)),
    Case("outbound, answered", (("trunk", "answer", 1000),), "101", "998901112233", "talk", 2000,
         truth("Outgoing", *ANSWERED, "101", "998901112233", "781130590"), talk=2, recorded=True),
    Case("outbound, busy", (("trunk", "busy", 0),), "102", "998901112244", "refused", 0,
         truth("Outgoing", "Not answered", "BUSY", "102", "998901112244", "781130590")),
    Case("outbound, failed (the operator answers 503)", (("trunk", "unavailable", 0),), "102",
         "998901112277", "refused", 0,
         truth("Outgoing", "Not answered", "CONGESTION", "102", "998901112277", "781130590")),
    Case("outbound, no answer", (("trunk", "ring", 0),), "103", "998901112255", "cancel", 2000,
         truth("Outgoing", "Not answered", "NO ANSWER", "103", "998901112255", "781130590")),
    Case("inbound ring group, the second phone answers",
         (("101", "ring", 0), ("102", "answer", 1500)), "trunk", "781130590", "talk", 2000,
         truth("Incoming", *ANSWERED, OUT, "102", "781130590"), talk=2, recorded=True),
    Case("inbound ring group, nobody: announcement, then Hangup()",
         (("101", "ring", 0), ("102", "ring", 0)), "trunk", "781130590", "hear_hangup", 0,
         truth("Incoming", "Not answered", "NO ANSWER", OUT, "781130590", "781130590")),
    Case("feature code *98", (), "101", "*98", "hear_hangup", 0,
         truth("Internal", "Not answered", "NO ANSWER", "101", "*98", None)),
    Case("FreePBX-style ring group through Local channels",
         (("101", "ring", 0), ("103", "answer", 1000)), "trunk", "781130591", "talk", 2000,
         truth("Incoming", *ANSWERED, OUT, "103", "781130591"), talk=2, recorded=True),
    Case("queue, answered", (("102", "answer", 1000), ("103", "ring", 0)), "trunk", "781130592",
         "talk", 3000, truth("Incoming", *ANSWERED, OUT, "102", "781130592"), talk=2,
         recorded=True),
    Case("queue, timed out", (("102", "ring", 0), ("103", "ring", 0)), "trunk", "781130592",
         "hear_hangup", 0, truth("Incoming", "Not answered", "NO ANSWER", OUT, "781130592",
                                 "781130592")),
    Case("failover: 101 does not answer, 103 does", (("101", "ring", 0), ("103", "answer", 1000)),
         "trunk", "781130593", "talk", 2000, truth("Incoming", *ANSWERED, OUT, "103", "781130593"),
         talk=2, recorded=True),
    Case("blind transfer: 102 answers, sends the caller to 103",
         (("102", "transfer", 1000), ("103", "answer", 1000)), "101", "102", "talk", 6000,
         truth("Internal", *ANSWERED, "101", "102", None), talk=5, recorded=True),
    Case("call file: ring 101, then 102", (("101", "answer", 500), ("102", "talk", 1000)),
         "101", "102", "originate", 0, truth("Internal", *ANSWERED, "101", "102", None),
         talk=3, recorded=True),
    Case("call file: ring 101, then out", (("101", "answer", 500), ("trunk", "talk", 1000)),
         "101", "998901112266", "originate", 0,
         truth("Outgoing", *ANSWERED, "101", "998901112266", "781130590"), talk=3,
         recorded=True),
]  # fmt: skip


class LiveFeed:
    """`callhistory ami`'s feed, running in a thread against the real manager interface."""

    def __init__(self, feed: AmiFeed):
        self.feed = feed
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.stats: FeedStats | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> FeedStats:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            return await self.feed.run(self.stop_event)

        self.stats = asyncio.run(main())

    def start(self) -> None:
        self.thread.start()
        wait_until(lambda: self.feed.stats.connections >= 1, "the feed to log in")

    def stop(self) -> None:
        assert self.loop is not None and self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def legs_stored(db: Engine, account_id: int) -> int:
    with db.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(call_legs)
                .where(call_legs.c.account_id == account_id)
            ).scalar_one()
        )


def observed(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": call["type"]["name"],
        "status": call["status"]["name"],
        "disposition": call["disposition"],
        "src": call["src"],
        "dst": call["dst"],
        "external_number": call["external_number"],
    }


def comparable(call: dict[str, Any]) -> dict[str, Any]:
    """Everything but what differs by account (ids, the signed URL)."""
    url = call["recorded_file_url"]
    out = {k: v for k, v in call.items() if k not in ("id", "call_id", "recorded_file_url")}
    out["recording"] = url.split("/storage/monitor/", 1)[1].split("?", 1)[0] if url else None
    return out


def test_real_calls_through_both_paths(
    tmp_path: Path,
    db: Engine,
    make_tenant: Callable[..., Tenant],
    client: TestClient,
    settings: Settings,
) -> None:
    csv_tenant, ami_tenant = make_tenant(), make_tenant()
    lines: dict[str, list[str]] = {}
    with realpbx.running_pbx(tmp_path / "pbx") as pbx:
        with db.begin() as conn:
            for tenant in (csv_tenant, ami_tenant):
                accounts.set_pbx_config(conn, tenant.account_id, LAYOUT)
                accounts.set_recordings_dir(
                    conn, settings.recordings_root, tenant.account_id, pbx.monitor
                )
            layout = Layout.load(conn, ami_tenant.account_id, settings.recordings_root)
        feed = LiveFeed(
            AmiFeed(
                db, ami_tenant.account_id, layout,
                AmiSettings("127.0.0.1", pbx.ports["ami"], "callhistory", "test-secret"),
                Spool(tmp_path / "spool.sqlite3"),
            )
        )  # fmt: skip
        feed.start()
        try:
            for case in CASES:
                before = len(pbx.cdr_lines())
                with pbx.phones(*case.phones):
                    if case.how == "originate":
                        pbx.originate(case.caller, case.number)
                    else:
                        pbx.dial(case.caller, case.number, case.how, case.ms)
                pbx.idle()
                lines[case.name] = pbx.cdr_lines()[before:]
            total = len(pbx.cdr_lines())
            wait_until(lambda: legs_stored(db, ami_tenant.account_id) == total, "the AMI legs")
        finally:
            feed.stop()
        report = import_paths(
            db, csv_tenant.account_id, [str(pbx.master_csv)],
            recordings_base=settings.recordings_root,
        )  # fmt: skip
        assert report.bad == []
        assert report.notes[0].endswith(
            "(a UTC server clock or cdr.conf usegmtime=yes; --local-time forces local)"
        )

        by_key = {
            tenant.account_id: {c["pbx_call_id"]: c for c in stored_calls(client, tenant)}
            for tenant in (csv_tenant, ami_tenant)
        }
        failures = []
        for case in CASES:
            keys = {parse_csv_line(line, None).call_key for line in lines[case.name]}
            stored = (by_key[csv_tenant.account_id], by_key[ami_tenant.account_id])
            problems = check(case, keys, *stored, client, lines[case.name])
            failures += [f"{case.name}: {p}" for p in problems]
        assert failures == []
        assert len(by_key[csv_tenant.account_id]) == len(CASES)


def check(
    case: Case,
    keys: set[str],
    csv_calls: dict[str, dict[str, Any]],
    ami_calls: dict[str, dict[str, Any]],
    client: TestClient,
    lines: list[str],
) -> list[str]:
    """What is wrong with the call a case made, as each path stored it."""
    if len(keys) != 1:
        return [f"{len(keys)} calls (linkedids {sorted(keys)}) from {len(lines)} CDRs"]
    (key,) = keys
    csv_call, ami_call = csv_calls.get(key), ami_calls.get(key)
    if csv_call is None or ami_call is None:
        return [f"not stored (csv: {csv_call is not None}, ami: {ami_call is not None})"]
    problems = []
    if observed(csv_call) != case.truth:
        problems.append(f"stored {observed(csv_call)}, the truth is {case.truth}; CDRs: {lines}")
    if comparable(ami_call) != comparable(csv_call):
        problems.append(f"AMI {comparable(ami_call)} != CSV {comparable(csv_call)}")
    if abs(csv_call["conversation"] - case.talk) > 1:
        problems.append(f"conversation {csv_call['conversation']} s, talked {case.talk} s")
    if csv_call["legs"] != len(lines):
        problems.append(f"{csv_call['legs']} legs, Asterisk wrote {len(lines)}")
    url = csv_call["recorded_file_url"]
    if case.recorded:
        if url is None:
            problems.append("no recording linked")
        else:
            response = client.get(url)
            if response.status_code != 200 or response.content[:4] != b"RIFF":
                problems.append(f"recording: {response.status_code} {response.content[:20]!r}")
            elif len(response.content) < 8000:  # 44 bytes of header and a second of audio
                problems.append(f"recording of {len(response.content)} bytes holds no audio")
    elif url is not None:
        problems.append(f"a recording is linked to a call that never bridged: {url}")
    return problems


class Outage:
    """The database going away while calls continue: PostgreSQL's link cut at a TCP proxy the
    feed connects through; SQLite locked exclusively by another process's transaction."""

    def __init__(self, db: Engine):
        self.db = db
        self.proxy: TcpProxy | None = None
        self.lock: sqlite3.Connection | None = None
        if db.dialect.name == "postgresql":
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
            self.thread.start()
            self.proxy = TcpProxy(db.url.host or "127.0.0.1", db.url.port or 5432)
            asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)

    def engine(self) -> Engine:
        """The engine the feed writes through."""
        if self.proxy is None:
            return self.db
        url = make_url(os.environ["DATABASE_URL"]).set(
            drivername="postgresql+psycopg", host="127.0.0.1", port=self.proxy.port
        )
        return make_engine(url.render_as_string(hide_password=False))

    def begin(self) -> None:
        if self.proxy is not None:
            self.loop.call_soon_threadsafe(self.proxy.cut)
        else:
            self.lock = sqlite3.connect(self.db.url.database or "", timeout=5)
            self.lock.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        if self.proxy is not None:
            self.loop.call_soon_threadsafe(self.proxy.restore)
        elif self.lock is not None:
            self.lock.rollback()
            self.lock.close()

    def close(self) -> None:
        if self.proxy is not None:
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def test_the_feed_survives_a_pbx_restart_and_a_database_outage(
    tmp_path: Path,
    db: Engine,
    make_tenant: Callable[..., Tenant],
    client: TestClient,
    settings: Settings,
) -> None:
    """A call; Asterisk restarts (the feed reconnects); two calls while the database is down
    (their events wait in the spool); the database returns: every call stored once, whole."""
    tenant = make_tenant()
    outage = Outage(db)
    engine = outage.engine()
    with realpbx.running_pbx(tmp_path / "pbx") as pbx:
        with db.begin() as conn:
            accounts.set_pbx_config(conn, tenant.account_id, LAYOUT)
            layout = Layout.load(conn, tenant.account_id, None)
        ami = AmiSettings(
            "127.0.0.1", pbx.ports["ami"], "callhistory", "test-secret", backoff_max=2.0,
            db_retry=0.5,
        )  # fmt: skip
        feed = LiveFeed(AmiFeed(engine, tenant.account_id, layout, ami, Spool(tmp_path / "s")))
        feed.start()
        try:
            with pbx.phones(("102", "answer", 500)):
                pbx.dial("101", "102", "talk", 2000)
            wait_until(lambda: legs_stored(db, tenant.account_id) == 1, "the first call")
            pbx.stop()
            pbx.start()
            wait_until(lambda: feed.feed.stats.connections >= 2, "the feed to reconnect")
            outage.begin()
            try:
                with pbx.phones(("trunk", "answer", 500)):
                    pbx.dial("101", "998901112233", "talk", 2000)
                with pbx.phones(("103", "busy", 0)):
                    pbx.dial("102", "103", "refused")
                lines = len(pbx.cdr_lines())
                wait_until(lambda: feed.feed.stats.events == lines, "the events to be spooled")
                assert legs_stored(db, tenant.account_id) == 1  # the outage held them back
            finally:
                outage.end()
            total = len(pbx.cdr_lines())
            wait_until(lambda: legs_stored(db, tenant.account_id) == total, "the spool to drain")
        finally:
            feed.stop()
            outage.close()
        if engine is not db:
            engine.dispose()
        keys = [parse_csv_line(line, None).call_key for line in pbx.cdr_lines()]
    calls = stored_calls(client, tenant)
    assert sorted((c["pbx_call_id"], c["legs"]) for c in calls) == sorted(
        (key, keys.count(key)) for key in set(keys)
    )
    assert sorted((observed(c)["type"], observed(c)["disposition"]) for c in calls) == [
        ("Internal", "ANSWERED"), ("Internal", "BUSY"), ("Outgoing", "ANSWERED"),
    ]  # fmt: skip
    assert len(feed.feed.spool) == 0
