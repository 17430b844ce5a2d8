"""Throughput of `import asterisk-csv` on a generated Master.csv. Run by hand, not in CI.

    DATABASE_URL=postgresql://postgres@127.0.0.1/bench_import \
        python -m bench.import_csv --lines 1000000
    python -m bench.import_csv --lines 1000000          # SQLite file in bench/data

The file holds realistic calls in 21-column layout: inbound ring groups (3 legs, the third phone
answers), outbound calls through the trunk and internal calls (1 leg each). The database must be
empty (a fresh one per run). On PostgreSQL the same file is also loaded with COPY into a bare table
of the same 21 columns: the floor any importer could reach, reported as a ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from callhistory import accounts, migrate, schema, tallies
from callhistory.classify import PbxConfig
from callhistory.config import Settings
from callhistory.ingest.asterisk_csv import BATCH_LINES, import_paths
from callhistory.ingest.cdr import decode, parse_csv_line
from callhistory.schema import make_engine

DATA = Path(__file__).parent / "data"


def q(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def cdr(
    src: str, dst: str, ctx: str, clid: str, chan: str, dchan: str, start: datetime,
    answer: datetime | None, end: datetime, disposition: str, uid: str, seq: int,
) -> str:  # fmt: skip
    fmt = "%Y-%m-%d %H:%M:%S"
    return ",".join(
        [
            q(""), q(src), q(dst), q(ctx), q(clid), q(chan), q(dchan), q("Dial"), q(f"{dchan},30"),
            q(start.strftime(fmt)), q(answer.strftime(fmt)) if answer else "", q(end.strftime(fmt)),
            str(int((end - start).total_seconds())),
            str(int((end - answer).total_seconds())) if answer else "0",
            q(disposition), q("DOCUMENTATION"), q(uid), q(""), q(""), q(uid), str(seq),
        ]
    )  # fmt: skip


def generate(path: Path, lines: int) -> None:
    rng = random.Random(1)
    t = datetime(2026, 1, 1, 8, 0, 0)
    written = seq = n = 0
    with path.open("w") as f:
        while written < lines:
            n += 1
            t += timedelta(seconds=rng.randint(1, 20))
            uid = f"{1767236400 + n}.{n}"
            kind = rng.random()
            if kind < 0.5:  # inbound ring group
                caller = f"99890{rng.randrange(10**7):07d}"
                ans = t + timedelta(seconds=rng.randint(3, 15))
                end = ans + timedelta(seconds=rng.randint(5, 300))
                for phone in ("101", "102", "103"):
                    seq += 1
                    answered = phone == "103"
                    disposition = "ANSWERED" if answered else "NO ANSWER"
                    f.write(cdr(caller, "600", "from-trunk", f'"{caller}" <{caller}>',
                                f"PJSIP/uztelecom-{n:08x}", f"PJSIP/{phone}-{seq:08x}", t,
                                ans if answered else None, end if answered else ans,
                                disposition, uid, seq) + "\n")  # fmt: skip
                written += 3
            else:
                seq += 1
                ext = str(rng.randint(100, 199))
                internal = kind > 0.85
                outside = f"99891{rng.randrange(10**7):07d}"
                dst = str(rng.randint(100, 199)) if internal else outside
                dchan = f"PJSIP/{dst}-{seq:08x}" if internal else f"PJSIP/uztelecom-{seq:08x}"
                answered = rng.random() < 0.7
                ans = t + timedelta(seconds=rng.randint(2, 20))
                end = ans + timedelta(seconds=rng.randint(5, 300) if answered else 0)
                f.write(cdr(ext, dst, "from-internal", f'"Ext {ext}" <{ext}>',
                            f"PJSIP/{ext}-{seq:08x}", dchan, t, ans if answered else None, end,
                            "ANSWERED" if answered else rng.choice(["NO ANSWER", "BUSY"]),
                            uid, seq) + "\n")  # fmt: skip
                written += 1


def machine_cpu() -> float:
    """Seconds of CPU the whole machine has spent busy (every process: the database's too), from
    /proc/stat: steadier than wall time on a shared machine, for comparing two runs' work."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / ticks


def _connect(url: str) -> Any:
    """A plain psycopg connection to the database (the floors run below SQLAlchemy)."""
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))


def copy_baseline(url: str, path: Path) -> float:
    """Seconds for PostgreSQL's own COPY of the file into a bare 21-column table."""
    columns = ", ".join(f"c{i} text" for i in range(21))
    with _connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS bare_cdr")
        conn.execute(f"CREATE UNLOGGED TABLE bare_cdr ({columns})")
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy("COPY bare_cdr FROM STDIN (FORMAT csv)") as copy,
            path.open("rb") as f,
        ):
            while chunk := f.read(1 << 20):
                copy.write(chunk)
        took = time.perf_counter() - started
        conn.execute("DROP TABLE bare_cdr")
    return took


