"""A login flood against a real `callhistory serve`: its memory, and the API latency meanwhile.

    python -m bench.login_flood [--clients 40] [--seconds 10] [--src OTHER_CHECKOUT/src]

40 clients POST /api/v1/auth/login with random emails as fast as they can while one client lists
calls; prints the server's RSS before and at its peak, and the list's median/p99 before and during.
`--src` runs the server from another checkout (e.g. a worktree of an older commit) for a baseline.
SQLite by default (DATABASE_URL is honoured).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def list_latencies(client: httpx.AsyncClient, token: str, until: float) -> list[float]:
    times: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < until:
        started = time.perf_counter()
        response = await client.get("/api/v1/call-history", headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return times


async def flood(client: httpx.AsyncClient, until: float, outcomes: Counter[int]) -> None:
    while time.monotonic() < until:
        body = {"email": f"{secrets.token_hex(6)}@example.com", "password": "guess-a-password"}
        try:
            response = await client.post("/api/v1/auth/login", json=body)
            outcomes[response.status_code] += 1
        except httpx.HTTPError:
            outcomes[0] += 1


async def run(base: str, token: str, pid: int, clients: int, seconds: float) -> None:
    limits = httpx.Limits(max_connections=clients + 5)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        await list_latencies(client, token, time.monotonic() + 1)  # warm up
        rss_before = rss_mb(pid)
        quiet = await list_latencies(client, token, time.monotonic() + seconds / 2)
        outcomes: Counter[int] = Counter()
        peak = rss_before
        until = time.monotonic() + seconds

        async def sample() -> None:
            nonlocal peak
            while time.monotonic() < until:
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.1)

        results = await asyncio.gather(
            list_latencies(client, token, until),
            sample(),
            *(flood(client, until, outcomes) for _ in range(clients)),
        )
        during = results[0]
    print(f"| server RSS before | {rss_before:.0f} MB | peak during the flood | {peak:.0f} MB "
          f"(+{peak - rss_before:.0f} MB) |")  # fmt: skip
    print(f"| list, quiet | median {statistics.median(quiet):.1f} ms | "
          f"p99 {pct(quiet, 0.99):.1f} ms | {len(quiet)} requests |")  # fmt: skip
    print(f"| list, during the flood | median {statistics.median(during):.1f} ms | "
          f"p99 {pct(during, 0.99):.1f} ms | {len(during)} requests |")  # fmt: skip
    print(f"| logins | {sum(outcomes.values())} in {seconds:.0f} s | "
          f"{dict(sorted(outcomes.items()))} | |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--src", help="run the server from this source folder (a baseline)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DATA_DIR": tmp, "APP_KEY": "bench-key-" + "k" * 40}
        if args.src:
            env["PYTHONPATH"] = str(Path(args.src).resolve())
        demo = subprocess.run(
            [sys.executable, "-m", "callhistory", "demo", "--calls", "3000"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        token = demo.stdout.strip().splitlines()[-1].removeprefix("token: ")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "callhistory", "serve", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(base + "/openapi.json")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            print(f"login flood: {args.clients} clients, {args.seconds:.0f} s, "
                  f"server from {args.src or 'this checkout'}")  # fmt: skip
            asyncio.run(run(base, token, server.pid, args.clients, args.seconds))
        finally:
            server.terminate()
            server.wait(20)


if __name__ == "__main__":
    main()
