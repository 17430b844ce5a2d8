"""Latency of GET /api/v1/call-history at scale, per query shape. Run by hand, not in CI.

    python -m bench.list_calls --calls 1000000                      # SQLite file in bench/data
    DATABASE_URL=postgresql://postgres@127.0.0.1/bench python -m bench.list_calls --calls 1000000

Seeds one big account (N calls over 60 days, the demo's realistic mix) plus 10 smaller accounts
(N/100 calls each) once per database, then measures each query shape through the real app (ASGI,
in process) and the same query's SQL alone (count + page), reporting medians and p99.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from callhistory import accounts, demo, migrate, phpquery, query, store
from callhistory.api import create_app
from callhistory.config import Settings
from callhistory.schema import calls, make_engine

TZ = ZoneInfo("Asia/Tashkent")
BIG = "bench-big"


def seed(engine: Engine, big: int) -> tuple[int, str]:
    """The big account's id and a token for it; inserts only what is missing."""
    with engine.begin() as conn:
        account_id = accounts.find_account_by_name(conn, BIG)
        if account_id is None:
            account_id = accounts.create_account(conn, BIG)
            user_id = accounts.create_user(conn, account_id, "bench@example.com", "Bench", "bench1")
        else:
            user = accounts.find_user(conn, "bench@example.com")
            assert user is not None
            user_id = int(user.id)
        token = accounts.create_token(conn, user_id, "bench")
    sizes = [(account_id, big)]
    for n in range(10):
        with engine.begin() as conn:
            small = accounts.find_account_by_name(conn, f"bench-small-{n}")
            if small is None:
                small = accounts.create_account(conn, f"bench-small-{n}")
        sizes.append((small, big // 100))
    now = datetime(2026, 11, 26, 18, 0, 0)
    for acc, size in sizes:
        with engine.connect() as conn:
            have = conn.execute(
                select(func.count()).select_from(calls).where(calls.c.account_id == acc)
            ).scalar_one()
        if have >= size:
            continue
        started = time.perf_counter()
        batch = []
        for call in demo.generate(acc, size, now, TZ, seed=acc):
            batch.append(call)
            if len(batch) == 10_000:
                with engine.begin() as conn:
                    store.insert_calls(conn, acc, batch)
                batch = []
        with engine.begin() as conn:
            store.insert_calls(conn, acc, batch)
        took = time.perf_counter() - started
        print(f"seeded account {acc}: {size} calls in {took:.0f}s ({size / took:.0f}/s)")
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE calls")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return account_id, token


def busiest_day(engine: Engine, account_id: int) -> str:
    with engine.connect() as conn:
        latest = conn.execute(
            select(func.max(calls.c.started_at)).where(calls.c.account_id == account_id)
        ).scalar_one()
    return (latest - timedelta(days=3)).strftime("%Y-%m-%d")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm caches once
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()

    data_dir = Path(__file__).parent / "data"
    data_dir.mkdir(exist_ok=True)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=data_dir,
        database_url=os.environ.get("DATABASE_URL") or None,
        app_key="bench-key-" + "x" * 40,
    )
    engine = make_engine(settings.sqlalchemy_url)
    migrate.upgrade(engine)
    account_id, token = seed(engine, args.calls)
    day = busiest_day(engine, account_id)
    shapes = {
        "default page": "",
        "sort=-datetime": "sort=-datetime",
        "filter[type]=2": "filter[type]=2",
        "filter[from]/[to] one day": f"filter[from]={day} 00:00:00&filter[to]={day} 23:59:59",
        "filter[src]=1234 (partial)": "filter[src]=1234",
        "filter[src]=10 (short, 90k matches)": "filter[src]=10",
        "filter[duration]=>60": "filter[duration]=>60",
        "page=1000": "page=1000",
    }
    client = TestClient(create_app(settings, engine))
    headers = {"Authorization": f"Bearer {token}"}
    print(
        f"\n{engine.dialect.name}, {args.calls} calls in the big account, {args.runs} runs each\n"
    )
    print("| query | total | HTTP median ms | HTTP p99 ms | SQL median ms | SQL p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, qs in shapes.items():
        url = f"/api/v1/call-history?{qs}"
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        total = response.json()["meta"]["total"]
        http = timed(lambda url=url: client.get(url, headers=headers), args.runs)
        q = query.parse(phpquery.parse(qs.encode()), TZ)

        def sql(q: query.CallQuery = q) -> None:
            with engine.connect() as conn:
                store.count(conn, account_id, q)
                store.search(conn, account_id, q)

        raw = timed(sql, args.runs)
        print(
            f"| {name} | {total} | {statistics.median(http):.1f} | {percentile(http, 99):.1f} "
            f"| {statistics.median(raw):.1f} | {percentile(raw, 99):.1f} |"
        )


if __name__ == "__main__":
    main()
