"""`callhistory import asterisk-csv`: Master.csv files → calls, streaming, batched, resumable.

Each batch of lines is one transaction that also records how far the file was read, so an
interrupted import resumes where it stopped, and a file that grew (Asterisk appends) is read from
where the last import ended. Re-reading lines is harmless anyway: every leg is recognised by its
key. Memory stays flat: lines are read one batch at a time.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Full, Queue
from typing import BinaryIO, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from callhistory import cdrstore
from callhistory.ingest.cdr import BadCdr, Cdr, decode, guess_clock, parse_csv_line
from callhistory.ingest.pbx import Layout, Merged, Outcome, merge_batch, write

BATCH_LINES = 10_000
#: Lines read ahead to tell a UTC file from a PBX-local one.
CLOCK_SAMPLE = 200
STDIN = "-"
_T = TypeVar("_T")


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


def _lines(
    raw_lines: Iterable[bytes], number: int, offset: int
) -> Iterator[tuple[int, int, bytes, bool]]:
    """(line number, byte offset after it, raw line, complete?) from the stream's position."""
    for raw in raw_lines:
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
    gmt: bool | None,
    report: Report,
    progress: Progress | None = None,
    recordings_base: Path | None = None,
    batch_lines: int = BATCH_LINES,
) -> None:
    """Import one Master.csv stream. `resume_key` (the file's absolute path) makes it resumable;
    `label` is how lines are named in the report. `gmt` None: tell UTC from local by the file's
    first lines (`guess_clock`)."""
    with engine.connect() as conn:
        layout = Layout.load(conn, account_id, recordings_base)
    head = ""
    start_line = 0
    if resume_key is not None:
        head = hashlib.sha256(stream.readline()).hexdigest()
        stream.seek(0)
        with engine.connect() as conn:
            offset, start_line = cdrstore.import_offset(conn, account_id, resume_key, head)
        stream.seek(offset)
        report.lines_skipped += start_line

    last_offset = stream.tell() if resume_key is not None else 0
    raw_lines = iter(stream)
    sample = list(itertools.islice(raw_lines, CLOCK_SAMPLE))
    if gmt is None and sample:
        guess = guess_clock([decode(raw.rstrip(b"\r\n")) for raw in sample], layout.tz)
        gmt = bool(guess.utc)
        report.notes.append(f"{label}: {guess.explain(layout.tz)}")
    tz: ZoneInfo | None = None if gmt else layout.tz
    without_linkedid = 0
    batches = _batches(
        _lines(itertools.chain(sample, raw_lines), start_line, last_offset),
        tz, label, resumable=resume_key is not None, offset=last_offset, last_line=start_line,
        size=batch_lines,
    )  # fmt: skip
    merging = _Merging(engine, account_id, layout)
    for flushes, (batch, merged) in enumerate(merging.ahead(_read_ahead(batches)), start=1):
        with engine.begin() as conn:
            if merged is None:  # an in-memory SQLite database: one connection sees it
                merged = merge_batch(conn, account_id, batch.legs, layout)
            report.outcome += write(conn, account_id, merged)
            if resume_key is not None:
                cdrstore.save_import_offset(
                    conn, account_id, resume_key, head, batch.offset, batch.last_line
                )
        merging.committed = flushes
        report.lines_read += batch.lines
        report.bad += batch.bad
        report.notes += batch.notes
        without_linkedid += batch.without_linkedid
        if flushes & (flushes - 1) == 0:  # after batches 1, 2, 4, 8...: the tables doubled
            with engine.begin() as conn:
                cdrstore.refresh_statistics(conn)
        if progress:
            progress(batch.offset, report.lines_read)
    if without_linkedid:
        report.notes.append(
            f"{label}: {without_linkedid} lines have no linkedid, so the legs of one call are "
            "told apart by uniqueid only: queues, ring groups, transfers and call files may "
            "count as several calls. Fix: newcdrcolumns=yes in the [csv] section of cdr.conf"
        )


