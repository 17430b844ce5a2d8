"""A durable local queue of PBX events: written (fsync'd) before anything else happens to them,
removed only after the database has committed what they carry.

A local SQLite file apart from the service's database: it must keep working exactly when that
database is down. Kept to stdlib `sqlite3` for that reason.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


class Spool:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an event we accepted survives a power cut
        self._db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body TEXT)")

    def append(self, events: list[dict[str, str]]) -> None:
        if not events:
            return
        with self._db:  # one fsync'd transaction for a whole read
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO events (body) VALUES (?)", [(json.dumps(e),) for e in events]
            )

    def peek(self, limit: int) -> list[tuple[int, dict[str, str]]]:
        """The oldest events, in arrival order."""
        rows = self._db.execute(
            "SELECT id, body FROM events ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [(int(row[0]), json.loads(row[1])) for row in rows]

    def remove_through(self, last_id: int) -> None:
        self._db.execute("DELETE FROM events WHERE id <= ?", (last_id,))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        self._db.close()