@dataclass
class Floors:
    """The DDL of empty copies of `calls` and `call_legs` (`floor_calls`, `floor_legs`): `tables`
    makes them with their primary keys and the legs' foreign key to the calls, and each entry of
    `extras` adds one of what the real tables have besides (an index; on SQLite the FTS5 trigram
    table of the numbers, with its triggers)."""

    tables: list[str]
    extras: dict[str, list[str]]

    @classmethod
    def of(cls, conn: Connection) -> Floors:
        if conn.dialect.name == "postgresql":
            tables = [
                "CREATE TABLE floor_calls (LIKE calls INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
                "ALTER TABLE floor_calls ADD PRIMARY KEY (id)",
                "CREATE TABLE floor_legs (LIKE call_legs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
                "ALTER TABLE floor_legs ADD PRIMARY KEY (id)",
                "ALTER TABLE floor_legs ADD FOREIGN KEY (call_history_id)"
                " REFERENCES floor_calls (id)",
            ]
            rows = conn.execute(
                text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
                    " AND tablename IN ('calls', 'call_legs') AND indexname NOT LIKE '%%_pkey'"
                    " ORDER BY tablename DESC, indexname"
                )
            ).all()
            return cls(tables, {name: [_floored(sql)] for name, sql in rows})
        rows = conn.execute(
            text(
                "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND"
                " (tbl_name IN ('calls', 'call_legs') OR name = 'call_numbers')"
                " ORDER BY tbl_name DESC, type DESC, name"
            )
        ).all()
        tables = [_floored(sql) for kind, _, sql in rows if kind == "table" and "fts5" not in sql]
        extras: dict[str, list[str]] = {}
        for kind, name, sql in rows:
            if kind == "index":
                extras[name] = [_floored(sql)]
            elif name == "call_numbers" or kind == "trigger":  # the numbers' FTS5 table
                extras.setdefault("call_numbers (FTS5 trigram)", []).append(_floored(sql))
        return cls(tables, extras)


_FLOOR = {"calls": "floor_calls", "call_legs": "floor_legs", "call_numbers": "floor_numbers"}


def _floored(sql: str) -> str:
    """A statement that makes `calls`, `call_legs` or `call_numbers`, or one of their indexes or
    triggers, made for the floor copies (their objects' names prefixed with floor_)."""
    sql = re.sub(r"\b(call_legs|call_numbers|calls)\b", lambda m: _FLOOR[m[1]], sql)
    return re.sub(r"\b(INDEX|TRIGGER) (\w+)", r"\1 floor_\2", sql)


def indexed_floor(engine: Engine, batch: int, extras: Iterable[str] | None = None) -> float:
    """Seconds to write the rows the import stored (its calls and their legs, `batch` calls a
    transaction) into empty copies of `calls` and `call_legs` by plain INSERT ... SELECT: with
    the same indexes (on SQLite, the same numbers' FTS5 table) and foreign key, what keeping
    them costs any importer, whatever it does in Python, without the counters and rollups.
    `extras`: only these of `Floors.extras` besides the primary keys and foreign key (None:
    all)."""
    with engine.connect() as conn:
        floors = Floors.of(conn)
        ids = [row[0] for row in conn.execute(text("SELECT id FROM calls ORDER BY id"))]
        conn.rollback()
        statements = list(floors.tables)
        for name in floors.extras if extras is None else extras:
            statements += floors.extras[name]
        with conn.begin():
            _drop_floors(conn)
            for statement in statements:
                conn.exec_driver_sql(statement)
        started = time.perf_counter()
        for first in range(0, len(ids), batch):
            bounds = {"lo": ids[first], "hi": ids[min(first + batch, len(ids)) - 1]}
            with conn.begin():
                conn.execute(
                    text(
                        "INSERT INTO floor_calls SELECT * FROM calls WHERE id BETWEEN :lo AND :hi"
                    ),
                    bounds,
                )
                conn.execute(
                    text(
                        "INSERT INTO floor_legs SELECT * FROM call_legs"
                        " WHERE call_history_id BETWEEN :lo AND :hi"
                    ),
                    bounds,
                )
        took = time.perf_counter() - started
        with conn.begin():
            _drop_floors(conn)
    return took


def _drop_floors(conn: Connection) -> None:
    for table in ("floor_numbers", "floor_legs", "floor_calls"):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


def index_costs(engine: Engine, batch: int, lines: int) -> None:
    """Print what each index of `calls` and `call_legs` (on SQLite, also the numbers' FTS5
    table) costs on its own: the floor with it and the primary keys, less the floor with the
    primary keys alone, in µs per CDR line."""
    with engine.connect() as conn:
        names = list(Floors.of(conn).extras)
    bare = indexed_floor(engine, batch, extras=[])
    print(f"\nthe stored calls and legs with their primary keys and foreign key alone: "
          f"{bare:.1f}s, {lines / bare:.0f} lines/s; each of the rest on its own, "
          "added:")  # fmt: skip
    print("\n| index | seconds | µs a line |\n|---|---:|---:|")
    costs = {name: indexed_floor(engine, batch, extras=[name]) - bare for name in names}
    for name, cost in sorted(costs.items(), key=lambda item: -item[1]):
        print(f"| {name} | {cost:.2f} | {cost / lines * 1e6:.1f} |")
    print(f"| all of them (summed) | {sum(costs.values()):.2f} | "
          f"{sum(costs.values()) / lines * 1e6:.1f} |")  # fmt: skip


