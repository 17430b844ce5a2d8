"""The live AMI feed against a fake Asterisk manager on loopback: replays, drops, outages, stops."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, make_url, select

from callhistory import accounts
from callhistory.ingest.ami import AmiFeed, AmiSettings, FeedStats
from callhistory.ingest.cdr import AMI_FIELDS, BASE_COLUMNS
from callhistory.ingest.pbx import Layout
from callhistory.ingest.spool import Spool
from callhistory.retry import backoff_delay
from callhistory.schema import call_legs, calls, make_engine
from tests.amiserver import FakeAmi
from tests.conftest import Tenant
from tests.tcpproxy import TcpProxy
from tests.test_asterisk_csv import (
    CONFIG,
    RING_GROUP_THIRD_ANSWERS,
    SCENARIOS,
    comparable,
    stored_calls,
)

_NAME_TO_AMI = {name: key for key, name in AMI_FIELDS.items()}
_NEW_COLUMNS = ("uniqueid", "userfield", "peeraccount", "linkedid", "sequence")


def ami_events(master_csv: str) -> list[dict[str, str]]:
    """21-column Master.csv lines → the `Event: Cdr` blocks cdr_manager sends for them."""
    events = []
    for values in csv.reader(master_csv.splitlines()):
        fields = dict(zip((*BASE_COLUMNS, *_NEW_COLUMNS), values, strict=True))
        event = {"Event": "Cdr", "Privilege": "cdr,all"}
        event.update({_NAME_TO_AMI[name]: value for name, value in fields.items()})
        events.append(event)
    return events


def ring_group_calls(count: int) -> list[dict[str, str]]:
    """`count` ring-group calls of 3 legs each (the third phone answers), distinct linkedids."""
    events = []
    for n in range(count):
        text = RING_GROUP_THIRD_ANSWERS.replace("1768280400.10", f"1768280400.{1000 + n}")
        events += ami_events(text.replace("998935550001", f"99893{n:07d}"))
    return events


@pytest.fixture
def pbx_tenant(make_tenant: Callable[..., Tenant], db: Engine) -> Tenant:
    tenant = make_tenant()
    with db.begin() as conn:
        accounts.set_pbx_config(conn, tenant.account_id, CONFIG)
    return tenant


def quick(port: int, **overrides: Any) -> AmiSettings:
    settings = AmiSettings(
        "127.0.0.1", port, "cdr", "s3cret", connect_timeout=2, ping_interval=0.5,
        backoff_initial=0.02, backoff_max=0.2, db_retry=0.05,
    )  # fmt: skip
    for key, value in overrides.items():
        setattr(settings, key, value)
    return settings


async def feed_until(
    feed: AmiFeed, done: Callable[[], bool], timeout: float = 60, during: Any = None
) -> FeedStats:
    """Run the feed until `done()` holds (checked off the event loop), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    if during is not None:
        await during()
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(done):
        assert time.monotonic() < deadline, "timed out waiting for the feed"
        assert not task.done(), task
        await asyncio.sleep(0.05)
    stop.set()
    # A feed that does not stop fails here with a reason, not after pytest-timeout's 300 s.
    return await asyncio.wait_for(task, timeout)


def count(engine: Engine, table: Any, account_id: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(table).where(table.c.account_id == account_id)
            ).scalar_one()
        )


def pbx(engine: Engine, account_id: int) -> Layout:
    with engine.connect() as conn:
        return Layout.load(conn, account_id, None)


LOCAL_SCENARIOS = [s for s in SCENARIOS if not s[2] and "FreePBX" not in s[0]]