@dataclass
class _Batch:
    """Lines read and parsed, to be stored in one transaction."""

    offset: int  # bytes of the file read after this batch (where a resumed import starts)
    last_line: int  # the number of its last line
    legs: list[Cdr] = field(default_factory=list)
    lines: int = 0
    bad: list[BadLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    without_linkedid: int = 0


def _batches(
    lines: Iterator[tuple[int, int, bytes, bool]],
    tz: ZoneInfo | None,
    label: str,
    *,
    resumable: bool,
    offset: int = 0,
    last_line: int = 0,
    size: int = BATCH_LINES,
) -> Iterator[_Batch]:
    """The parsed lines in batches of `size` legs; the last batch may hold none."""
    batch: _Batch | None = None
    for number, after, raw, complete in lines:
        if batch is None:
            batch = _Batch(offset=offset, last_line=last_line)
        if not complete and resumable:
            # Asterisk may be writing this very line: leave it for the next import.
            batch.notes.append(f"{label}:{number}: incomplete last line left for the next import")
            break
        batch.lines += 1
        if raw.strip():
            try:
                leg = parse_csv_line(decode(raw), tz)
                batch.legs.append(leg)
                batch.without_linkedid += leg.linkedid is None
            except BadCdr as exc:
                batch.bad.append(BadLine(label, number, str(exc)))
        batch.offset, batch.last_line = after, number
        if len(batch.legs) >= size:
            yield batch
            offset, last_line, batch = after, number, None
    yield batch or _Batch(offset=offset, last_line=last_line)


class _Merging:
    """Merges each batch of legs with what its calls hold already, on a thread of its own with
    its own connection, while the caller writes the batch before: reading, merging and writing
    overlap (the database works while Python merges). A batch being merged may need legs of
    the ones before that are not committed yet (a call's legs straddle batches): those are
    taken from memory. The caller sets `committed` to the number of batches committed."""

    def __init__(self, engine: Engine, account_id: int, layout: Layout):
        self.engine = engine
        self.account_id = account_id
        self.layout = layout
        self.committed = 0
        #: (batch number, the legs it writes), of batches merged and maybe not committed yet
        self.unwritten: deque[tuple[int, list[Cdr]]] = deque()
        url = engine.url
        self.pipelined = not (url.get_backend_name() == "sqlite" and _in_memory(url.database))

    def ahead(self, batches: Iterator[_Batch]) -> Iterator[tuple[_Batch, Merged | None]]:
        """Each batch with its legs merged (None: not merged, for the caller to merge)."""
        if not self.pipelined:
            return ((batch, None) for batch in batches)
        return _read_ahead(self._merged(batches), depth=1)

    def _merged(self, batches: Iterator[_Batch]) -> Iterator[tuple[_Batch, Merged | None]]:
        for number, batch in enumerate(batches, start=1):
            # Read `committed` before the legs: a batch committed by then is in what the read
            # sees, one committed later is still in `unwritten`; a leg in both counts once.
            committed = self.committed
            while self.unwritten and self.unwritten[0][0] <= committed:
                self.unwritten.popleft()
            pending = [leg for _, legs in self.unwritten for leg in legs]
            with self.engine.connect() as conn:
                merged = merge_batch(conn, self.account_id, batch.legs, self.layout, pending)
            self.unwritten.append((number, merged.new_legs))
            yield batch, merged


def _in_memory(database: str | None) -> bool:
    return not database or database == ":memory:" or "mode=memory" in database


def _read_ahead(items: Iterator[_T], depth: int = 2) -> Iterator[_T]:
    """The items, made by a thread while the caller works on the ones before (the next batch
    is read and parsed while the last one is merged, and merged while the one before is
    stored: the database driver lets go of the GIL while it waits). An error in the thread is
    raised here; leaving early stops the thread."""
    queue: Queue[tuple[_T | None, BaseException | None]] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[_T | None, BaseException | None]) -> None:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return
            except Full:
                continue

    def produce() -> None:
        try:
            for item in items:
                put((item, None))
                if stop.is_set():
                    return
            put((None, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((None, exc))

    thread = threading.Thread(target=produce, name="csv-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if error is not None:
                raise error
            if item is None:
                return
            yield item
    finally:
        stop.set()
        # Bounded: a thread blocked reading a stalled pipe (stdin) must not hold up a Ctrl-C; it
        # stops at its next batch, and it is a daemon.
        thread.join(timeout=1)


def import_paths(
    engine: Engine,
    account_id: int,
    paths: list[str],
    *,
    gmt: bool | None = None,
    resume: bool = True,
    progress_for: Callable[[str, int | None], Progress] | None = None,
    recordings_base: Path | None = None,
    batch_lines: int = BATCH_LINES,
) -> Report:
    """Import several files in order; `-` reads standard input (not resumable). `gmt`: True
    UTC, False the account's timezone, None tell by each file's lines. `recordings_base`
    (RECORDINGS_DIR) lets calls link a recording the CDR does not name when its file exists.
    `batch_lines`: legs per transaction."""
    report = Report()
    for name in paths:
        if name == STDIN:
            import_stream(
                engine, account_id, sys.stdin.buffer, label="<stdin>", resume_key=None, gmt=gmt,
                report=report, progress=progress_for(name, None) if progress_for else None,
                recordings_base=recordings_base, batch_lines=batch_lines,
            )  # fmt: skip
            continue
        path = Path(name)
        with path.open("rb") as stream:
            import_stream(
                engine, account_id, stream, label=name,
                resume_key=str(path.resolve()) if resume else None, gmt=gmt, report=report,
                progress=progress_for(name, path.stat().st_size) if progress_for else None,
                recordings_base=recordings_base, batch_lines=batch_lines,
            )  # fmt: skip
    return report
