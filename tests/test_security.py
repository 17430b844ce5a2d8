"""Hardening, tried as an attacker would: login floods, hostile input, the protocol after an
error, proxy headers, secrets in logs, file modes. Every test here failed before its fix."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from callhistory import accounts, migrate, schema, store
from callhistory.api import create_app, server
from callhistory.config import Settings
from callhistory.schema import make_engine
from tests.conftest import PASSWORD, TEST_APP_KEY, Tenant, new_call
from tests.test_ingest_api import call

LOGIN = "/api/v1/auth/login"
URL = "/api/v1/call-history"
TOO_MANY = {"message": "Too Many Attempts."}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live(app: FastAPI, settings: Settings) -> Iterator[int]:
    """The app under a real uvicorn (with the options `serve` uses), on a free port."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", **server.uvicorn_options(settings)
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    for _ in range(200):
        if instance.started:
            break
        time.sleep(0.02)
    try:
        yield port
    finally:
        instance.should_exit = True
        thread.join(10)


def request(
    conn: http.client.HTTPConnection, method: str, path: str, **kwargs: Any
) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, **kwargs)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


# -- logins ------------------------------------------------------------------------------------


def test_random_emails_from_one_address_are_throttled(
    make_client: Callable[..., TestClient], tenant: Tenant
) -> None:
    client = make_client(login_max_attempts_per_ip=4)
    for n in range(4):
        body = {"email": f"nobody{n}@example.com", "password": "guess-guess"}
        assert client.post(LOGIN, json=body).status_code == 422
    for email in ("someone-new@example.com", tenant.email):
        response = client.post(LOGIN, json={"email": email, "password": PASSWORD})
        assert (response.status_code, response.json()) == (429, TOO_MANY)
        assert 1 <= int(response.headers["retry-after"]) <= 60


def test_password_hashes_wait_for_a_free_slot_then_429(
    make_client: Callable[..., TestClient], tenant: Tenant
) -> None:
    client = make_client(login_hash_slots=1, login_hash_wait_seconds=0.2)
    gate = client.app.state.hash_gate  # type: ignore[attr-defined]
    assert asyncio.run(gate.acquire())  # another login is hashing
    try:
        started = time.monotonic()
        response = client.post(LOGIN, json={"email": tenant.email, "password": PASSWORD})
        assert (response.status_code, response.json()) == (429, TOO_MANY)
        assert response.headers["retry-after"] == "1"
        assert time.monotonic() - started >= 0.2
    finally:
        gate.release()
    assert client.post(LOGIN, json={"email": tenant.email, "password": PASSWORD}).status_code == 200


def test_hashes_use_owasp_argon2id_parameters_and_old_ones_are_upgraded(
    client: TestClient, tenant: Tenant, db: Engine
) -> None:
    assert accounts.hash_password("x" * 8).startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    from argon2 import PasswordHasher

    old = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4).hash(PASSWORD)
    with db.begin() as conn:
        conn.execute(text("UPDATE users SET password = :p"), {"p": old})
    assert client.post(LOGIN, json={"email": tenant.email, "password": PASSWORD}).status_code == 200
    with db.connect() as conn:
        stored = conn.execute(text("SELECT password FROM users")).scalar_one()
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert accounts.verify_password(stored, PASSWORD)


# -- hostile input -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["src", "dst", "external_number"])
def test_nul_bytes_and_huge_values_in_filters_are_422(
    client: TestClient, tenant: Tenant, add_calls: Callable[..., list[int]], name: str
) -> None:
    add_calls(tenant.account_id, [new_call(tenant.account_id, 1)])
    attribute = f"filter.{name}".replace("_", " ")
    for value, message in [
        ("10\x00abc", f"The {attribute} field format is invalid."),
        ("1" * 50_001, f"The {attribute} field must not be greater than 255 characters."),
        ("9," + "1" * 256, f"The {attribute} field must not be greater than 255 characters."),
    ]:
        response = client.get(URL, params={f"filter[{name}]": value}, headers=tenant.headers)
        assert (response.status_code, response.json()) == (
            422,
            {"message": message, "errors": {f"filter.{name}": [message]}},
        )
    longest = client.get(URL, params={f"filter[{name}]": "1" * 255}, headers=tenant.headers)
    assert (longest.status_code, longest.json()["meta"]["total"]) == (200, 0)


