"""Operating the Citus cluster under load: a worker added and the shards rebalanced while the API
serves reads and writes; a worker down (what fails, how, and that nothing is half-written).

Needs the local cluster of `scripts/citus-cluster.sh` as DATABASE_URL and its folder in
CITUS_CLUSTER_DIR (the tests add, stop and remove nodes). Skipped elsewhere; CITUS_REQUIRED=1
makes a missing cluster a failure instead.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text
from typer.testing import CliRunner

from callhistory import accounts, citus
from callhistory.api import create_app
from callhistory.cli import app
from callhistory.config import Settings
from callhistory.schema import calls, make_engine
from tests.conftest import PASSWORD, Tenant, new_call
from tests.test_ingest_api import call as ingest_body

AddCalls = Callable[[int, list[Any]], list[int]]
URL = "/api/v1/call-history"
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "citus-cluster.sh"


@pytest.fixture
def cluster_dir(cluster: Engine) -> Path:
    folder = os.environ.get("CITUS_CLUSTER_DIR")
    if folder is None:
        if os.environ.get("CITUS_REQUIRED"):
            pytest.fail("CITUS_REQUIRED is set: CITUS_CLUSTER_DIR must name the cluster's folder")
        pytest.skip("needs CITUS_CLUSTER_DIR, the folder of scripts/citus-cluster.sh's cluster")
    return Path(folder)


def cluster(command: str, folder: Path, *args: str) -> None:
    subprocess.run(["bash", str(SCRIPT), command, str(folder), *args], check=True, timeout=300)


def ingest_item(n: int) -> dict[str, Any]:
    """A new outgoing call of January 2026 for the JSON ingest, without a recording."""
    return ingest_body(pbx_call_id=f"ops-{n}", date_time="2026-01-20 10:00:00", recording=...)


class Traffic:
    """Threads reading a page and ingesting a call, each for its own tenant, until stopped;
    every response's status and time is kept, with the moment it started."""

    def __init__(self, engine: Engine, settings: Settings, tenants: list[Tenant]) -> None:
        self.app = create_app(settings, engine)
        self.tenants = tenants
        self.results: list[tuple[float, float, int]] = []  # (started, seconds, status)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t,)) for t in tenants]
        self.counter = iter(range(1_000_000))
        self.lock = threading.Lock()

    def _run(self, tenant: Tenant) -> None:
        with TestClient(self.app, raise_server_exceptions=False) as client:
            while not self.stop.is_set():
                with self.lock:
                    n = next(self.counter)
                started = time.monotonic()
                if n % 4 == 0:
                    status = client.post(
                        URL, json=[ingest_item(n)], headers=tenant.headers
                    ).status_code
                else:
                    status = client.get(
                        URL, params={"filter[src]": "10"}, headers=tenant.headers
                    ).status_code
                with self.lock:
                    self.results.append((started, time.monotonic() - started, status))

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def between(self, start: float, end: float) -> list[tuple[float, float, int]]:
        with self.lock:
            return [r for r in self.results if start <= r[0] < end]


def placements(conn: Any) -> dict[int, int]:
    """Shards of `calls` per worker port."""
    rows = conn.execute(
        text(
            "SELECT nodeport, count(*) FROM citus_shards WHERE table_name = 'calls'::regclass"
            " GROUP BY nodeport"
        )
    )
    return {int(port): int(n) for port, n in rows}


def worker_of(conn: Any, account_id: int) -> int:
    return int(
        conn.execute(
            text(
                "SELECT nodeport FROM citus_shards WHERE shardid ="
                " get_shard_id_for_distribution_column('calls', :a)"
            ),
            {"a": account_id},
        ).scalar_one()
    )


@pytest.fixture
def app_engine(db: Engine) -> Iterator[Engine]:
    engine = make_engine(db.url.render_as_string(hide_password=False))
    yield engine
    engine.dispose()


