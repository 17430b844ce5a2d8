"""Requests per second of a real `callhistory serve`, loaded by wrk on the same machine.

    python -m bench.serve_wrk [--calls 50000] [--workers 1,2] [--connections 16,64] [--seconds 20]
                              [--src OTHER_CHECKOUT/src] [--token TOKEN]

Seeds the demo account (`callhistory demo --calls N`) in a fresh SQLite folder (or the database
DATABASE_URL names), or with `--token` serves the database DATABASE_URL names as it is (the 10M
calls of `bench/list_calls.py`: `callhistory tokens create --email bench@example.com`). Then for
each worker count starts `callhistory serve --workers W` and runs `wrk --latency` against the
default page of GET /api/v1/call-history with the token, once per connection count. Prints req/s,
p50/p99 (wrk's), errors, the server's CPU per request (all its processes, from /proc) and wrk's
own CPU share, and on PostgreSQL the database's CPU per request (every local `postgres` process).
Needs Debian's `wrk`.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from callhistory.schema import make_engine

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes() -> dict[int, tuple[str, list[str]]]:
    """Every process in /proc: its command name and the fields of its `stat` after the name."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                head, _, rest = (entry / "stat").read_text().rpartition(")")
            except OSError:
                continue
            found[int(entry.name)] = (head.partition("(")[2], rest.split())
    return found


def cpu_seconds(fields: list[str]) -> float:
    """utime + stime, from a process's `stat` fields after its name."""
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and all its descendants (uvicorn's workers)."""
    found = processes()
    children: dict[int, list[int]] = {}
    for child, (_, fields) in found.items():
        children.setdefault(int(fields[1]), []).append(child)
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in found:
            total += cpu_seconds(found[current][1])
        todo += children.get(current, [])
    return total


def postgres_cpu_seconds() -> float:
    """CPU of every local PostgreSQL process (its backends plan and run the queries)."""
    return sum(cpu_seconds(fields) for name, fields in processes().values() if name == "postgres")


def to_ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:  # wrk prints -nan when nothing came back
        return float("nan")
    value, unit = found.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def latency(out: str, percent: int) -> str:
    """A percentile of wrk's latency distribution: its own line (a "+/- Stdev" column such as
    `90.50%` must not pass for the 50% line)."""
    found = re.search(rf"^\s+{percent}%\s+(\S+)", out, re.MULTILINE)
    return found.group(1) if found else "-nan"


def run_wrk(url: str, connections: int, seconds: int, *options: str) -> dict[str, float]:
    """wrk with two threads; `options` say what each request carries (`-H` a header, `-s` a
    Lua script)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", *options, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": to_ms(latency(out, 50)),
        "p99": to_ms(latency(out, 99)),
        "errors": errors,
        "wrk_cpu": wrk_cpu,
    }


def start_server(env: dict[str, str], workers: int | None) -> tuple[subprocess.Popen[bytes], str]:
    """`callhistory serve` on a free port (`--workers` unless None), once it answers HTTP; the
    process and the list's URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "callhistory", "serve", "--port", str(port),
         *(["--workers", str(workers)] if workers else [])],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/v1/call-history"
    for _ in range(600):
        try:
            httpx.get(url, timeout=5)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return server, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--src", help="serve from another checkout's src (a baseline)")
    parser.add_argument("--token", help="serve DATABASE_URL as it is, reading with this token")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    env = {**os.environ, "DATA_DIR": str(data), "APP_KEY": "bench-" + "k" * 40}
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    if args.token:
        if not os.environ.get("DATABASE_URL"):
            sys.exit("--token serves the database DATABASE_URL names")
        token = args.token
    else:
        seeded = subprocess.run(
            [sys.executable, "-m", "callhistory", "demo", "--calls", str(args.calls)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        token = seeded.stdout.strip().splitlines()[-1].removeprefix("token: ")
    if os.environ.get("DATABASE_URL") and not args.token:  # as autovacuum would after the load
        engine = make_engine(os.environ["DATABASE_URL"])
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        engine.dispose()
    database = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    calls = "the database's" if args.token else f"{args.calls} demo"
    print(f"{calls} calls on {database}, {os.cpu_count()} cores, wrk -t2 for")
    print(f"{args.seconds} s per line on the default page\n")
    print(
        "| workers | connections | req/s | p50 ms | p99 ms | errors | server CPU ms/req "
        "| PostgreSQL CPU ms/req | wrk CPU |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    bearer = ("-H", f"Authorization: Bearer {token}")
    for workers in (int(w) for w in args.workers.split(",")):
        server, url = start_server(env, workers)
        try:
            run_wrk(url, 16, 3, *bearer)  # warm every worker
            for connections in (int(c) for c in args.connections.split(",")):
                cpu_before, db_before = tree_cpu_seconds(server.pid), postgres_cpu_seconds()
                result = run_wrk(url, connections, args.seconds, *bearer)
                cpu = tree_cpu_seconds(server.pid) - cpu_before
                db = postgres_cpu_seconds() - db_before
                requests = max(result["requests"], 1)
                print(
                    f"| {workers} | {connections} | {result['rps']:.0f} | {result['p50']:.1f} "
                    f"| {result['p99']:.1f} | {result['errors']:.0f} "
                    f"| {cpu * 1000 / requests:.2f} "
                    f"| {f'{db * 1000 / requests:.2f}' if database == 'PostgreSQL' else '-'} "
                    f"| {result['wrk_cpu'] / args.seconds:.0%} |",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