def test_replayed_scenarios_with_dropped_connections(
    tmp_path: Path, db: Engine, client: TestClient, pbx_tenant: Tenant
) -> None:
    events = [e for _, text, _, _ in LOCAL_SCENARIOS for e in ami_events(text)]
    expected = [call for _, _, _, calls_ in LOCAL_SCENARIOS for call in calls_]
    server = FakeAmi(events)
    server.drop_after_events = [3, 7, 8]  # three cuts, each in the middle of an event

    async def scenario() -> FeedStats:
        await server.start()
        feed = AmiFeed(
            db, pbx_tenant.account_id, pbx(db, pbx_tenant.account_id), quick(server.port),
            Spool(tmp_path / "spool.sqlite3"),
        )  # fmt: skip
        stats = await feed_until(
            feed, lambda: count(db, call_legs, pbx_tenant.account_id) == len(events)
        )
        await server.stop()
        return stats

    stats = asyncio.run(scenario())
    assert server.logins == 4 and stats.connections == 4
    assert stats.events == len(events) and stats.rejected == 0
    got = sorted(
        (comparable(c) for c in stored_calls(client, pbx_tenant)), key=lambda c: c["pbx_call_id"]
    )
    assert got == sorted(expected, key=lambda c: c["pbx_call_id"])


def test_bad_login_is_retried_without_crashing(
    tmp_path: Path, db: Engine, pbx_tenant: Tenant
) -> None:
    server = FakeAmi([], secret="other")

    async def scenario() -> FeedStats:
        await server.start()
        feed = AmiFeed(
            db, pbx_tenant.account_id, pbx(db, pbx_tenant.account_id), quick(server.port),
            Spool(tmp_path / "spool.sqlite3"),
        )  # fmt: skip
        stats = await feed_until(feed, lambda: server.refused_logins >= 3)
        await server.stop()
        return stats

    assert asyncio.run(scenario()).connections == 0


def test_silent_connection_is_pinged(tmp_path: Path, db: Engine, pbx_tenant: Tenant) -> None:
    server = FakeAmi([])

    async def scenario() -> None:
        await server.start()
        feed = AmiFeed(
            db, pbx_tenant.account_id, pbx(db, pbx_tenant.account_id),
            quick(server.port, ping_interval=0.1), Spool(tmp_path / "spool.sqlite3"),
        )  # fmt: skip
        await feed_until(feed, lambda: server.pings >= 3)
        await server.stop()

    asyncio.run(scenario())
    assert server.logins == 1  # answered pings keep the one connection


def _hold_sqlite_lock(path: str, seconds: float) -> None:
    conn = sqlite3.connect(path, timeout=1)
    conn.execute("BEGIN EXCLUSIVE")
    time.sleep(seconds)
    conn.rollback()
    conn.close()


def test_database_outage_during_thousands_of_events(
    tmp_path: Path, db: Engine, client: TestClient, pbx_tenant: Tenant
) -> None:
    """The database goes away mid-stream (PostgreSQL: the link is cut; SQLite: locked), comes
    back, and every call is stored exactly once."""
    calls_count = 1000
    events = ring_group_calls(calls_count)
    server = FakeAmi(events)
    account = pbx_tenant.account_id

    async def scenario() -> FeedStats:
        await server.start()
        proxy = None
        engine = db
        if db.dialect.name == "postgresql":
            proxy = TcpProxy(db.url.host or "127.0.0.1", db.url.port or 5432)
            await proxy.start()
            url = make_url(os.environ["DATABASE_URL"]).set(
                drivername="postgresql+psycopg", host="127.0.0.1", port=proxy.port
            )
            engine = make_engine(url.render_as_string(hide_password=False))
        feed = AmiFeed(
            engine, account, pbx(db, account), quick(server.port, batch=200),
            Spool(tmp_path / "spool.sqlite3"),
        )  # fmt: skip

        async def outage() -> None:
            while count(db, calls, account) < 50:
                await asyncio.sleep(0.01)
            if proxy is not None:
                proxy.cut()
                while server.sent < len(events):  # the whole stream arrives while it is down
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.5)
                outage_calls.append(count(db, calls, account))
                proxy.restore()
            else:
                await asyncio.to_thread(_hold_sqlite_lock, db.url.database or "", 1.0)

        outage_calls: list[int] = []
        stats = await feed_until(
            feed, lambda: count(db, call_legs, account) == len(events), during=outage
        )
        if proxy is not None:
            assert outage_calls[0] < calls_count  # the outage really held calls back
            await proxy.stop()
            engine.dispose()
        await server.stop()
        return stats

    stats = asyncio.run(scenario())
    assert stats.events == len(events)
    assert count(db, calls, account) == calls_count
    with db.connect() as conn:
        per_call = conn.execute(
            select(calls.c.legs, calls.c.dst, calls.c.status, func.count())
            .where(calls.c.account_id == account)
            .group_by(calls.c.legs, calls.c.dst, calls.c.status)
        ).all()
    assert [tuple(row) for row in per_call] == [(3, "103", 1, calls_count)]
    body = client.get("/api/v1/call-history", headers=pbx_tenant.headers).json()
    assert body["meta"]["total"] == calls_count


