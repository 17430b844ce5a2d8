"""`callhistory import asterisk-csv`: Master.csv files → calls, streaming, batched, resumable.

Each batch of lines is one transaction that also records how far the file was read, so an
interrupted import resumes where it stopped, and a file that grew (Asterisk appends) is read from
where the last import ended. Re-reading lines is harmless anyway: every leg is recognised by its
key. Memory stays flat: lines are read one batch at a time.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from callhistory import accounts, cdrstore
from callhistory.ingest.cdr import BadCdr, Cdr, decode, parse_csv_line
from callhistory.ingest.pbx import Outcome, store_legs

BATCH_LINES = 5000
STDIN = "-"


@dataclass(frozen=True)
class BadLine:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class Report:
    lines_read: int = 0
    lines_skipped: int = 0  # already imported earlier (resumed past them)
    outcome: Outcome = field(default_factory=Outcome)
    bad: list[BadLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: progress(bytes_done_in_this_file, lines_read_in_total)
Progress = Callable[[int, int], None]


def _lines(stream: BinaryIO, number: int, offset: int) -> Iterator[tuple[int, int, bytes, bool]]:
    """(line number, byte offset after it, raw line, complete?) from the stream's position."""
    for raw in stream:
        number += 1
        offset += len(raw)
        complete = raw.endswith(b"\n")
        yield number, offset, raw.rstrip(b"\r\n"), complete


def import_stream(
    engine: Engine,
    account_id: int,
    stream: BinaryIO,
    *,
    label: str,
    resume_key: str | None,
    gmt: bool,
    report: Report,
    progress: Progress | None = None,
) -> None:
    """Import one Master.csv stream. `resume_key` (the file's absolute path) makes it resumable;
    `label` is how lines are named in the report."""
    with engine.connect() as conn:
        config, account_tz = accounts.pbx_settings(conn, account_id)
    tz: ZoneInfo | None = None if gmt else account_tz
    head = ""
    start_line = 0
    if resume_key is not None:
        head = hashlib.sha256(stream.readline()).hexdigest()
        stream.seek(0)
        with engine.connect() as conn:
            offset, start_line = cdrstore.import_offset(conn, account_id, resume_key, head)
        stream.seek(offset)
        report.lines_skipped += start_line

    batch: list[Cdr] = []
    last_offset = stream.tell() if resume_key is not None else 0
    last_line = start_line

    flushes = 0

    def flush() -> None:
        nonlocal flushes
        with engine.begin() as conn:
            report.outcome += store_legs(conn, account_id, batch, config, account_tz)
            if resume_key is not None:
                cdrstore.save_import_offset(
                    conn, account_id, resume_key, head, last_offset, last_line
                )
        batch.clear()
        flushes += 1
        if flushes & (flushes - 1) == 0:  # after batches 1, 2, 4, 8...: the tables doubled
            with engine.begin() as conn:
                cdrstore.refresh_statistics(conn)

    for number, offset, raw, complete in _lines(stream, start_line, last_offset):
        if not complete and resume_key is not None:
            # Asterisk may be writing this very line: leave it for the next import.
            report.notes.append(f"{label}:{number}: incomplete last line left for the next import")
            break
        report.lines_read += 1
        if raw.strip():
            try:
                batch.append(parse_csv_line(decode(raw), tz))
            except BadCdr as exc:
                report.bad.append(BadLine(label, number, str(exc)))
        last_offset, last_line = offset, number
        if len(batch) >= BATCH_LINES:
            flush()
            if progress:
                progress(offset, report.lines_read)
    flush()
    if progress:
        progress(last_offset, report.lines_read)


def import_paths(
    engine: Engine,
    account_id: int,
    paths: list[str],
    *,
    gmt: bool,
    resume: bool = True,
    progress_for: Callable[[str, int | None], Progress] | None = None,
) -> Report:
    """Import several files in order; `-` reads standard input (not resumable)."""
    report = Report()
    for name in paths:
        if name == STDIN:
            import_stream(
                engine, account_id, sys.stdin.buffer, label="<stdin>", resume_key=None, gmt=gmt,
                report=report, progress=progress_for(name, None) if progress_for else None,
            )  # fmt: skip
            continue
        path = Path(name)
        with path.open("rb") as stream:
            import_stream(
                engine, account_id, stream, label=name,
                resume_key=str(path.resolve()) if resume else None, gmt=gmt, report=report,
                progress=progress_for(name, path.stat().st_size) if progress_for else None,
            )  # fmt: skip
    return report
