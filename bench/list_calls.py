"""Latency of GET /api/v1/call-history at scale, per query shape. Run by hand, not in CI.

    python -m bench.list_calls --calls 1000000                      # SQLite file in bench/data
    DATABASE_URL=postgresql://postgres@127.0.0.1/bench python -m bench.list_calls --calls 10000000
    ... --baseline ../old/src     # the same shapes, same database, served by another checkout

Seeds one big account (N calls over 60 days, the demo's mix) plus 10 smaller accounts (N/100 calls
each) once per database, in bulk (COPY on PostgreSQL), then ANALYZEs as autovacuum would. Measures
each shape of issue 10 through the real app (ASGI, in process): HTTP median and p99, and the ratio
of the median to the floor, the bare page fetch (`SELECT … LIMIT 20` of the account, no count)
measured in the same run. Then 500 random contract queries (every filter, sort, per_page, deep
pages, substrings of 1 to 12 characters).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy import Column, Engine, MetaData, Table, func, select, text

from callhistory import accounts, demo, migrate, store
from callhistory.api import create_app
from callhistory.config import Settings
from callhistory.schema import calls, make_engine

TZ = ZoneInfo("Asia/Tashkent")
BIG = "bench-big"
COLUMNS = (
    "account_id", "call_id", "pbx_call_id", "started_at", "answered_at", "ended_at", "src", "dst",
    "external_number", "duration", "conversation", "type", "status", "disposition", "legs",
    "recording", "created_at", "updated_at",
)  # fmt: skip


def _rows(account_id: int, size: int, now: datetime) -> Any:
    for c in demo.generate(account_id, size, now, TZ, seed=account_id):
        yield (
            account_id, c.call_id, c.pbx_call_id, c.started_at, c.answered_at, c.ended_at, c.src,
            c.dst, c.external_number, c.duration, c.conversation, int(c.type), int(c.status),
            c.disposition, c.legs, c.recording, now, now,
        )  # fmt: skip


#: Where `_load` puts the calls before it moves them in order.
_BENCH_LOAD = Table("bench_load", MetaData(), *(Column(n, calls.c[n].type) for n in COLUMNS))


def _load(engine: Engine, account_id: int, size: int, now: datetime, ordered: bool) -> None:
    """The account's `size` calls, `ordered` by their start (ids and table pages follow time, as
    a PBX that stores its calls as they end writes them) or in the generator's random order."""
    columns = ", ".join(COLUMNS)
    target = _BENCH_LOAD if ordered else calls
    with engine.begin() as conn:
        _BENCH_LOAD.drop(conn, checkfirst=True)  # a half-finished earlier seed's
        if ordered:  # loaded beside, then moved in order
            _BENCH_LOAD.create(conn)
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            with cursor.copy(f"COPY {target.name} ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in _rows(account_id, size, now):
                    copy.write_row(row)
            raw.commit()
        finally:
            raw.close()
    else:
        insert = target.insert()  # SQLite's datetimes as stored
        batch: list[dict[str, Any]] = []
        for row in _rows(account_id, size, now):
            batch.append(dict(zip(COLUMNS, row, strict=True)))
            if len(batch) == 50_000:
                with engine.begin() as conn:
                    conn.execute(insert, batch)
                batch = []
        if batch:
            with engine.begin() as conn:
                conn.execute(insert, batch)
    if ordered:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL work_mem = '1GB'")
            conn.exec_driver_sql(
                f"INSERT INTO calls ({columns}) SELECT {columns} FROM {_BENCH_LOAD.name}"
                " ORDER BY started_at, call_id"
            )
            _BENCH_LOAD.drop(conn)
    from callhistory import tallies  # here: a baseline checkout (--measure-only) may lack it

    with engine.begin() as conn:
        tallies.rebuild(conn, account_id)


@contextmanager
def _without_indexes(engine: Engine) -> Iterator[None]:
    """PostgreSQL, an empty `calls`: drop its indexes (the key aside) for the load and build them
    once after it, instead of updating all of them (three trigram GINs among them) row by row."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.begin() as conn:
        empty = conn.execute(select(calls.c.id).limit(1)).first() is None
        found = conn.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'calls'"
                 " AND indexname <> 'calls_pkey'")
        ).all() if empty else []  # fmt: skip
        for name, _ in found:
            conn.execute(text(f"DROP INDEX {name}"))
    try:
        yield
    finally:
        started = time.perf_counter()
        for _, definition in found:
            with engine.begin() as conn:
                conn.execute(text("SET maintenance_work_mem = '1GB'"))
                conn.execute(text(definition))
        if found:
            print(f"built {len(found)} indexes in {time.perf_counter() - started:.0f}s")


def seed(engine: Engine, big: int, ordered: bool = True) -> tuple[int, str]:
    """The big account's id and a token for it; loads only the accounts not loaded yet, their
    calls `ordered` by time (`_load`)."""
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
    loaded = False
    with _without_indexes(engine):
        for acc, size in sizes:
            with engine.connect() as conn:
                have = conn.execute(
                    select(func.count()).select_from(calls).where(calls.c.account_id == acc)
                ).scalar_one()
            if have >= size:
                continue
            assert have == 0, f"account {acc} is half loaded: drop the bench database"
            started = time.perf_counter()
            _load(engine, acc, size, now, ordered)
            took = time.perf_counter() - started
            print(f"loaded account {acc}: {size} calls in {took:.0f}s ({size / took:.0f}/s)")
            loaded = True
    if loaded:
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        else:
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
    return account_id, token


def add_layout(parser: argparse.ArgumentParser) -> None:
    """`--random-order`: seed a new database's calls in random physical order (ids and table
    pages unrelated to time; before 2026-11-29 every seed was so), not in time order."""
    parser.add_argument(
        "--random-order",
        action="store_true",
        help="seed the calls in random order, not in time order (a new database only)",
    )


def bench_database(migrated: bool = True) -> tuple[Settings, Engine]:
    """The benchmarks' settings and database: DATABASE_URL, else a SQLite file in bench/data;
    migrated unless asked not to (a baseline checkout may be older)."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=Path(__file__).parent / "data",
        database_url=os.environ.get("DATABASE_URL") or None,
        app_key="bench-key-" + "x" * 40,
    )
    settings.data_dir.mkdir(exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    if migrated:
        migrate.upgrade(engine)
    return settings, engine


def in_process(settings: Settings, engine: Engine) -> TestClient:
    """The app in this process, started as the server starts it (its lifespan run)."""
    client = TestClient(create_app(settings, engine))
    client.__enter__()
    return client


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


def bare_page(engine: Engine, account_id: int) -> None:
    """The floor of every measurement: one page of the account's calls, nothing counted."""
    with engine.connect() as conn:
        stmt = select(*store.CALL_COLUMNS).where(calls.c.account_id == account_id)
        conn.execute(stmt.order_by(calls.c.account_id, calls.c.id).limit(20)).all()


def shapes(day: str, total: int) -> dict[str, str]:
    week = (datetime.strptime(day, "%Y-%m-%d") - timedelta(days=6)).strftime("%Y-%m-%d")
    one_day = f"filter[from]={day}&filter[to]={day}"
    return {
        "default page": "",
        "sort=-datetime": "sort=-datetime",
        "filter[type]=2": "filter[type]=2",
        "filter[status]=2": "filter[status]=2",
        "one day (from/to)": one_day,
        "one week": f"filter[from]={week}&filter[to]={day}",
        "one day, 10:17:03 to 15:48:41": (f"filter[from]={day} 10:17:03&filter[to]={day} 15:48:41"),
        "type + status + one day": f"filter[type]=1&filter[status]=2&{one_day}",
        "filter[src]=1234": "filter[src]=1234",
        "filter[src]=10": "filter[src]=10",
        "filter[dst]=90": "filter[dst]=90",
        "filter[external_number]=7811": "filter[external_number]=7811",
        "filter[duration]=>60": "filter[duration]=>60",
        "filter[conversation]=<10": "filter[conversation]=<10",
        "page=1000": "page=1000",
        "page=last": f"page={max(1, -(-total // 20))}",
        "per_page=300": "per_page=300",
        "sort=-id": "sort=-id",
        "sort=-conversation + status=2": "sort=-conversation&filter[status]=2",
        "sort=duration + type=3 + status=1": "sort=duration&filter[type]=3&filter[status]=1",
        "sort=-duration, middle page": f"sort=-duration&page={max(1, total // 40)}",
        "middle page": f"page={max(1, total // 40)}",
        "sort=datetime, type=1, middle page": f"sort=datetime&filter[type]=1&page={total // 80}",
    }


def random_queries(rng: random.Random, day: datetime, total: int, n: int) -> list[str]:
    out = []
    for _ in range(n):
        params: list[str] = []
        for name in ("src", "dst", "external_number"):
            if rng.random() < 0.15:
                digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 12)))
                params.append(f"filter[{name}]={digits}")
        for name in ("duration", "conversation"):
            if rng.random() < 0.15:
                params.append(f"filter[{name}]={rng.choice(['', '>', '<', '>=', '<='])}"
                              f"{rng.randint(0, 300)}")  # fmt: skip
        if rng.random() < 0.3:
            params.append(f"filter[type]={rng.choice(['1', '2', '3', '1,2'])}")
        if rng.random() < 0.3:
            params.append(f"filter[status]={rng.choice(['1', '2'])}")
        if rng.random() < 0.4:
            start = day - timedelta(days=rng.randint(0, 60), seconds=rng.randint(0, 86400))
            end = start + timedelta(seconds=rng.randint(0, 20 * 86400))
            params.append(f"filter[from]={start:%Y-%m-%d %H:%M:%S}")
            params.append(f"filter[to]={end:%Y-%m-%d %H:%M:%S}")
        if rng.random() < 0.5:
            keys = rng.sample(["id", "datetime", "duration", "conversation"], rng.randint(1, 2))
            params.append("sort=" + ",".join(rng.choice(["", "-"]) + k for k in keys))
        per_page = rng.choice([10, 20, 20, 50, 100, 300])
        params.append(f"per_page={per_page}")
        pages = max(1, total // per_page)
        params.append(f"page={rng.choice([1, 1, 2, rng.randint(1, pages), pages])}")
        out.append("&".join(params))
    return out


def measure(
    engine: Engine, settings: Settings, token: str, args: argparse.Namespace
) -> dict[str, Any]:
    with engine.connect() as conn:
        account_id = accounts.find_account_by_name(conn, BIG)
        total = conn.execute(
            select(func.count()).select_from(calls).where(calls.c.account_id == account_id)
        ).scalar_one()
        latest = conn.execute(
            select(func.max(calls.c.started_at)).where(calls.c.account_id == account_id)
        ).scalar_one()
    day = (latest - timedelta(days=3)).strftime("%Y-%m-%d")
    client = in_process(settings, engine)
    headers = {"Authorization": f"Bearer {token}"}

    floor = timed(lambda: bare_page(engine, account_id), args.runs)
    result: dict[str, Any] = {"floor": floor, "shapes": {}, "random": []}
    for name, qs in shapes(day, total).items():
        url = f"/api/v1/call-history?{qs}"
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        http = timed(lambda url=url: client.get(url, headers=headers), args.runs)
        result["shapes"][name] = {"total": response.json()["meta"]["total"], "ms": http}
    rng = random.Random(500)
    for qs in random_queries(rng, datetime.strptime(day, "%Y-%m-%d"), total, args.random):
        started = time.perf_counter()
        response = client.get(f"/api/v1/call-history?{qs}", headers=headers)
        result["random"].append((time.perf_counter() - started) * 1000)
        result.setdefault("queries", []).append(qs)
        assert response.status_code == 200, (qs, response.text)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--random", type=int, default=500, help="random queries")
    parser.add_argument("--baseline", help="another checkout's src: measure it too, same data")
    parser.add_argument("--measure-only", metavar="TOKEN", help=argparse.SUPPRESS)
    add_layout(parser)
    args = parser.parse_args()

    if args.measure_only:  # the baseline's process: the database is seeded, maybe newer
        settings, engine = bench_database(migrated=False)
        print(json.dumps(measure(engine, settings, args.measure_only, args)))
        return
    settings, engine = bench_database()
    data_dir = settings.data_dir
    _, token = seed(engine, args.calls, not args.random_order)
    runs = {"new": measure(engine, settings, token, args)}
    saved = data_dir / f"list_calls-{engine.dialect.name}-{args.calls}.json"
    saved.write_text(json.dumps(runs))
    if args.baseline:
        env = {**os.environ, "PYTHONPATH": str(Path(args.baseline).resolve())}
        command = [sys.executable, "-m", "bench.list_calls", "--measure-only", token,
                   "--runs", str(args.runs), "--random", str(args.random)]  # fmt: skip
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"the baseline failed:\n{out.stderr}")
        runs["baseline"] = json.loads(out.stdout.splitlines()[-1])
        saved.write_text(json.dumps(runs))
    report(engine.dialect.name, args, runs)


