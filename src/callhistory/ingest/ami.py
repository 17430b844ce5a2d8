"""`callhistory ami`: the live feed of `Cdr` events from Asterisk's manager interface (AMI).

Two tasks share a durable spool. The reader logs in, reads `Key: Value` blocks and appends every
`Event: Cdr` to the spool before reading on; on any connection trouble it reconnects with
exponential backoff and jitter. The writer drains the spool in order into the database through
the same merge as the CSV import and removes events only after the commit; while the database is
down the events wait in the spool. Storing is idempotent per leg, so an event written twice (a
crash between commit and removal) is still one leg of one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from callhistory.ingest.cdr import BadCdr, Cdr, Clock, from_ami
from callhistory.ingest.pbx import Layout, Outcome, store_legs
from callhistory.ingest.spool import Spool
from callhistory.retry import backoff_delay

log = logging.getLogger("callhistory.ami")


class AmiError(Exception):
    """The manager refused us (bad login) or spoke something that is not AMI."""


@dataclass
class AmiSettings:
    host: str
    port: int
    username: str
    secret: str
    connect_timeout: float = 10.0
    ping_interval: float = 30.0  # silence after which we Ping; twice without an answer = dead
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    batch: int = 500
    db_retry: float = 2.0


@dataclass
class FeedStats:
    connections: int = 0
    events: int = 0
    rejected: int = 0
    stored: Outcome = field(default_factory=Outcome)


async def wait_for_event(event: asyncio.Event, seconds: float) -> None:
    """Sleep until `event` is set or `seconds` pass, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


class BlockReader:
    """AMI messages (`Key: Value` lines up to a blank line) from a stream. A timeout while a
    message is half-read keeps what was read, so waiting with short timeouts loses nothing."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader
        self.block: dict[str, str] = {}

    async def next(self, timeout: float) -> dict[str, str]:
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw.endswith(b"\n"):
                raise ConnectionError("connection closed")  # EOF, maybe mid-message
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line:
                if self.block:
                    block, self.block = self.block, {}
                    return block
                continue
            key, sep, value = line.partition(":")
            if sep:
                self.block[key.strip()] = value.strip()


class AmiFeed:
    def __init__(
        self,
        engine: Engine,
        account_id: int,
        layout: Layout,
        settings: AmiSettings,
        spool: Spool,
    ):
        """`layout` is the account's (`Layout.load`)."""
        self.engine, self.account_id, self.settings, self.spool = (
            engine,
            account_id,
            settings,
            spool,
        )
        self.layout = layout
        self.clock = Clock(layout.tz)
        self.stats = FeedStats()
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> FeedStats:
        """Read and store until `stop` is set; then store what the spool holds (if it can)."""
        writer = asyncio.create_task(self._write_loop(stop))
        reader = asyncio.create_task(self._read_loop(stop))
        await stop.wait()
        # Cancel until it ends: Python 3.11's asyncio.wait_for can swallow a cancellation that
        # meets a finishing read (gh-86296), and the reader then went on pinging forever.
        while not reader.done():
            reader.cancel()
            await asyncio.wait({reader}, timeout=1.0)
        await asyncio.gather(reader, return_exceptions=True)
        self._wake.set()
        await writer
        return self.stats

    # --- reading ------------------------------------------------------------------------------

    async def _read_loop(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                await self._session()
                attempt = 0  # a session that logged in and then dropped starts backoff over
            except asyncio.CancelledError:
                raise
            except AmiError as exc:
                log.error("AMI %s:%s refused us: %s", self.settings.host, self.settings.port, exc)
            except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.warning(
                    "AMI %s:%s connection lost: %s", self.settings.host, self.settings.port, exc
                )
            delay = backoff_delay(attempt, self.settings.backoff_initial, self.settings.backoff_max)
            attempt += 1
            log.info("reconnecting in %.1fs", delay)
            await wait_for_event(stop, delay)

    async def _session(self) -> None:
        s = self.settings
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(s.host, s.port), s.connect_timeout
        )
        try:
            banner = await asyncio.wait_for(reader.readline(), s.connect_timeout)
            if not banner.startswith(b"Asterisk Call Manager/"):
                raise AmiError(f"not an AMI banner: {banner[:60]!r}")
            writer.write(
                (
                    f"Action: Login\r\nActionID: callhistory-login\r\nUsername: {s.username}\r\n"
                    f"Secret: {s.secret}\r\nEvents: cdr\r\n\r\n"
                ).encode()
            )
            await writer.drain()
            blocks = BlockReader(reader)
            response = await blocks.next(s.connect_timeout)
            if response.get("Response") != "Success":
                raise AmiError(response.get("Message", "login failed"))
            self.stats.connections += 1
            log.info("AMI %s:%s logged in as %s", s.host, s.port, s.username)
            await self._read_events(blocks, writer)
        finally:
            writer.close()

    async def _read_events(self, blocks: BlockReader, writer: asyncio.StreamWriter) -> None:
        pending: list[dict[str, str]] = []
        silent = 0
        try:
            while True:
                try:
                    # While events are pending, a short pause means the burst is over.
                    block = await blocks.next(self.settings.ping_interval if not pending else 0.05)
                except TimeoutError:
                    if pending:  # make the burst durable, then wake the writer
                        self._spool(pending)
                        pending = []
                        continue
                    silent += 1
                    if silent > 1:
                        raise ConnectionError("no answer to Ping") from None
                    writer.write(b"Action: Ping\r\nActionID: callhistory-ping\r\n\r\n")
                    await writer.drain()
                    continue
                silent = 0
                if block.get("Event", "").lower() == "cdr":
                    pending.append(block)
                    if len(pending) >= self.settings.batch:
                        self._spool(pending)
                        pending = []
        finally:
            # Whatever ends the session (drop, stop), every complete event read is kept.
            self._spool(pending)

    def _spool(self, events: list[dict[str, str]]) -> None:
        if not events:
            return
        self.spool.append(events)
        self.stats.events += len(events)
        self._wake.set()

    # --- writing ------------------------------------------------------------------------------

    async def _write_loop(self, stop: asyncio.Event) -> None:
        while True:
            try:
                drained = await asyncio.to_thread(self._drain)
            except SQLAlchemyError as exc:
                log.warning(
                    "database unavailable (%s); events wait in the spool", exc.__class__.__name__
                )
                if stop.is_set():
                    log.warning(
                        "stopping with %d events spooled for the next start", len(self.spool)
                    )
                    return
                await asyncio.sleep(self.settings.db_retry)
                continue
            if stop.is_set() and not drained:
                return
            if not drained:
                self._wake.clear()
                await wait_for_event(self._wake, 1.0)

    def _read(self, event: dict[str, str]) -> Cdr:
        before = self.clock.guess.utc
        leg = self.clock.read(from_ami(event, None))
        if self.clock.guess.utc != before:
            log.info("AMI %s", self.clock.guess.explain(self.layout.tz))
        return leg

    def _drain(self) -> bool:
        """Store one batch from the spool; False when it was empty."""
        events = self.spool.peek(self.settings.batch)
        if not events:
            return False
        legs: list[Cdr] = []
        for event_id, event in events:
            try:
                legs.append(self._read(event))
            except BadCdr as exc:
                self.stats.rejected += 1
                log.warning("rejected AMI event %d (%s): %s", event_id, exc, event)
        with self.engine.begin() as conn:
            self.stats.stored += store_legs(conn, self.account_id, legs, self.layout)
        self.spool.remove_through(events[-1][0])
        return True
