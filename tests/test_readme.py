"""The README's examples work verbatim on `make run`'s demo data: every `curl` command of its `sh`
blocks runs, in the README's order, in bash against a real `callhistory serve` over a fresh demo
database (SQLite, as `make run`), with the token the demo prints. Only the port is changed
(`127.0.0.1:8000` → a free one). Each must exit 0 and answer what it says: JSON that is not an
error body, a list that is not empty (unless its period is today, which may rightly be empty just
after midnight), a downloaded recording that is a WAV file."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: Lines that only stand for something the reader fills in.
PLACEHOLDERS = re.compile(r"^TOKEN=")

pytestmark = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("jq")) and not os.environ.get("CI"),
    reason="needs curl and jq (CI installs them)",
)


def commands(text: str) -> list[str]:
    """Every command of the README's sh blocks that calls the API (curl, or a variable assigned
    from curl, or API=), continuation lines joined, in order."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        pending = ""
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            pending = f"{pending}\n{line}" if pending else line.strip()
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # a quote still open: the command goes on (a JSON body)
                continue
            command, pending = pending, ""
            if PLACEHOLDERS.match(command):
                continue
            if command.startswith(("curl ", "API=")) or re.match(r"[A-Z]+=\$\(curl ", command):
                found.append(command)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, str]]:
    data = tmp_path_factory.mktemp("readme")
    env = {**os.environ, "DATA_DIR": str(data)}
    env.pop("DATABASE_URL", None)
    env.pop("APP_KEY", None)
    callhistory = [sys.executable, "-m", "callhistory"]
    demo = subprocess.run(
        [*callhistory, "demo", "--calls", "3000"], env=env, capture_output=True, text=True,
        check=True, timeout=300,
    )  # fmt: skip
    token = demo.stdout.strip().splitlines()[-1].removeprefix("token: ")
    port = free_port()
    server = subprocess.Popen(
        [*callhistory, "serve", "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield data, port, token
    finally:
        server.terminate()
        server.wait(10)


def test_readme_commands_are_found() -> None:
    found = commands(README.read_text())
    assert len(found) >= 15, found
    assert any("$CALL" in c for c in found) and any(c.startswith("API=") for c in found)


def test_every_readme_example_works_on_the_demo(
    demo_server: tuple[Path, int, str], tmp_path: Path
) -> None:
    _, port, token = demo_server
    found = [c.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for c in commands(README.read_text())]
    # One bash runs them all in order (assignments carry over), each to its own output file.
    script = ["set -u"]
    for n, command in enumerate(found):
        variable = re.match(r"([A-Z]+)=", command)
        if variable:
            script += [command, f'printf %s "${variable.group(1)}" > out.{n}; echo $? > rc.{n}']
        else:
            script.append(f"{{ {command}\n}} > out.{n} 2> err.{n}; echo $? > rc.{n}")
    env = {**os.environ, "TOKEN": token}
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, timeout=120)
    for n, command in enumerate(found):
        assert (tmp_path / f"rc.{n}").read_text().strip() == "0", command
        output = (tmp_path / f"out.{n}").read_bytes()
        if command.startswith(("API=", "CALL=")):
            assert re.fullmatch(rb"\d+|http://\S+", output), (command, output)
            continue
        if "-O " in command:
            downloads = list(tmp_path.glob("clip-*.wav"))
            assert downloads and downloads[0].read_bytes()[:4] == b"RIFF", command
            continue
        if "-o part.wav" in command:
            part = (tmp_path / "part.wav").read_bytes()
            assert part[:4] == b"RIFF" and len(part) <= 65536, command
            continue
        if "-X DELETE" in command:
            assert output == b"", (command, output)
            continue
        body = json.loads(output)
        assert not (isinstance(body, dict) and "message" in body and "status" not in body), (
            command,
            body,
        )
        if isinstance(body, dict) and isinstance(body.get("data"), list):
            assert body["data"] or "date +%F" in command, (command, body)
