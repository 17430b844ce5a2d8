"""What the benchmarks of a real `callhistory serve` share: a free port, the environment (a fresh
DATA_DIR, optionally another checkout's code), the demo seeded, the server started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(data_dir: Path | str, src: str | None) -> dict[str, str]:
    """The server's environment; `src` runs another checkout's code (a baseline)."""
    env = {**os.environ, "DATA_DIR": str(data_dir), "APP_KEY": "bench-key-" + "k" * 40}
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve())
    return env


def seed_demo(env: dict[str, str], calls: int) -> str:
    """`callhistory demo --calls N`; returns the demo token."""
    demo = subprocess.run(
        [sys.executable, "-m", "callhistory", "demo", "--calls", str(calls)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return demo.stdout.strip().splitlines()[-1].removeprefix("token: ")


def start_server(env: dict[str, str], port: int, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "callhistory", "serve", "--port", str(port), *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