def test_a_worker_added_and_shards_rebalanced_while_serving(
    cluster_dir: Path,
    db: Engine,
    app_engine: Engine,
    settings: Settings,
    make_tenant: Callable[..., Tenant],
    add_calls: AddCalls,
) -> None:
    tenants = [make_tenant() for _ in range(6)]
    for tenant in tenants:
        add_calls(tenant.account_id, [new_call(tenant.account_id, n) for n in range(200)])
    with db.connect() as conn:
        before = placements(conn)
    assert len(before) == 2
    try:
        with Traffic(app_engine, settings, tenants) as traffic:
            time.sleep(3)
            moving = time.monotonic()
            cluster("add-worker", cluster_dir)
            with db.connect() as conn:
                conn.execute(
                    text("SELECT rebalance_table_shards(shard_transfer_mode => 'force_logical')")
                )
                conn.commit()
                after = placements(conn)
            moved = time.monotonic()
            time.sleep(2)
        baseline = traffic.between(0, moving)
        during = traffic.between(moving, moved)
        failed = [r for r in traffic.results if r[2] not in (200, 201)]
        assert len(after) == 3 and sum(after.values()) == sum(before.values())
        assert failed == []
        assert len(baseline) > 20 and len(during) > 20
        # What the rebalance cost the clients, for the record (the closing note quotes it).
        slow = statistics.quantiles([r[1] for r in baseline], n=100)[98]
        slower = [r for r in during if r[1] > slow]
        print(
            f"\nrebalance: {sum(before.values())} shards of calls, {before} -> {after} in"
            f" {moved - moving:.1f} s; {len(during)} requests during it, none failed,"
            f" {len(slower)} slower than the p99 before ({slow * 1000:.0f} ms);"
            f" worst {max(r[1] for r in during) * 1000:.0f} ms"
        )
        with db.connect() as conn:
            created = sum(1 for r in traffic.results if r[2] == 201)
            stored = conn.execute(
                select(func.count()).where(calls.c.account_id.in_([t.account_id for t in tenants]))
            ).scalar_one()
        assert created > 0 and stored >= 6 * 200 + 1
    finally:
        cluster("remove-worker", cluster_dir)
    with db.connect() as conn:
        drained = placements(conn)
    assert drained.keys() == before.keys() and sum(drained.values()) == sum(before.values())


def test_a_worker_down_fails_its_accounts_cleanly_while_the_others_serve(
    cluster_dir: Path,
    db: Engine,
    app_engine: Engine,
    settings: Settings,
    make_tenant: Callable[..., Tenant],
    add_calls: AddCalls,
) -> None:
    with db.connect() as conn:
        first, second = sorted(placements(conn))
        on: dict[int, Tenant] = {}
        while len(on) < 2:
            tenant = make_tenant()
            on.setdefault(worker_of(conn, tenant.account_id), tenant)
    up, down = on[first], on[second]
    for tenant in (up, down):
        add_calls(tenant.account_id, [new_call(tenant.account_id, n) for n in range(10)])
    client = TestClient(create_app(settings, app_engine), raise_server_exceptions=False)
    unavailable = {"message": "Service Unavailable"}
    cluster("stop-node", cluster_dir, "worker2")
    try:
        # The account whose shards are on the live worker reads and writes as usual (its token's
        # use, a reference-table write, is skipped while a node is down).
        listed = client.get(URL, headers=up.headers)
        assert listed.json()["meta"]["total"] == 10, listed.text
        assert client.post(URL, json=[ingest_item(1)], headers=up.headers).status_code == 201
        # The other account's requests fail whole, with a clear 503 to retry.
        for response in (
            client.get(URL, headers=down.headers),
            client.post(URL, json=[ingest_item(2), ingest_item(3)], headers=down.headers),
            client.get(f"{URL}/1", headers=down.headers),
            client.get(
                "/api/v1/statistic/calls-count",
                params={"from": "2026-01-01", "to": "2026-01-31"},
                headers=down.headers,
            ),
        ):
            assert (response.status_code, response.json()) == (503, unavailable)
            assert response.headers["retry-after"] == "5"
        # A write to the reference tables (a login creates a token) needs every node.
        login = {"email": up.email, "password": PASSWORD}
        response = client.post("/api/v1/auth/login", json=login)
        assert (response.status_code, response.json()) == (503, unavailable)
    finally:
        cluster("start-node", cluster_dir, "worker2")
    # The worker is back. A server connection that knew it before it stopped fails once more (a
    # 503 to retry), then reconnects.
    answers = [client.get(URL, headers=down.headers).status_code for _ in range(3)]
    assert answers in ([200, 200, 200], [503, 200, 200])
    # Nothing half-written: the failed batch left no call, no counter, no rollup.
    period = {"from": "2026-01-01", "to": "2026-01-31"}
    for tenant, calls_now in ((up, 11), (down, 10)):
        listed = client.get(URL, headers=tenant.headers).json()
        counted = client.get("/api/v1/statistic/calls-count", params=period, headers=tenant.headers)
        with db.connect() as conn:
            stored = conn.execute(
                select(func.count()).where(calls.c.account_id == tenant.account_id)
            ).scalar_one()
        assert (listed["meta"]["total"], stored) == (calls_now, calls_now)
        assert sum(counted.json()["result"]["all"].values()) == calls_now
    assert client.post("/api/v1/auth/login", json=login).status_code == 200
    client.close()
    db.dispose()  # the tests' own pooled connections knew worker2 before it stopped, too