def parse_floor(path: Path) -> float:
    """Seconds for this process to read the file and parse each line into a leg
    (`parse_csv_line`), as the import's reader does: the most one core could import, whatever
    the database."""
    started = time.perf_counter()
    with path.open("rb") as f:
        for raw in f:
            line = raw.rstrip(b"\r\n")
            if line.strip():
                parse_csv_line(decode(line), None)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument(
        "--without-rollups",
        action="store_true",
        help="keep no counters or rollups (a batch's calls are neither tallied nor added): "
        "what keeping them costs",
    )
    parser.add_argument(
        "--without-statistics",
        action="store_true",
        help="keep the list's counters (call_counts, call_rollups, id_counts, id_spans, "
        "length_counts, length_pairs, gram_counts) but not the rollups only the Statistics API "
        "reads (hour_rollups, number_rollups, wait_rollups, callers, caller_gaps, "
        "missed calls): what those cost",
    )
    parser.add_argument(
        "--index-costs",
        action="store_true",
        help="after the import, also write its calls and legs into copies of their tables with "
        "each index on its own: what each index costs",
    )
    args = parser.parse_args()
    if args.without_statistics:
        statistics_only = (schema.hour_rollups, schema.number_rollups, schema.wait_rollups)
        kept = tallies._only
        tallies._only = lambda counted, *tables: kept(  # type: ignore[assignment]
            counted, *(t for t in tables if t not in statistics_only)
        )
        tallies._move_numbers = lambda *args, **kwargs: None  # type: ignore[assignment]
        tallies._add_firsts = lambda *args, **kwargs: None  # type: ignore[assignment]
    if args.without_rollups:
        tallies.Tally.count = lambda self, call, sign: None  # type: ignore[method-assign]
        tallies.add = lambda conn, account_id, tally: None  # type: ignore[assignment]
        tallies.add_stored = lambda conn, account_id, ids, started: None  # type: ignore[assignment]
    DATA.mkdir(exist_ok=True)
    path = DATA / f"Master-{args.lines}.csv"
    if not path.exists():
        generate(path, args.lines)
    size_mb = path.stat().st_size / 1e6

    url = os.environ.get("DATABASE_URL") or None
    sqlite_file = DATA / "import.sqlite3"
    if url is None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)
    settings = Settings(
        _env_file=None, data_dir=DATA, database_url=url or f"sqlite:///{sqlite_file}"
    )  # type: ignore[call-arg]
    engine = make_engine(settings.sqlalchemy_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        account = accounts.create_account(conn, "import-bench")
        accounts.set_pbx_config(
            conn, account, PbxConfig(trunks=("PJSIP/uztelecom-*",), dids=("781130590",))
        )

    started, machine = time.perf_counter(), machine_cpu()
    mine = resource.getrusage(resource.RUSAGE_SELF)
    report = import_paths(engine, account, [str(path)], gmt=False)
    took = time.perf_counter() - started
    machine = machine_cpu() - machine
    after = resource.getrusage(resource.RUSAGE_SELF)
    own = after.ru_utime + after.ru_stime - mine.ru_utime - mine.ru_stime
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT COUNT(*) FROM calls")).scalar_one()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kept = "counters and rollups kept"
    if args.without_rollups:
        kept = "no counters or rollups"
    elif args.without_statistics:
        kept = "the list's counters kept, not the Statistics API's rollups"
    print(f"\n{engine.dialect.name}: {args.lines} lines ({size_mb:.0f} MB), {kept}")
    print(f"import: {took:.1f}s, {report.lines_read / took:.0f} lines/s; calls created "
          f"{report.outcome.created} (stored {stored}); bad lines {len(report.bad)}; "
          f"max RSS {rss_mb:.0f} MB")  # fmt: skip
    print(f"CPU: {own:.1f}s in this process, {machine:.1f}s on the whole machine (the database's "
          f"included), {machine / report.lines_read * 1e6:.0f} µs a line")  # fmt: skip
    if engine.dialect.name == "postgresql":
        copy = copy_baseline(settings.sqlalchemy_url, path)
        print(f"COPY into a bare table: {copy:.1f}s, {args.lines / copy:.0f} lines/s; "
              f"import/COPY time ratio {took / copy:.1f}x")  # fmt: skip
    per_batch = max(1, stored * BATCH_LINES // args.lines)  # the calls of one import batch
    floor = indexed_floor(engine, per_batch)
    print(f"the stored calls and legs alone, into empty copies of their tables with the same "
          f"indexes: {floor:.1f}s, {args.lines / floor:.0f} lines/s; import/that ratio "
          f"{took / floor:.1f}x")  # fmt: skip
    parsing = parse_floor(path)
    print(f"reading and parsing the file alone, in one process: {parsing:.1f}s, "
          f"{args.lines / parsing:.0f} lines/s")  # fmt: skip
    if args.index_costs:
        index_costs(engine, per_batch, args.lines)


if __name__ == "__main__":
    main()