def test_concurrent_ingest_of_the_same_calls_in_any_order_never_fails(
    make_client: Callable[..., TestClient], tenant: Tenant, db: Engine
) -> None:
    rounds, clients, size = 6, 8, 200

    def items(round_: int) -> list[dict[str, Any]]:
        return [call(pbx_call_id=f"race-{round_}-{n}") for n in range(size)]

    statuses: list[int] = []
    barrier = threading.Barrier(clients)

    # Apps are built and routed once here, not in the threads: FastAPI builds each route's models
    # on the first request that reaches it, under warnings.catch_warnings(), which is not
    # thread-safe (a thread can restore pytest's "error" filter while another is inside it).
    apps = [make_client() for _ in range(clients)]
    for app in apps:
        assert app.post(URL, json=[], headers=tenant.headers).status_code == 422

    def post(seed: int) -> None:
        client = apps[seed]
        for round_ in range(rounds):
            body = items(round_)
            random.Random(seed * 100 + round_).shuffle(body)
            barrier.wait()  # every client sends the same new calls at once, each in its order
            statuses.append(client.post(URL, json=body, headers=tenant.headers).status_code)

    threads = [threading.Thread(target=post, args=(seed,)) for seed in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * rounds * clients
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM calls")).scalar_one() == rounds * size
        counted = conn.execute(text("SELECT sum(calls) FROM call_counts")).scalar_one()
        rolled = conn.execute(text("SELECT sum(calls) FROM call_rollups")).scalar_one()
        assert counted == rolled == rounds * size


# -- the protocol ----------------------------------------------------------------------------------


def test_a_500_is_a_complete_response_and_the_connection_lives_on(
    settings: Settings, tmp_path: Path, password_hash: str
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'broken.sqlite3'}")
    migrate.upgrade(engine)
    with engine.begin() as conn:
        account = accounts.create_account(conn, "Broken")
        user = accounts.create_user(
            conn, account, "b@example.com", "B", "", password_hash=password_hash
        )
        token = accounts.create_token(conn, user)
        conn.execute(text("DROP TABLE call_counts"))  # a fault the code cannot foresee
    try:
        with live(create_app(settings, engine), settings) as port:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            headers = {"Authorization": f"Bearer {token}"}
            status, _, body = request(conn, "GET", URL, headers=headers)
            assert (status, json.loads(body)) == (500, {"message": "Server Error"})
            status, _, body = request(
                conn, "GET", "/api/v1/auth/me", headers=headers
            )  # same socket
            assert status == 200 and json.loads(body)["result"]["email"] == "b@example.com"
            conn.close()
    finally:
        engine.dispose()


@pytest.mark.parametrize("idle", ["used a moment ago", "idle in the pool"])
def test_a_dropped_database_connection_is_replaced(
    db: Engine,
    settings: Settings,
    make_tenant: Callable[..., Tenant],
    monkeypatch: pytest.MonkeyPatch,
    idle: str,
) -> None:
    """The server restarted, or an idle timeout dropped the pool's connection: a connection that
    sat idle is pinged and replaced unseen; one used a moment ago (as under load, where a ping
    on every request would cost a round trip each) fails its request with a 503 to retry, and
    the next request has a new connection."""
    if db.dialect.name != "postgresql":
        pytest.skip("SQLite has no server connection to lose")
    tenant = make_tenant()
    if idle == "idle in the pool":
        monkeypatch.setattr(schema, "PING_AFTER_IDLE_SECONDS", 0.0)
    engine = make_engine(db.url.render_as_string(hide_password=False))
    try:
        with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
            assert client.get(URL, headers=tenant.headers).status_code == 200
            with engine.connect() as conn:  # the pool's one connection, back in the pool after
                backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with db.connect() as conn:
                # integer: Citus adds a pg_terminate_backend(bigint) of its own
                stop = text("SELECT pg_terminate_backend(CAST(:pid AS integer))")
                conn.execute(stop, {"pid": backend})
            answers = [client.get(URL, headers=tenant.headers) for _ in range(2)]
        expected = [503, 200] if idle == "used a moment ago" else [200, 200]
        assert [answer.status_code for answer in answers] == expected
        if expected[0] == 503:
            assert answers[0].json() == {"message": "Service Unavailable"}
        assert answers[-1].json()["meta"]["total"] == 0
    finally:
        engine.dispose()


def test_an_unreachable_database_is_a_503_to_retry(settings: Settings) -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:1/nowhere")  # nothing listens on :1
    try:
        with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
            response = client.get(URL, headers={"Authorization": "Bearer 1|secret"})
        assert (response.status_code, response.json()) == (503, {"message": "Service Unavailable"})
        assert response.headers["retry-after"] == "5"
    finally:
        engine.dispose()


def test_options_and_405_name_every_method(client: TestClient, tenant: Tenant) -> None:
    response = client.options(URL, headers=tenant.headers)
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["allow"] == "GET, OPTIONS, POST"
    response = client.delete(URL, headers=tenant.headers)
    assert response.status_code == 405 and response.headers["allow"] == "GET, OPTIONS, POST"
    assert client.options("/api/v1/auth/login").headers["allow"] == "OPTIONS, POST"


def test_openapi_describes_the_422_we_send(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["LaravelValidationError"]["required"] == ["message", "errors"]
    refs = {
        (path, method): op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if "422" in op["responses"]
    }
    assert set(refs.values()) == {"#/components/schemas/LaravelValidationError"}
    assert ("/api/v1/call-history", "get") in refs and ("/api/v1/auth/login", "post") in refs
    assert not any(path.startswith("/storage") for path, _ in refs)


# -- trust and secrets -------------------------------------------------------------------------


def test_forwarded_addresses_count_only_from_trusted_proxies(
    settings: Settings, db: Engine, tenant: Tenant
) -> None:
    def failures_until_429(trusted: list[str]) -> int:
        tuned = settings.model_copy(update={"trusted_proxies": trusted, "login_max_attempts": 2})
        with (
            live(create_app(tuned, db), tuned) as port,
            closing(http.client.HTTPConnection("127.0.0.1", port, timeout=10)) as conn,
        ):
            for n in range(1, 6):
                status, _, _ = request(
                    conn,
                    "POST",
                    LOGIN,
                    body=json.dumps({"email": tenant.email, "password": "wrong-one"}),
                    headers={
                        "Content-Type": "application/json",
                        "X-Forwarded-For": f"203.0.113.{n}",
                    },
                )
                if status == 429:
                    return n
            return 0

    assert failures_until_429([]) == 3  # the forged header is ignored: one client, throttled
    assert failures_until_429(["127.0.0.1"]) == 0  # a trusted proxy's clients are told apart


def test_the_access_log_never_shows_signatures(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "APP_KEY": TEST_APP_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "callhistory", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    secret = "0123456789abcdef" * 4
    try:
        for _ in range(300):
            try:
                with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=5)) as conn:
                    status, _, _ = request(
                        conn,
                        "GET",
                        f"/storage/monitor/2026/01/13/a.wav?account=1&signature={secret}",
                    )
                break
            except OSError:
                time.sleep(0.05)
        assert status == 403
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    assert "/storage/monitor/2026/01/13/a.wav?account=1&signature=[redacted]" in output
    assert secret not in output


def test_redact() -> None:
    assert server.redact("/x?expires=5&signature=abc&token=1|x&q=1") == (
        "/x?expires=5&signature=[redacted]&token=[redacted]&q=1"
    )


def test_a_new_sqlite_database_is_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    env = {**os.environ, "DATA_DIR": str(data)}
    env.pop("DATABASE_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "callhistory", *args]
        return subprocess.run(command, env=env, check=True, capture_output=True, text=True)

    first = cli("accounts", "create", "Acme")
    # A new database is announced with its absolute path (on stderr; stdout stays the id)...
    assert first.stderr == f"created a new database: {data / 'callhistory.sqlite3'}\n"
    assert first.stdout == "1\n"
    again = cli("accounts", "show", "1")
    assert again.stderr == ""  # ...once
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = sorted(p.name for p in data.iterdir())
    assert "callhistory.sqlite3" in files
    for name in files:
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name


def test_one_batch_of_many_new_calls_fits_the_lock_table(db: Engine, tenant: Tenant) -> None:
    """PostgreSQL's lock table holds ~6,400 locks (64 per connection): a batch of 20,000 new
    calls (a demo, a CSV batch) takes a bounded number of them, not one per call."""
    calls_ = [new_call(tenant.account_id, n) for n in range(20_000)]
    with db.begin() as conn:
        created = store.insert_calls(conn, tenant.account_id, calls_)
    assert len(created) == 20_000


def _serve(tmp_path: Path, port: int, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DATA_DIR": str(tmp_path), "APP_KEY": TEST_APP_KEY}
    env["LOGIN_MAX_ATTEMPTS"] = "3"
    return subprocess.Popen(
        [sys.executable, "-m", "callhistory", "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _login_status(port: int) -> int:
    body = json.dumps({"email": "boss@example.com", "password": "guess-guess"})
    for _ in range(300):
        try:
            with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=10)) as conn:
                status, _, _ = request(
                    conn, "POST", LOGIN, body=body, headers={"Content-Type": "application/json"}
                )
                return status
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def test_server_processes_share_one_login_throttle(tmp_path: Path) -> None:
    """`serve --workers N` runs N processes: a guesser must not get N times the attempts. Two
    separate servers on one database count the same failures; `--workers 2` serves."""
    first, second = free_port(), free_port()
    servers = [_serve(tmp_path, first, "--workers", "1")]
    try:
        assert [_login_status(first) for _ in range(3)] == [422, 422, 422]
        servers.append(_serve(tmp_path, second, "--workers", "2"))
        assert [_login_status(second) for _ in range(4)] == [429] * 4
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)