def test_a_large_tenant_is_isolated_on_shards_of_its_own(
    cluster_dir: Path,
    db: Engine,
    client: TestClient,
    make_tenant: Callable[..., Tenant],
    add_calls: AddCalls,
) -> None:
    small = make_tenant()
    with db.connect() as conn:  # an account not isolated yet (by an earlier run on this cluster)
        while True:
            big = make_tenant()
            if not isolated(conn, big.account_id):
                break
    add_calls(big.account_id, [new_call(big.account_id, n) for n in range(60)])
    add_calls(small.account_id, [new_call(small.account_id, n) for n in range(5)])
    client.post(URL, json=[ingest_item(1)], headers=big.headers)

    def pages() -> list[Any]:
        return [
            client.get(URL, params={"per_page": "100"}, headers=t.headers).json()
            for t in (big, small)
        ]

    before = pages()
    with db.connect() as conn:
        shard = conn.execute(
            text(
                "SELECT isolate_tenant_to_new_shard('calls', CAST(:a AS bigint), 'CASCADE',"
                " shard_transfer_mode => 'force_logical')"
            ),
            {"a": big.account_id},
        ).scalar_one()
        conn.commit()
        owned = conn.execute(
            text(
                "SELECT logicalrelid::text, shardminvalue = shardmaxvalue FROM pg_dist_shard"
                " WHERE shardid = get_shard_id_for_distribution_column(logicalrelid, :a)"
                " AND logicalrelid::text = ANY(:tables)"
            ),
            {"a": big.account_id, "tables": list(citus.DISTRIBUTED_TABLES)},
        ).all()
        calls_shard = conn.execute(
            text("SELECT get_shard_id_for_distribution_column('calls', :a)"),
            {"a": big.account_id},
        ).scalar_one()
    # Every co-located table of the account now has a shard holding only that account's hash.
    assert calls_shard == shard
    assert sorted(owned) == sorted((name, True) for name in citus.DISTRIBUTED_TABLES)
    assert pages() == before
    assert before[0]["meta"]["total"] == 61 and before[1]["meta"]["total"] == 5


def test_an_existing_database_is_sharded_in_place(
    cluster_dir: Path, db: Engine, settings: Settings, cli_env: dict[str, str]
) -> None:
    """A database used without Citus, then given it: `db distribute` moves its rows to shards."""
    name = "callhistory_sharded_later"
    port = int(db.url.port or 5432)
    nodes = [
        make_engine(db.url.set(port=p, database="postgres").render_as_string(hide_password=False))
        for p in (port, port + 1, port + 2)
    ]

    def on_every_node(*sql: str) -> None:
        for node in nodes:
            with node.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for statement in sql:
                    conn.exec_driver_sql(statement)

    on_every_node(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    url = db.url.set(database=name).render_as_string(hide_password=False)
    env = {**cli_env, "DATABASE_URL": url}
    trial = make_engine(url)
    try:
        assert CliRunner().invoke(app, ["demo", "--calls", "400"], env=env).exit_code == 0
        token = accounts_token(trial)
        client = TestClient(create_app(settings, trial), raise_server_exceptions=False)
        headers = {"Authorization": f"Bearer {token}"}
        period = {"from": "2020-01-01", "to": "2030-12-31"}
        before = (
            client.get(URL, params={"per_page": "50"}, headers=headers).json(),
            client.get("/api/v1/statistic/calls-count", params=period, headers=headers).json(),
        )
        for node in (*nodes[1:], nodes[0]):  # Citus on the workers first, then the coordinator
            node_db = make_engine(node.url.set(database=name).render_as_string(hide_password=False))
            with node_db.begin() as conn:
                conn.exec_driver_sql("CREATE EXTENSION citus")
            node_db.dispose()
        with trial.begin() as conn:
            conn.execute(text("SELECT citus_set_coordinator_host('127.0.0.1', :p)"), {"p": port})
            for worker in (port + 1, port + 2):
                conn.execute(text("SELECT citus_add_node('127.0.0.1', :p)"), {"p": worker})
        trial.dispose()  # new connections see the cluster
        result = CliRunner().invoke(app, ["db", "distribute"], env=env)
        assert (result.exit_code, result.output) == (0, "sharded by account\n")
        after = (
            client.get(URL, params={"per_page": "50"}, headers=headers).json(),
            client.get("/api/v1/statistic/calls-count", params=period, headers=headers).json(),
        )
        assert after == before and before[0]["meta"]["total"] == 400
        with trial.connect() as conn:
            local = conn.execute(text("SELECT pg_relation_size('calls')")).scalar_one()
            spread = placements(conn)
        assert local == 0 and len(spread) == 2  # the coordinator kept no copy
        client.close()
    finally:
        trial.dispose()
        on_every_node(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        for node in nodes:
            node.dispose()


def accounts_token(engine: Engine) -> str:
    """A fresh token of the demo's user."""
    with engine.begin() as conn:
        user = accounts.find_user(conn, "demo@example.com")
        assert user is not None
        return accounts.create_token(conn, int(user.id), "trial")


def isolated(conn: Any, account_id: int) -> bool:
    """Whether the account's shard of `calls` holds its hash value alone."""
    return bool(
        conn.execute(
            text(
                "SELECT shardminvalue = shardmaxvalue FROM pg_dist_shard WHERE shardid ="
                " get_shard_id_for_distribution_column('calls', :a)"
            ),
            {"a": account_id},
        ).scalar_one()
    )
