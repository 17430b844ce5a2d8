"""The same data and load on one PostgreSQL and on a Citus cluster. Run by hand, not in CI.

    python -m bench.citus [--accounts 10] [--calls 100000] [--runs 30] [--seconds 10]
        [--single postgresql://postgres@127.0.0.1/bench_single]
        [--cluster postgresql://postgres@127.0.0.1:9700/callhistory]   # scripts/citus-cluster.sh

Each database must be empty or hold this benchmark's accounts (re-runs reuse them). Seeds
`--accounts` accounts of `--calls` calls each (the demo's mix, COPY, then the tallies and
VACUUM ANALYZE), then on each database: every list shape of bench/list_calls.py for one account
through the app in process (median and p99), JSON ingest (batches of 500 new calls, rows/s), and
`callhistory serve --workers 2` under wrk with 16 and 64 connections, each request a random
account's default page. Prints one table with the cluster/single ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from bench.list_calls import _load, in_process, percentile, shapes, timed
from bench.serve_wrk import run_wrk, start_server
from callhistory import accounts, migrate
from callhistory.config import Settings
from callhistory.schema import calls, make_engine

NOW = datetime(2026, 11, 26, 18, 0, 0)
KEY = "bench-key-" + "x" * 40


def seed(engine: Engine, count: int, size: int) -> tuple[list[int], list[str], float]:
    """The accounts' ids, a token each, and the load's rows/s (0 when already loaded)."""
    ids, tokens, loaded, took = [], [], 0, 0.0
    for n in range(count):
        with engine.begin() as conn:
            account_id = accounts.find_account_by_name(conn, f"bench-citus-{n}")
            if account_id is None:
                account_id = accounts.create_account(conn, f"bench-citus-{n}")
                user_id = accounts.create_user(conn, account_id, f"b{n}@example.com", "B", "bench1")
            else:
                user = accounts.find_user(conn, f"b{n}@example.com")
                assert user is not None
                user_id = int(user.id)
            tokens.append(accounts.create_token(conn, user_id, "bench"))
            have = conn.execute(
                select(func.count()).select_from(calls).where(calls.c.account_id == account_id)
            ).scalar_one()
        ids.append(account_id)
        if have < size:
            assert have == 0, f"account {account_id} is half loaded: empty the database"
            started = time.perf_counter()
            _load(engine, account_id, size, NOW)
            took += time.perf_counter() - started
            loaded += size
    if loaded:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    return ids, tokens, loaded / took if took else 0.0


def ingest_rate(client: TestClient, tokens: list[str], batches: int) -> float:
    """New calls per second through POST /api/v1/call-history, 500 per request."""
    stamp = time.time_ns()
    started = time.perf_counter()
    for b in range(batches):
        body = [
            {
                "pbx_call_id": f"ingest-{stamp}-{b}-{n}",
                "date_time": (NOW - timedelta(minutes=n)).strftime("%Y-%m-%d %H:%M:%S"),
                "src": "101",
                "dst": f"99890{n:07d}",
                "external_number": "781130590",
                "duration": 40,
                "conversation": 25,
                "type": 2,
                "status": 1,
            }
            for n in range(500)
        ]
        token = tokens[b % len(tokens)]
        response = client.post(
            "/api/v1/call-history", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 201, response.text
    return batches * 500 / (time.perf_counter() - started)


def throughput(url: str, tokens: list[str], connections: int, seconds: int) -> dict[str, float]:
    """wrk against a real server, each request with a random account's token."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        quoted = ", ".join(f'"{t}"' for t in tokens)
        script.write(
            f"local tokens = {{{quoted}}}\n"
            "request = function()\n"
            '  local h = {["Authorization"] = "Bearer " .. tokens[math.random(#tokens)]}\n'
            '  return wrk.format("GET", nil, h)\n'
            "end\n"
        )
    try:
        return run_wrk(url, connections, seconds, "-s", script.name)
    finally:
        os.unlink(script.name)


def run(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=Path(tempfile.mkdtemp()), database_url=url, app_key=KEY
    )
    engine = make_engine(url)
    migrate.upgrade(engine)
    ids, tokens, load_rate = seed(engine, args.accounts, args.calls)
    print(f"{name}: {args.accounts} x {args.calls} calls ready (load {load_rate:.0f} rows/s)")
    with engine.connect() as conn:
        latest = conn.execute(
            select(func.max(calls.c.started_at)).where(calls.c.account_id == ids[0])
        ).scalar_one()
    day = (latest - timedelta(days=3)).strftime("%Y-%m-%d")
    client = in_process(settings, engine)
    headers = {"Authorization": f"Bearer {tokens[0]}"}
    result: dict[str, Any] = {"load": load_rate, "shapes": {}}
    for shape, qs in shapes(day, args.calls).items():
        target = f"/api/v1/call-history?{qs}"
        assert client.get(target, headers=headers).status_code == 200
        result["shapes"][shape] = timed(lambda t=target: client.get(t, headers=headers), args.runs)
    result["ingest"] = ingest_rate(client, tokens, args.batches)
    env = {**os.environ, "DATABASE_URL": url, "DATA_DIR": str(settings.data_dir), "APP_KEY": KEY}
    server, served = start_server(env, 2)
    try:
        throughput(served, tokens, 16, 3)  # warm both workers
        for connections in (16, 64):
            result[f"wrk{connections}"] = throughput(served, tokens, connections, args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--calls", type=int, default=100_000, help="per account")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--batches", type=int, default=20, help="ingest requests of 500 calls")
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run")
    parser.add_argument("--single", default="postgresql://postgres@127.0.0.1/bench_single")
    parser.add_argument("--cluster", default="postgresql://postgres@127.0.0.1:9700/callhistory")
    args = parser.parse_args()
    single = run("single PostgreSQL", args.single, args)
    cluster = run("Citus (coordinator + 2 workers)", args.cluster, args)

    print(f"\n{args.accounts} accounts x {args.calls} calls, {os.cpu_count()} cores, same machine")
    print("\n| measure | single p50 | single p99 | Citus p50 | Citus p99 | p50 ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for shape, ms in single["shapes"].items():
        other = cluster["shapes"][shape]
        p50, c50 = statistics.median(ms), statistics.median(other)
        print(
            f"| {shape} | {p50:.1f} | {percentile(ms, 99):.1f} | {c50:.1f} "
            f"| {percentile(other, 99):.1f} | {c50 / p50:.2f} |"
        )
    print("\n| measure | single | Citus | ratio |")
    print("|---|---:|---:|---:|")
    rows = [
        ("bulk load (COPY + tallies), rows/s", single["load"], cluster["load"]),
        ("JSON ingest, calls/s", single["ingest"], cluster["ingest"]),
    ]
    for connections in (16, 64):
        s, c = single[f"wrk{connections}"], cluster[f"wrk{connections}"]
        rows.append((f"{connections} clients, req/s", s["rps"], c["rps"]))
        rows.append((f"{connections} clients, p50 ms", s["p50"], c["p50"]))
        rows.append((f"{connections} clients, p99 ms", s["p99"], c["p99"]))
        rows.append((f"{connections} clients, errors", s["errors"], c["errors"]))
    for label, s, c in rows:
        ratio = f"{c / s:.2f}" if s else "-"
        print(f"| {label} | {s:.1f} | {c:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