def test_stopped_with_the_database_down_then_restarted(
    tmp_path: Path, db: Engine, client: TestClient, pbx_tenant: Tenant
) -> None:
    """What was read while the database was unreachable waits in the spool across a stop, is
    stored by the next start, and a replay of the same events changes nothing."""
    events = ring_group_calls(20)
    account = pbx_tenant.account_id
    spool_path = tmp_path / "spool.sqlite3"
    unreachable = make_engine(f"sqlite:///{tmp_path}/missing-dir/none.sqlite3")

    async def scenario() -> tuple[FeedStats, FeedStats, FeedStats]:
        server = FakeAmi(events)
        await server.start()
        down = AmiFeed(
            unreachable, account, pbx(db, account), quick(server.port), Spool(spool_path)
        )
        first = await feed_until(
            down, lambda: server.sent == len(events) and down.stats.events == len(events)
        )
        assert len(Spool(spool_path)) == len(events)
        up = AmiFeed(db, account, pbx(db, account), quick(server.port), Spool(spool_path))
        second = await feed_until(up, lambda: count(db, call_legs, account) == len(events))
        server.sent = 0  # the PBX (or a replayed capture) sends everything again
        again = AmiFeed(db, account, pbx(db, account), quick(server.port), Spool(spool_path))
        third = await feed_until(again, lambda: again.stats.stored.duplicate_legs == len(events))
        await server.stop()
        return first, second, third

    first, second, third = asyncio.run(scenario())
    assert first.stored.created == 0
    assert (second.events, second.stored.created) == (0, 20)
    assert (third.stored.created, third.stored.updated) == (0, 0)
    assert len(Spool(spool_path)) == 0
    assert (
        client.get("/api/v1/call-history", headers=pbx_tenant.headers).json()["meta"]["total"] == 20
    )


def test_cli_stops_cleanly_on_sigterm(
    tmp_path: Path, db: Engine, client: TestClient, pbx_tenant: Tenant, data_dir: Path
) -> None:
    events = ring_group_calls(5)
    server = FakeAmi(events)
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "AMI_SECRET": "s3cret",
    }

    async def scenario() -> tuple[int, str]:
        await server.start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callhistory", "ami", "--account", str(pbx_tenant.account_id),
            "--port", str(server.port), "--username", "cdr", "--spool", str(tmp_path / "s.sqlite3"),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while await asyncio.to_thread(count, db, call_legs, pbx_tenant.account_id) < len(events):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 30)
        await server.stop()
        return proc.returncode or 0, output.decode()

    code, output = asyncio.run(scenario())
    assert code == 0, output
    assert "logged in as cdr" in output
    assert "events: 15, rejected: 0; calls created: 5, updated: 0; still spooled: 0" in output
    assert "Traceback" not in output


def test_backoff_grows_with_jitter_and_caps() -> None:
    for attempt, (low, high) in enumerate([(0.5, 1), (1, 2), (2, 4), (4, 8)]):
        delays = [backoff_delay(attempt, 1, 60) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high and len(set(delays)) > 100
    assert all(30 <= backoff_delay(20, 1, 60) <= 60 for _ in range(50))
