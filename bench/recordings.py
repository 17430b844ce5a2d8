"""Serving recordings: a 5 MB file to 20 concurrent range readers. Run by hand, not in CI.

    python -m bench.recordings [--seconds 10] [--readers 20]

Starts `callhistory serve` (uvicorn, one process) on a temporary data folder, then 20 concurrent
clients fetch random 256 KiB ranges of a 5 MB WAV by its signed URL, then whole-file GETs. Reports
throughput, latency and the server's resident memory before and after (it should stay flat: files
are streamed in 64 KiB chunks, never read whole). The baseline is reading the same ranges straight
from the file in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx

from callhistory import signing

SIZE = 5 * 1024 * 1024
CHUNK = 256 * 1024
REC = "2026/01/13/bench.wav"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def readers(url: str, n: int, seconds: float, ranged: bool) -> tuple[int, list[float]]:
    latencies: list[float] = []
    total = 0
    deadline = time.monotonic() + seconds

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal total
        rng = random.Random()
        while time.monotonic() < deadline:
            headers = {}
            if ranged:
                start = rng.randrange(0, SIZE - CHUNK)
                headers["Range"] = f"bytes={start}-{start + CHUNK - 1}"
            started = time.perf_counter()
            response = await client.get(url, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == (206 if ranged else 200), response.status_code
            total += len(response.content)

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(one(client) for _ in range(n)))
    return total, latencies


def disk_baseline(path: Path, seconds: float) -> float:
    """MB/s reading random 256 KiB ranges from the file directly."""
    total = 0
    deadline = time.monotonic() + seconds
    rng = random.Random(1)
    with path.open("rb") as f:
        while time.monotonic() < deadline:
            f.seek(rng.randrange(0, SIZE - CHUNK))
            total += len(f.read(CHUNK))
    return total / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "monitor"
        # account 1's own root: RECORDINGS_DIR/1
        (root / "1" / REC).parent.mkdir(parents=True)
        (root / "1" / REC).write_bytes(b"RIFF" + os.urandom(SIZE - 4))
        key = "bench-key-" + "k" * 40
        env = {**os.environ, "DATA_DIR": tmp, "RECORDINGS_DIR": str(root), "APP_KEY": key}
        env.pop("DATABASE_URL", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "callhistory", "serve", "--port", str(args.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = (
            f"http://127.0.0.1:{args.port}/storage/monitor/{REC}"
            f"?account=1&signature={signing.signature(key.encode(), 1, REC)}"
        )
        try:
            for _ in range(100):
                try:
                    if httpx.head(url).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            before = rss_mb(server.pid)
            print(f"\n{args.readers} concurrent readers, {args.seconds:.0f}s each run, 5 MB file")
            print("| run | requests | MB/s | median ms | p99 ms | server RSS MB |")
            print("|---|---:|---:|---:|---:|---:|")
            print(f"| (server idle) | | | | | {before:.0f} |")
            for label, ranged in (("256 KiB ranges", True), ("whole file", False)):
                total, lat = asyncio.run(readers(url, args.readers, args.seconds, ranged))
                lat.sort()
                print(
                    f"| {label} | {len(lat)} | {total / args.seconds / 1e6:.0f} | "
                    f"{statistics.median(lat):.1f} | {lat[int(0.99 * (len(lat) - 1))]:.1f} | "
                    f"{rss_mb(server.pid):.0f} |"
                )
            print(f"| baseline: the same ranges read from disk in-process | | "
                  f"{disk_baseline(root / '1' / REC, args.seconds / 2):.0f} | | | |")  # fmt: skip
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
