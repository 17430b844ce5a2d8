"""Test fixtures: a real database (SQLite by default, PostgreSQL when DATABASE_URL is set), the real
app behind an ASGI client, and factories. Every test starts from empty tables, so ids are exact."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from callhistory import accounts, citus, migrate, store
from callhistory.api import create_app
from callhistory.config import Settings
from callhistory.models import CallType, NewCall, call_from_durations, derive_call_id
from callhistory.schema import make_engine, metadata

TEST_APP_KEY = "test-app-key-0123456789abcdefghijklmnopqrstuvwxyz"
PASSWORD = "secret-password"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def engine(data_dir: Path) -> Iterator[Engine]:
    url = os.environ.get("DATABASE_URL") or None
    settings = Settings(_env_file=None, data_dir=data_dir, database_url=url)  # type: ignore[call-arg]
    engine = make_engine(settings.sqlalchemy_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _empty_tables(engine: Engine) -> None:
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:  # INTEGER PRIMARY KEY restarts at 1 once the table is empty
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def db(engine: Engine) -> Engine:
    _empty_tables(engine)
    return engine


@pytest.fixture
def cluster(db: Engine) -> Engine:
    """The database, when it is a Citus coordinator (scripts/citus-cluster.sh); the test is skipped
    elsewhere, and fails instead when CITUS_REQUIRED is set (CI's cluster run)."""
    with db.connect() as conn:
        if citus.enabled(conn):
            return db
    if os.environ.get("CITUS_REQUIRED"):
        pytest.fail("CITUS_REQUIRED is set, but DATABASE_URL's database has no citus extension")
    pytest.skip("needs a Citus coordinator as DATABASE_URL (scripts/citus-cluster.sh)")


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=data_dir, app_key=TEST_APP_KEY, public_url=None
    )


@pytest.fixture
def make_client(db: Engine, settings: Settings) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        app = create_app(settings.model_copy(update=overrides), db)
        client = TestClient(app, raise_server_exceptions=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture(scope="session")
def password_hash() -> str:
    # Hashing is deliberately slow; hash once and reuse it for every factory user.
    return accounts.hash_password(PASSWORD)


@dataclass
class Tenant:
    """An account with one user and a token, as most tests need."""

    account_id: int
    user_id: int
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_tenant(db: Engine, password_hash: str) -> Callable[..., Tenant]:
    counter = iter(range(1, 10_000))

    def make(
        timezone: str = "Asia/Tashkent", abilities: tuple[str, ...] = ("*",), name: str = ""
    ) -> Tenant:
        n = next(counter)
        email = f"user{n}@example.com"
        with db.begin() as conn:
            account_id = accounts.create_account(conn, name or f"Company {n}", timezone)
            user_id = accounts.create_user(
                conn, account_id, email, f"User {n}", PASSWORD, password_hash=password_hash
            )
            token = accounts.create_token(conn, user_id, "test", abilities)
        return Tenant(account_id, user_id, email, token)

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant()


def new_call(account_id: int, n: int, **fields: Any) -> NewCall:
    """A plausible outgoing answered call; `fields` override (times are naive UTC)."""
    conversation = fields.pop("conversation", 20)
    values: dict[str, Any] = {
        "call_id": derive_call_id(account_id, f"pbx-{n}"),
        "pbx_call_id": f"pbx-{n}",
        "started_at": datetime(2026, 1, 13, 12, 0, 0) + timedelta(minutes=n),
        "duration": 30,
        "conversation": conversation,
        "disposition": "ANSWERED" if conversation else "NO ANSWER",
        "src": "100",
        "dst": "998901234567",
        "external_number": "781130590",
        "type": CallType.OUTGOING,
    }
    values.update(fields)
    return call_from_durations(**values)


@pytest.fixture
def add_calls(db: Engine) -> Callable[..., list[int]]:
    """Store calls for an account; returns their ids in the order given."""

    def add(account_id: int, calls: list[NewCall]) -> list[int]:
        with db.begin() as conn:
            store.insert_calls(conn, account_id, calls)
            rows = store.get_many_by_call_id(conn, account_id, [c.call_id for c in calls])
        return [rows[c.call_id].id for c in calls]

    return add


@pytest.fixture
def cli_env(data_dir: Path, settings: Settings) -> dict[str, str]:
    """The environment of a CLI command on the tests' database and recordings."""
    return {
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "RECORDINGS_DIR": str(settings.recordings_root),
        "APP_KEY": TEST_APP_KEY,
    }
