"""A real Asterisk (built by scripts/asterisk.sh) with the configuration of tests/pbx/, and SIPp
playing its phones 101-103 and the operator's trunk. Used by the tests marked `pbx`."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from callhistory.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "pbx" / "etc"
SCENARIOS = ROOT / "tests" / "pbx" / "sipp"
SIPP = shutil.which("sipp")
#: The number the operator's trunk calls from in the tests.
OUTSIDE_CALLER = "998901234567"


def prefix() -> Path:
    out = subprocess.run(
        [str(ROOT / "scripts" / "asterisk.sh"), "prefix"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def missing() -> str | None:
    """Why the real-PBX tests cannot run here, or None."""
    if not (prefix() / "sbin" / "asterisk").exists():
        return "Asterisk is not built: run `make asterisk` (scripts/asterisk.sh build)"
    if SIPP is None:
        return "SIPp is not installed: apt-get install sip-tester"
    return None


# Every port the test PBX uses lies in one block below the kernel's ephemeral range (32768 and
# up on Linux), so no socket the kernel numbers (a connection, a DNS lookup) can take one of them
# between calls: SIPp's media ports from the block's start (SIPp takes its port and the one 2
# above), Asterisk's RTP 5000 above, then the SIP and AMI ports. The process id picks the block.
BLOCK = 6100
BLOCKS = 3
#: Each port's offset in the block, and its kind.
_FIXED = {
    "sip": (6000, socket.SOCK_DGRAM), "ami": (6002, socket.SOCK_STREAM),
    "101": (6004, socket.SOCK_DGRAM), "102": (6006, socket.SOCK_DGRAM),
    "103": (6008, socket.SOCK_DGRAM), "trunk": (6010, socket.SOCK_DGRAM),
}  # fmt: skip


def _block() -> int:
    """The start of a block whose SIP and AMI ports are free."""
    first = os.getpid() % BLOCKS
    for n in range(BLOCKS):
        start = 10_000 + (first + n) % BLOCKS * BLOCK
        try:
            for offset, kind in _FIXED.values():
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.bind(("127.0.0.1", start + offset))
        except OSError:
            continue
        return start
    raise AssertionError("no free block of ports for the test PBX")


def _tone(path: Path) -> None:
    """One second of 440 Hz: what the PBX plays to callers it answers itself."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        samples = (int(8000 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(8000))
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))


@dataclass
class Pbx:
    dir: Path
    monitor: Path
    ports: dict[str, int] = field(default_factory=dict)
    media: Iterator[int] = field(default_factory=lambda: iter(range(0)))

    @property
    def master_csv(self) -> Path:
        return self.dir / "log" / "cdr-csv" / "Master.csv"

    def _asterisk(self, *args: str) -> list[str]:
        return [
            str(prefix() / "sbin" / "asterisk"),
            "-C",
            str(self.dir / "etc" / "asterisk.conf"),
            *args,
        ]

    def start(self) -> None:
        subprocess.run([str(ROOT / "scripts" / "asterisk.sh"), "start", str(self.dir)], check=True)

    def stop(self) -> None:
        subprocess.run([str(ROOT / "scripts" / "asterisk.sh"), "stop", str(self.dir)], check=True)

    def cli(self, command: str) -> str:
        done = subprocess.run(self._asterisk("-rx", command), capture_output=True, text=True)
        return done.stdout

    def cdr_lines(self) -> list[str]:
        if not self.master_csv.exists():
            return []
        return self.master_csv.read_text().splitlines()

    def idle(self, timeout: float = 15.0) -> None:
        """Wait until no channel is up (every CDR of the last call is written)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "0 active channels" in self.cli("core show channels count"):
                time.sleep(0.3)  # the CDR engine writes just after the hangup
                return
            time.sleep(0.2)
        raise AssertionError(f"channels still up: {self.cli('core show channels')}")

    def _sipp(self, scenario: str, port: int, *extra: str) -> list[str]:
        media = next(self.media)
        return [
            str(SIPP), "-sf", str(SCENARIOS / f"{scenario}.xml"), "-i", "127.0.0.1",
            "-p", str(port), "-mp", str(media), "-m", "1", "-timeout", "60s", "-nostdin",
            "-timeout_error", "-trace_err", *extra,
        ]  # fmt: skip

    @contextlib.contextmanager
    def phones(self, *behaviours: tuple[str, str, int]) -> Iterator[None]:
        """Phones (101, 102, 103 or "trunk") waiting for a call: `answer` after N ms and echo
        audio until hung up (`talk`: and speak), `ring` until cancelled, `busy`,
        `unavailable` (503), or `transfer` (blind) to the last phone listed. Each must see its
        call through."""
        running = []
        for who, behaviour, ms in behaviours:
            args = self._sipp(f"phone_{behaviour}", self.ports[who], "-d", str(ms), "-rtp_echo")
            if behaviour == "transfer":  # to the next phone listed
                args += ["-set", "target", behaviours[-1][0]]
            running.append((who, subprocess.Popen(args, cwd=self.dir / "sipp", **_quiet())))
        time.sleep(0.3)
        try:
            yield
        finally:
            for who, process in running:
                try:
                    code = process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    code = process.wait()
                assert code == 0, (
                    f"phone {who}: SIPp exited {code} (the call did not go as planned)"
                )

    def dial(self, caller: str, number: str, how: str, ms: int = 0) -> None:
        """`caller` (101..103, or "trunk" calling from OUTSIDE_CALLER) dials `number`: `talk` for
        ms after the answer, `cancel` after ringing ms, `refused` (busy...), `hear_hangup`."""
        calling = OUTSIDE_CALLER if caller == "trunk" else caller
        args = self._sipp(
            f"call_{how}", self.ports[caller], "-s", number, "-set", "caller", calling
        )
        args = [*args, "-d", str(ms), f"127.0.0.1:{self.ports['sip']}"]
        done = subprocess.run(args, cwd=self.dir / "sipp", timeout=90, **_quiet())
        assert done.returncode == 0, f"{caller} → {number} ({how}): SIPp exited {done.returncode}"
        self.idle()

    def originate(self, phone: str, number: str) -> None:
        """A call file in the spool, as click-to-call makes: ring `phone`, then dial `number`
        (context `callfile`). Returns at once; the phones' SIPp see the call through."""
        temporary = self.dir / "callfile.tmp"
        temporary.write_text(
            f"Channel: SIP/{phone}\nCallerID: <{phone}>\nContext: callfile\n"
            f"Extension: {number}\nPriority: 1\nMaxRetries: 0\nWaitTime: 20\n"
        )
        temporary.rename(self.dir / "spool" / "outgoing" / f"call-{time.monotonic_ns()}.call")


