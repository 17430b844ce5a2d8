"""Where recordings live, behind a small interface, and the rules for their paths.

Recordings are laid out as Asterisk's MixMonitor writes them, `YYYY/MM/DD/<name>.<ext>`, below
each account's own root (its configured directory, else RECORDINGS_DIR/<account id>): a path an
account gives is only ever resolved inside that account's root. `LocalStorage` serves a directory
(the PBX's monitor directory, shared or synced); an S3-compatible bucket can implement the same
protocol later without the API changing.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine

from callhistory import accounts, store

#: Content types by extension (lower-cased). Asterisk's `WAV`/`wav49` is GSM inside a RIFF WAV.
CONTENT_TYPES = {
    "wav": "audio/wav",
    "wav49": "audio/wav",
    "gsm": "audio/gsm",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "ulaw": "audio/basic",
    "alaw": "audio/x-alaw-basic",
    "sln": "audio/L16",
}


def safe_path(relative: str) -> bool:
    """A relative path that stays below the root: no `..`, `.`, empty or absolute parts, no
    backslash or NUL. (Symlinks are checked where the file is opened.)"""
    if not relative or relative.startswith("/") or "\\" in relative or "\0" in relative:
        return False
    return all(part not in ("", ".", "..") for part in relative.split("/"))


def content_type(relative: str) -> str:
    extension = relative.rsplit(".", 1)[-1].lower() if "." in relative else ""
    return CONTENT_TYPES.get(extension, "application/octet-stream")


@dataclass(frozen=True)
class StoredFile:
    path: Path
    size: int
    mtime: float
    stat: os.stat_result

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(f"{self.mtime}-{self.size}".encode()).hexdigest()[:32] + '"'

    @property
    def last_modified(self) -> str:
        return formatdate(self.mtime, usegmt=True)


class RecordingStorage(Protocol):
    def locate(self, relative: str) -> StoredFile | None:
        """The file for a recording path, or None when it is missing or not allowed."""

    def delete(self, relative: str) -> int | None:
        """Remove the file; its size in bytes, or None when it was not there."""


class LocalStorage:
    def __init__(self, root: Path):
        self.root = root

    def locate(self, relative: str) -> StoredFile | None:
        if not safe_path(relative):
            return None
        root = self.root.resolve()
        # resolve() follows symlinks: a link that points outside the root is refused.
        real = (root / relative).resolve()
        if not real.is_relative_to(root):
            return None
        try:
            info = real.stat()
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return StoredFile(real, info.st_size, info.st_mtime, info)

    def delete(self, relative: str) -> int | None:
        found = self.locate(relative)
        if found is None:
            return None
        try:
            found.path.unlink()
        except FileNotFoundError:
            return None
        return found.size


class AccountRoots:
    """Each account's storage, by account id. Roots are read from the database and kept for a few
    seconds, so a signed request (a browser seeking through a file) rarely touches it."""

    def __init__(self, base: Path, engine: Engine, cache_seconds: float = 10.0):
        self.base, self.engine, self.cache_seconds = base, engine, cache_seconds
        self._cache: dict[int, tuple[float, LocalStorage]] = {}
        self._lock = threading.Lock()

    def storage(self, account_id: int) -> LocalStorage:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(account_id)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        with self.engine.connect() as conn:
            storage = LocalStorage(accounts.recordings_root(conn, self.base, account_id))
        with self._lock:
            self._cache[account_id] = (now, storage)
        return storage


def delete_unshared(
    conn: Connection,
    storage: RecordingStorage,
    sharing: list[int],
    relative: str,
    *,
    dry_run: bool = False,
) -> int | str:
    """Delete a file of an account's storage, unless a call of an account `sharing` its root links
    it too. The bytes deleted (or that would be), else why not: "missing" or "shared"."""
    found = storage.locate(relative)
    if found is None:
        return "missing"
    if sharing and store.linked_by_any(conn, sharing, relative):
        return "shared"
    if dry_run:
        return found.size
    deleted = storage.delete(relative)
    return "missing" if deleted is None else deleted


@dataclass
class PurgeReport:
    calls: int = 0  # calls whose recording expired
    files: int = 0  # files deleted (or that would be, on a dry run)
    missing: int = 0  # links to files that were already gone
    shared: int = 0  # files kept: a call of another account sharing the root links them
    bytes: int = 0


def purge(
    engine: Engine,
    roots: AccountRoots,
    now: datetime,
    *,
    account_id: int | None = None,
    dry_run: bool = False,
    batch: int = 1000,
) -> PurgeReport:
    """Delete the recordings of calls older than their account's retention; clear the links. Only
    files below each account's own root are touched, and none another account's call links."""
    report = PurgeReport()
    with engine.connect() as conn:
        policies = accounts.retention_policies(conn, account_id)
    for account, days in policies:
        before = now - timedelta(days=days)
        after_pk = 0
        storage = roots.storage(account)
        with engine.connect() as conn:
            sharing = accounts.accounts_sharing_root(conn, roots.base, account)
        while True:
            with engine.begin() as conn:
                expired = store.recordings_started_before(conn, account, before, after_pk, batch)
                if not expired:
                    break
                after_pk = expired[-1][0]
                for _pk, relative in expired:
                    size = delete_unshared(conn, storage, sharing, relative, dry_run=dry_run)
                    if size == "missing":
                        report.missing += 1
                    elif size == "shared":
                        report.shared += 1
                    else:
                        assert isinstance(size, int)
                        report.files += 1
                        report.bytes += size
                report.calls += len(expired)
                if not dry_run:
                    store.clear_recordings(conn, account, [pk for pk, _ in expired])
    return report
