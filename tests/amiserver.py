"""A small Asterisk manager (AMI) server on loopback for tests: the real wire protocol.

It greets with the banner, answers `Action: Login` (and `Ping`), then streams its events as
`Key: Value` blocks ending in a blank line. `drop_after_events` makes it cut the connection in the
middle of the next event, as a PBX restart would; the events from there are sent again to the next
connection, like a PBX whose events the client must not lose or double.
"""

from __future__ import annotations

import asyncio
import contextlib


def block(fields: dict[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n"


class FakeAmi:
    def __init__(self, events: list[dict[str, str]], username: str = "cdr", secret: str = "s3cret"):
        self.events = events
        self.username, self.secret = username, secret
        self.sent = 0  # events fully sent (the cursor survives reconnects)
        self.drop_after_events: list[int] = []  # cut the connection once this many were sent
        self.logins = 0
        self.refused_logins = 0
        self.pings = 0
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _read_action(self, reader: asyncio.StreamReader) -> dict[str, str]:
        fields: dict[str, str] = {}
        while True:
            line = (await reader.readline()).decode().rstrip("\r\n")
            if not line:
                return fields
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"Asterisk Call Manager/9.0.0\r\n")
            login = await self._read_action(reader)
            if (login.get("Action"), login.get("Username"), login.get("Secret")) != (
                "Login",
                self.username,
                self.secret,
            ):
                self.refused_logins += 1
                writer.write(block({"Response": "Error", "ActionID": login.get("ActionID", ""),
                                    "Message": "Authentication failed"}))  # fmt: skip
                await writer.drain()
                return
            self.logins += 1
            writer.write(block({"Response": "Success", "ActionID": login.get("ActionID", ""),
                                "Message": "Authentication accepted"}))  # fmt: skip
            writer.write(block({"Event": "FullyBooted", "Privilege": "system,all",
                                "Status": "Fully Booted"}))  # fmt: skip
            pinger = asyncio.create_task(self._answer_pings(reader, writer))
            try:
                while self.sent < len(self.events):
                    data = block(self.events[self.sent])
                    if self.drop_after_events and self.sent >= self.drop_after_events[0]:
                        self.drop_after_events.pop(0)
                        writer.write(data[: len(data) // 2])  # half an event, then the line dies
                        await writer.drain()
                        return
                    writer.write(data)
                    self.sent += 1
                    if self.sent % 50 == 0:
                        await writer.drain()
                await writer.drain()
                await asyncio.sleep(3600)  # idle, like a PBX with no calls
            finally:
                pinger.cancel()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer_pings(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            action = await self._read_action(reader)
            if not action:
                return
            if action.get("Action") == "Ping":
                self.pings += 1
                writer.write(block({"Response": "Success", "ActionID": action.get("ActionID", ""),
                                    "Ping": "Pong"}))  # fmt: skip