def _quiet() -> dict[str, object]:
    return {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


@contextlib.contextmanager
def running_pbx(base: Path, monitor: Path | None = None) -> Iterator[Pbx]:
    """A test PBX in `base`, started with the project's configuration; stopped at the end.
    MixMonitor records into `monitor` (default `base`/monitor)."""
    pbx = Pbx(base, monitor=monitor or base / "monitor")
    start = _block()
    pbx.ports = {who: start + offset for who, (offset, _) in _FIXED.items()}
    pbx.media = iter(range(start, start + 5000, 4))
    for folder in ("etc", "lib", "agi", "spool/outgoing", "run", "log/cdr-csv", "sipp"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    pbx.monitor.mkdir(parents=True, exist_ok=True)
    values = {
        "@DIR@": str(base), "@MONITOR@": str(pbx.monitor), "@PREFIX@": str(prefix()),
        "@AMI_PORT@": str(pbx.ports["ami"]),
        "@SIP_PORT@": str(pbx.ports["sip"]), "@RTP_START@": str(start + 5000),
        "@RTP_END@": str(start + 5998), "@PORT_101@": str(pbx.ports["101"]),
        "@PORT_102@": str(pbx.ports["102"]), "@PORT_103@": str(pbx.ports["103"]),
        "@PORT_TRUNK@": str(pbx.ports["trunk"]),
    }  # fmt: skip
    for source in CONFIG.glob("*.conf"):
        text = source.read_text()
        for key, value in values.items():
            text = text.replace(key, value)
        (base / "etc" / source.name).write_text(text)
    _tone(base / "tone.wav")
    pbx.start()
    try:
        yield pbx
    finally:
        pbx.stop()


# --- `make pbx-demo` / `make pbx-calls`: the test PBX by hand, feeding the demo database --------

DEMO_CALLS: list[tuple[str, tuple[tuple[str, str, int], ...], str, str, str, int]] = [
    ("101 calls 102, who answers", (("102", "talk", 1000),), "101", "102", "talk", 4000),
    ("a customer calls the DID; 101 rings, 102 answers",
     (("101", "ring", 0), ("102", "talk", 1500)), "trunk", "781130590", "talk", 5000),
    ("103 calls out; the line is busy", (("trunk", "busy", 0),), "103", "998901112233", "refused",
     0),
    ("a customer calls; nobody answers", (("101", "ring", 0), ("102", "ring", 0)), "trunk",
     "781130590", "hear_hangup", 0),
    ("101 checks voicemail (*98)", (), "101", "*98", "hear_hangup", 0),
]  # fmt: skip


def _saved(base: Path) -> Pbx:
    state = json.loads((base / "ports.json").read_text())
    media = iter(range(state["media"], state["media"] + 4000, 4))
    return Pbx(base, Path(state["monitor"]), state["ports"], media)


def _demo(base: Path, account: str) -> None:
    """Start the PBX, point the account at it, and run `callhistory ami` until Ctrl-C."""
    callhistory = str(Path(sys.executable).parent / "callhistory")
    configured = subprocess.run(
        [callhistory, "accounts", "configure", account, "--trunk", "SIP/operator-*",
         "--did", "781130590"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    root = json.loads(configured.stdout)["recordings_dir"]
    monitor = Path(root) if root else Settings().recordings_root.resolve() / account
    with running_pbx(base.resolve(), monitor) as pbx:
        media = next(pbx.media)
        state = {"ports": pbx.ports, "media": media + 400, "monitor": str(pbx.monitor)}
        (pbx.dir / "ports.json").write_text(json.dumps(state))
        print(f"test PBX up in {pbx.dir} (SIP {pbx.ports['sip']}, AMI {pbx.ports['ami']})")
        print("feeding its calls into account", account, "- place some with: make pbx-calls")
        feed = subprocess.Popen(
            [callhistory, "ami", "--account", account, "--port", str(pbx.ports["ami"]),
             "--username", "callhistory", "--secret", "test-secret"],
        )  # fmt: skip
        signal.signal(signal.SIGTERM, lambda *_: feed.terminate())
        try:
            feed.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the feed too: it stores what it has and stops
            feed.wait()


def _calls(base: Path) -> None:
    pbx = _saved(base.resolve())
    for title, phones, caller, number, how, ms in DEMO_CALLS:
        print(f"calling: {title}")
        with pbx.phones(*phones):
            pbx.dial(caller, number, how, ms)
    print("done: see them with  curl -H 'Authorization: Bearer ...' "
          "'http://127.0.0.1:8000/api/v1/call-history?sort=-datetime'")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("demo", "calls") or missing():
        sys.exit(missing() or "usage: python -m tests.realpbx demo DIR [ACCOUNT] | calls DIR")
    if sys.argv[1] == "demo":
        _demo(Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "1")
    else:
        _calls(Path(sys.argv[2]))
