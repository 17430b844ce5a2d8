"""Pushing calls to amoCRM, against a fake amoCRM on loopback that speaks its HTTP API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update
from typer.testing import CliRunner

from callhistory import crmstore, signing
from callhistory.cli import app
from callhistory.config import Settings
from callhistory.crm.amocrm import AmoCrmClient
from callhistory.crm.connect import connect_amocrm
from callhistory.crm.sync import RateLimiter, SyncSettings, SyncWorker, sync_once_connected
from callhistory.models import CallType
from callhistory.schema import call_integrations, integrations
from callhistory.store import utcnow
from tests.amocrmserver import FakeAmoCrm
from tests.conftest import TEST_APP_KEY, Tenant, new_call

KNOWN = "998901234567"
UNKNOWN = "998909999999"
URL = "/api/v1/call-history"
AddCalls = Callable[..., list[int]]
#: The OAuth client the fake amoCRM knows.
OAUTH = {
    "client_id": "client-1",
    "client_secret": "secret-1",
    "redirect_uri": "https://crm.example/redirect",
}


@pytest.fixture
def amo() -> Iterator[FakeAmoCrm]:
    with FakeAmoCrm(known_phones={KNOWN, "998935550000"}) as fake:
        yield fake


def quick_sync(**overrides: Any) -> SyncSettings:
    values: dict[str, Any] = {
        "settle_seconds": 0, "backoff_initial": 0.01, "backoff_max": 0.05, "idle_seconds": 0.05,
        "lease_seconds": 30,
    }  # fmt: skip
    values.update(overrides)
    return SyncSettings(**values)


def connect(db: Engine, settings: Settings, tenant: Tenant, amo: FakeAmoCrm, **kw: Any) -> int:
    kw = kw or {"long_lived_token": "long-lived-token"}
    return connect_amocrm(
        db, settings, tenant.account_id, amo.base_url, AmoCrmClient(amo.base_url), **kw
    )


def sync_rows(db: Engine) -> list[tuple[int, str, str | None, int]]:
    with db.connect() as conn:
        rows = conn.execute(
            select(ci.c.call_history_id, ci.c.status, ci.c.error_message, ci.c.attempts).order_by(
                ci.c.id
            )
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


ci = call_integrations


def test_connect_queues_outside_calls_only(
    db: Engine, settings: Settings, tenant: Tenant, make_tenant: Callable[..., Tenant],
    add_calls: AddCalls, amo: FakeAmoCrm,
) -> None:  # fmt: skip
    a = tenant.account_id
    before = add_calls(a, [new_call(a, 0)])  # stored before the CRM was connected
    connect(db, settings, tenant, amo)
    other = make_tenant()
    pks = add_calls(a, [
        new_call(a, 1, dst=KNOWN),
        new_call(a, 2, src="101", dst="102", type=CallType.INTERNAL),
        new_call(a, 3, src=KNOWN, dst="101", type=CallType.INCOMING),
    ])  # fmt: skip
    add_calls(other.account_id, [new_call(other.account_id, 1)])
    assert sync_rows(db) == [(pks[0], "pending", None, 0), (pks[2], "pending", None, 0)]
    assert before[0] not in [r[0] for r in sync_rows(db)]
    with db.connect() as conn:
        sealed = conn.execute(select(integrations.c.secrets)).scalar_one()
    assert "long-lived-token" not in sealed


def test_sync_pushes_each_call_once_and_records_crm_errors(
    db: Engine, settings: Settings, client: TestClient, tenant: Tenant, add_calls: AddCalls,
    amo: FakeAmoCrm,
) -> None:  # fmt: skip
    connect(db, settings.model_copy(update={"public_url": "https://calls.example"}), tenant, amo)
    a = tenant.account_id
    pks = add_calls(a, [
        new_call(a, 1, dst=KNOWN, recording="2026/01/13/1.wav"),
        new_call(a, 2, dst=UNKNOWN, conversation=0, disposition="BUSY"),
        new_call(a, 3, src="998935550000", dst="101", type=CallType.INCOMING),
    ])  # fmt: skip
    worker = SyncWorker(
        db, settings.model_copy(update={"public_url": "https://calls.example"}), quick_sync()
    )
    assert worker.drain() == 3
    assert sync_rows(db) == [
        (pks[0], "synced", None, 1),
        (pks[1], "failed", "Contact with this phone number not found", 1),
        (pks[2], "synced", None, 1),
    ]
    assert worker.drain() == 0
    first = amo.requests[0][2]
    assert first[0] == {
        "direction": "outbound", "uniq": new_call(a, 1).call_id, "duration": 20,
        "source": "callhistory", "phone": KNOWN, "call_status": 4, "call_result": "ANSWERED",
        "created_at": 1768305660, "request_id": "1",
        "link": f"https://calls.example/storage/monitor/2026/01/13/1.wav?account={a}&signature="
        + signing.signature(TEST_APP_KEY.encode(), a, "2026/01/13/1.wav"),
    }  # fmt: skip
    assert first[1]["call_status"] == 7 and first[2]["direction"] == "inbound"
    assert sorted(amo.stored) == sorted(new_call(a, n).call_id for n in (1, 3))

    body = client.get(
        URL, params={"filter[integration_status]": "failed"}, headers=tenant.headers
    ).json()
    assert [c["id"] for c in body["data"]] == [pks[1]]
    assert body["meta"]["total"] == 1
    item = body["data"][0]["integration"][0]
    assert (item["integration_type"], item["status"], item["error_message"]) == (
        "amocrm", "failed", "Contact with this phone number not found",
    )  # fmt: skip

    retry = f"{URL}/{pks[1]}/integrations/{item['id']}/retry"
    response = client.post(retry, headers=tenant.headers)
    assert response.status_code == 200
    assert {k: response.json()["data"][k] for k in ("id", "status", "error_message")} == {
        "id": item["id"], "status": "pending", "error_message": None,
    }  # fmt: skip
    again = client.post(retry, headers=tenant.headers)
    assert again.status_code == 422
    assert again.json()["message"] == "Only a failed sync can be retried; this one is pending."
    assert client.post(f"{URL}/{pks[1]}/integrations/999/retry", headers=tenant.headers).json() == {
        "message": "Integration not found."
    }
    bad = client.get(URL, params={"filter[integration_status]": "lost"}, headers=tenant.headers)
    assert bad.json()["errors"] == {
        "filter.integration_status": ["The selected filter.integration status is invalid."]
    }


def test_retry_needs_write_and_own_account(
    db: Engine, settings: Settings, client: TestClient, make_tenant: Callable[..., Tenant],
    add_calls: AddCalls, amo: FakeAmoCrm,
) -> None:  # fmt: skip
    owner, reader, other = make_tenant(), make_tenant(abilities=("calls:read",)), make_tenant()
    connect(db, settings, owner, amo)
    (pk,) = add_calls(owner.account_id, [new_call(owner.account_id, 1, dst=UNKNOWN)])
    SyncWorker(db, settings, quick_sync()).drain()
    url = f"{URL}/{pk}/integrations/1/retry"
    assert client.post(url, headers=reader.headers).status_code == 403
    assert client.post(url, headers=other.headers).json() == {"message": "Call not found."}


def test_burst_of_1000_calls_stays_under_the_rate_limit(
    db: Engine, settings: Settings, tenant: Tenant, add_calls: AddCalls, amo: FakeAmoCrm
) -> None:
    connect(db, settings, tenant, amo)
    a = tenant.account_id
    add_calls(a, [new_call(a, n, dst=KNOWN) for n in range(1000)])
    started = time.monotonic()
    SyncWorker(db, settings, quick_sync()).drain()
    took = time.monotonic() - started
    assert len(amo.requests) == 20  # 50 calls a request
    assert amo.max_requests_in_a_second() <= 7
    assert amo.responses[429] == 0 and len(amo.stored) == 1000 and amo.duplicates == 0
    assert took >= 2.0  # 20 requests at 7/s cannot go faster
    assert {r[1] for r in sync_rows(db)} == {"synced"}


def test_transient_errors_are_retried_then_given_up(
    db: Engine, settings: Settings, tenant: Tenant, add_calls: AddCalls, amo: FakeAmoCrm
) -> None:
    connect(db, settings, tenant, amo)
    a = tenant.account_id
    (pk,) = add_calls(a, [new_call(a, 1, dst=KNOWN)])
    amo.fail_next = [500, 503, "timeout", 429]
    worker = SyncWorker(
        db, settings, quick_sync(), client_for=lambda i: AmoCrmClient(i.base_url, timeout=0.5)
    )
    deadline = time.monotonic() + 30
    while sync_rows(db)[0][1] == "pending":
        assert time.monotonic() < deadline
        worker.run_once()
        time.sleep(0.02)
    assert sync_rows(db) == [(pk, "synced", None, 5)]
    assert amo.stored == {new_call(a, 1).call_id: 1000}

    (pk2,) = add_calls(a, [new_call(a, 2, dst=KNOWN)])
    amo.fail_next = [500] * 10
    worker = SyncWorker(db, settings, quick_sync(retry_budget=3))
    while sync_rows(db)[1][1] == "pending":
        assert time.monotonic() < deadline
        worker.run_once()
        time.sleep(0.02)
    assert sync_rows(db)[1] == (
        pk2, "failed", "gave up after 3 attempts: amoCRM answered 500: Internal Server Error", 3,
    )  # fmt: skip


def test_retry_after_is_respected(
    db: Engine, settings: Settings, tenant: Tenant, add_calls: AddCalls, amo: FakeAmoCrm
) -> None:
    connect(db, settings, tenant, amo)
    add_calls(tenant.account_id, [new_call(tenant.account_id, 1, dst=KNOWN)])
    amo.rate_limit = 0  # every request is "too many"
    before = utcnow()
    SyncWorker(db, settings, quick_sync()).run_once()  # its own backoff is at most 0.05 s
    with db.connect() as conn:
        next_at = conn.execute(select(ci.c.next_attempt_at)).scalar_one()
    assert next_at >= before + timedelta(seconds=1)  # Retry-After: 1 wins over the backoff
    assert next_at <= utcnow() + timedelta(seconds=2)


def test_oauth_connect_refresh_on_401_and_before_expiry(
    db: Engine, settings: Settings, tenant: Tenant, add_calls: AddCalls, amo: FakeAmoCrm
) -> None:
    connect(db, settings, tenant, amo, oauth=OAUTH, code="good-code")
    assert amo.valid_tokens >= {"access-1"} and "refresh-1" in amo.refresh_tokens
    a = tenant.account_id
    add_calls(a, [new_call(a, 1, dst=KNOWN)])
    amo.expired_tokens.add("access-1")  # it expired early: the CRM says 401
    worker = SyncWorker(db, settings, quick_sync(refresh_margin=0))
    assert worker.drain() == 1
    assert amo.refreshes == 1 and "refresh-1" not in amo.refresh_tokens
    assert sync_rows(db)[0][1] == "synced"

    # Close to expiry: refreshed before use, with the refresh token stored last time.
    with db.begin() as conn:
        conn.execute(
            update(integrations).values(access_expires_at=utcnow() + timedelta(seconds=10))
        )
    add_calls(a, [new_call(a, 2, dst=KNOWN)])
    assert SyncWorker(db, settings, quick_sync(refresh_margin=60)).drain() == 1
    assert amo.refreshes == 2 and "refresh-3" in amo.refresh_tokens
    with db.connect() as conn:
        sealed = conn.execute(select(integrations.c.secrets)).scalar_one()
    assert "refresh-3" not in sealed and "access-3" not in sealed  # encrypted at rest


def test_concurrent_401s_refresh_once(
    db: Engine, settings: Settings, tenant: Tenant, add_calls: AddCalls, amo: FakeAmoCrm
) -> None:
    integration_id = connect(db, settings, tenant, amo, oauth=OAUTH, code="good-code")
    amo.expired_tokens.add("access-1")
    workers = [SyncWorker(db, settings, quick_sync(refresh_margin=0)) for _ in range(4)]
    client = AmoCrmClient(amo.base_url)
    barrier = threading.Barrier(4)
    tokens: list[str] = []

    def refresh(worker: SyncWorker) -> None:
        barrier.wait()
        tokens.append(worker._access_token(integration_id, client, rejected="access-1"))

    threads = [threading.Thread(target=refresh, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert amo.refreshes == 1
    assert tokens == ["access-2"] * 4


def test_two_workers_never_push_the_same_call(
    db: Engine, settings: Settings, tenant: Tenant, add_calls: AddCalls, amo: FakeAmoCrm
) -> None:
    connect(db, settings, tenant, amo)
    a = tenant.account_id
    add_calls(a, [new_call(a, n, dst=KNOWN) for n in range(300)])
    workers = [SyncWorker(db, settings, quick_sync(rate=50)) for _ in range(2)]
    amo.delay = 0.05  # a push takes a while, as over a real network
    handled = [0, 0]

    def run(index: int) -> None:
        handled[index] = workers[index].drain()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pushed = [item["uniq"] for _, _, body in amo.requests for item in body]
    assert len(pushed) == 300 and len(set(pushed)) == 300 and amo.duplicates == 0
    assert sum(handled) == 300 and all(handled)  # both took part
    assert {r[1] for r in sync_rows(db)} == {"synced"}


def test_worker_killed_mid_batch_loses_and_duplicates_nothing(
    db: Engine, settings: Settings, tenant: Tenant, add_calls: AddCalls, amo: FakeAmoCrm,
    data_dir: Any,
) -> None:  # fmt: skip
    connect(db, settings, tenant, amo)
    a = tenant.account_id
    add_calls(a, [new_call(a, n, dst=KNOWN) for n in range(120)])
    env = {
        **os.environ, "DATA_DIR": str(data_dir), "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "APP_KEY": TEST_APP_KEY, "SYNC_SETTLE_SECONDS": "0", "SYNC_LEASE_SECONDS": "1",
    }  # fmt: skip
    amo.delay = 1.5  # the CRM is slow: the worker dies while its first batch is in flight
    worker = subprocess.Popen([sys.executable, "-m", "callhistory", "sync"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while not amo.requests:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    time.sleep(1.6)  # the fake finished the batch (stored it), the answer went nowhere
    assert sync_rows(db)[0][1] == "pending"
    amo.delay = 0
    result = subprocess.run([sys.executable, "-m", "callhistory", "sync", "--once"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {r[1] for r in sync_rows(db)} == {"synced"}
    assert len(amo.stored) == 120  # each call is in the CRM once
    assert amo.duplicates == 50  # the re-pushed batch was refused as duplicates, by uniq


def test_rate_limiter_window() -> None:
    now = [0.0]
    limiter = RateLimiter(7, window=1.0, clock=lambda: now[0])
    for _ in range(7):
        limiter.acquire()
    assert len(limiter._times) == 7
    now[0] = 1.0
    limiter.acquire()
    assert list(limiter._times) == [1.0]


def test_cli_connect_show_disconnect(
    db: Engine, tenant: Tenant, data_dir: Any, amo: FakeAmoCrm
) -> None:
    env = {
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "APP_KEY": TEST_APP_KEY,
    }
    runner = CliRunner()
    base = ["integrations", "amocrm"]
    target = ["--account", str(tenant.account_id), "--base-url", amo.base_url]
    result = runner.invoke(
        app, [*base, "connect", *target, "--long-lived-token", "long-lived-token"], env=env
    )
    assert result.exit_code == 0, result.output
    shown = runner.invoke(app, [*base, "show", "--account", str(tenant.account_id)], env=env)
    assert '"auth": "long_lived"' in shown.output and "long-lived-token" not in shown.output
    oauth_args = [
        "--client-id", "client-1", "--client-secret", "secret-1",
        "--redirect-uri", "https://crm.example/redirect", "--code", "bad",
    ]  # fmt: skip
    oauth = runner.invoke(app, [*base, "connect", *target, *oauth_args], env=env)
    assert oauth.exit_code == 1 and "amoCRM OAuth refused" in oauth.output
    for args, message in (
        (
            ["connect", "--account", "999", "--base-url", amo.base_url, "--long-lived-token", "x"],
            "No account",
        ),
        (
            ["connect", "--account", "1", "--base-url", "ftp://x", "--long-lived-token", "x"],
            "--base-url must",
        ),
        (["connect", "--account", "1", "--base-url", amo.base_url], "give --long-lived-token"),
    ):
        failed = runner.invoke(app, [*base, *args], env=env)
        assert failed.exit_code == 1 and message in failed.output, failed.output
    gone = runner.invoke(app, [*base, "disconnect", "--account", str(tenant.account_id)], env=env)
    assert gone.exit_code == 0
    with db.connect() as conn:
        assert crmstore.all_integrations(conn) == []


def test_serve_starts_syncing_once_a_crm_is_connected(
    db: Engine, settings: Settings, tenant: Tenant, add_calls: AddCalls, amo: FakeAmoCrm
) -> None:
    quick = settings.model_copy(update={"sync_settle_seconds": 0})
    stop = threading.Event()
    thread = threading.Thread(target=sync_once_connected, args=(db, quick, stop, 0.05))
    thread.start()
    try:
        time.sleep(0.2)  # nothing connected yet: nothing runs
        assert thread.is_alive() and amo.requests == []
        connect(db, settings, tenant, amo)
        add_calls(tenant.account_id, [new_call(tenant.account_id, 1, dst=KNOWN)])
        deadline = time.monotonic() + 20
        while sync_rows(db)[0][1] != "synced":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