def report(dialect: str, args: argparse.Namespace, runs: dict[str, Any]) -> None:
    new, base = runs["new"], runs.get("baseline")
    floor = statistics.median(new["floor"])
    print(f"\n{dialect}, {args.calls} calls in the big account, {args.runs} runs per shape")
    print(f"floor (bare page fetch): median {floor:.2f} ms, p99 {percentile(new['floor'], 99):.2f}")
    head = "| shape | total | median ms | p99 ms | median / floor |"
    rule = "|---|---:|---:|---:|---:|"
    if base:
        head += " baseline median | baseline p99 | p99 speed-up |"
        rule += "---:|---:|---:|"
    print(f"\n{head}\n{rule}")
    rows = [(name, str(shape["total"]), shape["ms"]) for name, shape in new["shapes"].items()]
    if new["random"]:
        rows.append((f"{args.random} random queries", "", new["random"]))
    for name, total, ms in rows:
        cells = [name, total, f"{statistics.median(ms):.1f}", f"{percentile(ms, 99):.1f}",
                 f"{statistics.median(ms) / floor:.0f}"]  # fmt: skip
        if base:
            old = base["random"] if not total else base["shapes"][name]["ms"]
            cells += [f"{statistics.median(old):.1f}", f"{percentile(old, 99):.1f}",
                      f"{percentile(old, 99) / percentile(ms, 99):.1f}x"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    slowest = sorted(zip(new["random"], new.get("queries", []), strict=False), reverse=True)[:15]
    print("\nslowest random queries (ms):")
    for ms, qs in slowest:
        print(f"  {ms:8.1f}  {qs}")


if __name__ == "__main__":
    main()
