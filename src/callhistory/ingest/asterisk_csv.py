"""`callhistory import asterisk-csv`: Master.csv files → calls, streaming, batched, resumable.

Each batch of lines is one transaction that also records how far the file was read, so an
interrupted import resumes where it stopped, and a file that grew (Asterisk appends) is read from
where the last import ended. Re-reading lines is harmless anyway: every leg is recognised by its
key. Memory stays flat: lines are read one batch at a time.

Reading, merging and writing overlap: a batch is parsed and merged while the one before is
written. A big file is parsed and merged in a child process, so that the writer (this process)
never waits for the GIL between its statements: on threads of one process, each statement's
answer waited for the parsing thread's time slice (measured: a `SELECT 1` round trip took 42 ms
beside two busy threads, against 0.16 ms alone).
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from queue import Full, Queue
from typing import BinaryIO, Protocol, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from callhistory import cdrstore, schema
from callhistory.ingest.cdr import BadCdr, Cdr, decode, guess_clock, parse_csv_line
from callhistory.ingest.pbx import Layout, Merged, Outcome, merge_batch, write

BATCH_LINES = 10_000
#: Bytes left to read from which a file is parsed and merged in a child process: starting one
#: costs ~0.5 s (a Python that imports this package), which a file of ~60,000 lines repays.
CHILD_MIN_BYTES = 16 << 20
#: How the child starts: a new interpreter (forking would copy the writer's threads and pooled
#: connections).
_SPAWN = multiprocessing.get_context("spawn")
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
    child: bool | None = None,
) -> None:
    """Import one Master.csv stream. `resume_key` (the file's absolute path) makes it resumable;
    `label` is how lines are named in the report. `gmt` None: tell UTC from local by the file's
    first lines (`guess_clock`). `child`: parse and merge in a child process (None: when the
    stream is a file with CHILD_MIN_BYTES or more left to read and the database is not in
    memory)."""
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
    reading = _Reading(
        label, tz, resumable=resume_key is not None, offset=last_offset, last_line=start_line,
        size=batch_lines,
    )  # fmt: skip
    committed: _Count
    pipelined = not _in_memory(engine)
    path = _file_of(stream) if pipelined else None
    if path is not None and (_left(stream, path) >= CHILD_MIN_BYTES if child is None else child):
        committed = _SPAWN.Value("q", 0, lock=False)
        job = _Job(schema.url_of(engine), account_id, layout, path, reading)
        merged_batches = _from_child(job, committed)
    else:
        committed = _Committed()
        batches = reading.batches(itertools.chain(sample, raw_lines))
        merging = _Merging(engine, account_id, layout, committed)
        merged_batches = merging.ahead(_read_ahead(batches)) if pipelined else _unmerged(batches)
    with engine.connect() as conn, cdrstore.bulk_cache(conn):
        for flushes, (batch, merged) in enumerate(merged_batches, start=1):
            with conn.begin():
                if merged is None:  # an in-memory SQLite database: one connection sees it
                    merged = merge_batch(conn, account_id, batch.legs, layout)
                report.outcome += write(conn, account_id, merged)
                if resume_key is not None:
                    cdrstore.save_import_offset(
                        conn, account_id, resume_key, head, batch.offset, batch.last_line
                    )
            committed.value = flushes
            report.lines_read += batch.lines
            report.bad += batch.bad
            report.notes += batch.notes
            without_linkedid += batch.without_linkedid
            if flushes & (flushes - 1) == 0:  # after batches 1, 2, 4, 8...: the tables doubled
                with conn.begin():
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


@dataclass(frozen=True)
class _Reading:
    """How a stream's lines become batches: from which byte and line number (after the lines a
    resumed import skips), in batches of `size` legs, times read in `tz` (None: UTC)."""

    label: str
    tz: ZoneInfo | None
    resumable: bool
    offset: int
    last_line: int
    size: int

    def batches(self, raw_lines: Iterable[bytes]) -> Iterator[_Batch]:
        """The parsed lines of `raw_lines` (read from `offset`) in batches of `size` legs; the
        last batch may hold none."""
        offset, last_line, label = self.offset, self.last_line, self.label
        batch: _Batch | None = None
        for number, after, raw, complete in _lines(raw_lines, last_line, offset):
            if batch is None:
                batch = _Batch(offset=offset, last_line=last_line)
            if not complete and self.resumable:
                # Asterisk may be writing this very line: leave it for the next import.
                batch.notes.append(
                    f"{label}:{number}: incomplete last line left for the next import"
                )
                break
            batch.lines += 1
            if raw.strip():
                try:
                    leg = parse_csv_line(decode(raw), self.tz)
                    batch.legs.append(leg)
                    batch.without_linkedid += leg.linkedid is None
                except BadCdr as exc:
                    batch.bad.append(BadLine(label, number, str(exc)))
            batch.offset, batch.last_line = after, number
            if len(batch.legs) >= self.size:
                yield batch
                offset, last_line, batch = after, number, None
        yield batch or _Batch(offset=offset, last_line=last_line)


class _Count(Protocol):
    value: int


@dataclass
class _Committed:
    """How many batches the writer has committed (a `multiprocessing.Value` for a child)."""

    value: int = 0


class _Merging:
    """Merges each batch of legs with what its calls hold already, on a thread of its own with
    its own connection, while the caller writes the batch before: reading, merging and writing
    overlap (the database works while Python merges). A batch being merged may need legs of
    the ones before that are not committed yet (a call's legs straddle batches): those are
    taken from memory. The writer sets `committed.value` to the number of batches committed."""

    def __init__(self, engine: Engine, account_id: int, layout: Layout, committed: _Count):
        self.engine = engine
        self.account_id = account_id
        self.layout = layout
        self.committed = committed
        #: (batch number, the legs it writes), of batches merged and maybe not committed yet
        self.unwritten: deque[tuple[int, list[Cdr]]] = deque()

    def ahead(self, batches: Iterator[_Batch]) -> Iterator[tuple[_Batch, Merged | None]]:
        """Each batch with its legs merged, on a thread of its own."""
        return _read_ahead(self.merged(batches), depth=1)

    def merged(self, batches: Iterator[_Batch]) -> Iterator[tuple[_Batch, Merged | None]]:
        for number, batch in enumerate(batches, start=1):
            # Read `committed` before the legs: a batch committed by then is in what the read
            # sees, one committed later is still in `unwritten`; a leg in both counts once.
            committed = self.committed.value
            while self.unwritten and self.unwritten[0][0] <= committed:
                self.unwritten.popleft()
            pending = [leg for _, legs in self.unwritten for leg in legs]
            with self.engine.connect() as conn:
                merged = merge_batch(conn, self.account_id, batch.legs, self.layout, pending)
            self.unwritten.append((number, merged.new_legs))
            yield batch, merged


def _unmerged(batches: Iterator[_Batch]) -> Iterator[tuple[_Batch, Merged | None]]:
    """The batches, for the writer to merge in its transaction (an in-memory SQLite database:
    one connection sees it)."""
    return ((batch, None) for batch in batches)


def _in_memory(engine: Engine) -> bool:
    database = engine.url.database
    return engine.url.get_backend_name() == "sqlite" and (
        not database or database == ":memory:" or "mode=memory" in database
    )


def _file_of(stream: BinaryIO) -> str | None:
    """The path of the regular file `stream` reads, if it is one (not a pipe, not stdin)."""
    name = getattr(stream, "name", None)
    if not isinstance(name, str):
        return None
    try:
        return name if Path(name).is_file() else None
    except OSError:
        return None


def _left(stream: BinaryIO, path: str) -> int:
    return os.stat(path).st_size - stream.tell()


@dataclass(frozen=True)
class _Job:
    """What a child process needs to read, parse and merge a file's batches."""

    url: str
    account_id: int
    layout: Layout
    path: str
    reading: _Reading


def _from_child(job: _Job, committed: _Count) -> Iterator[tuple[_Batch, Merged | None]]:
    """Each batch with its legs merged, read and merged by a child process (`_child`) while
    the caller writes the one before; the writer sets `committed.value` as it commits (shared
    memory). A pipe carries the batches: a full pipe holds the child back, so at most about
    two batches are in memory. An error in the child is raised here; leaving early ends it."""
    receiving, sending = _SPAWN.Pipe(duplex=False)
    process = _SPAWN.Process(
        target=_child, args=(job, committed, sending), name="csv-reader", daemon=True
    )
    process.start()
    sending.close()  # the child holds the only writing end: its exit is our EOF
    try:
        while True:
            try:
                kind, payload = receiving.recv()
            except EOFError:
                process.join(timeout=5)
                raise RuntimeError(
                    f"the process reading {job.reading.label} ended unexpectedly "
                    f"(exit code {process.exitcode})"
                ) from None
            if kind == "batch":
                yield payload
            elif kind == "error":
                error, trace = payload
                error.add_note(f"in the process reading {job.reading.label}:\n{trace}")
                raise error
            else:
                return
    finally:
        receiving.close()
        if process.is_alive():
            process.terminate()
        process.join(timeout=5)


def _child(job: _Job, committed: _Count, sending: Pipe) -> None:
    """A child process's work: read the file from the job's offset, parse and merge each batch
    and send it (("batch", (batch, merged))), then ("done", None), or ("error", (exception,
    traceback)). Ctrl-C is the parent's to handle: it ends this process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    engine: Engine | None = None
    try:
        engine = schema.make_engine(job.url)
        with open(job.path, "rb") as stream:
            stream.seek(job.reading.offset)
            merging = _Merging(engine, job.account_id, job.layout, committed)
            for batch, merged in merging.merged(job.reading.batches(stream)):
                batch.legs = []  # the writer needs the merged legs' rows only
                sending.send(("batch", (batch, merged and merged.to_write())))
        sending.send(("done", None))
    except (BrokenPipeError, EOFError):
        pass  # the parent stopped reading: it left early
    except Exception as exc:
        trace = traceback.format_exc()
        try:
            sending.send(("error", (exc, trace)))
        except Exception:  # an exception that cannot be pickled
            sending.send(("error", (RuntimeError(f"{type(exc).__name__}: {exc}"), trace)))
    finally:
        sending.close()
        if engine is not None:
            engine.dispose()


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
    child: bool | None = None,
) -> Report:
    """Import several files in order; `-` reads standard input (not resumable). `gmt`: True
    UTC, False the account's timezone, None tell by each file's lines. `recordings_base`
    (RECORDINGS_DIR) lets calls link a recording the CDR does not name when its file exists.
    `batch_lines`: legs per transaction. `child`: parse and merge files in a child process
    (None: big files only; standard input never)."""
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
                recordings_base=recordings_base, batch_lines=batch_lines, child=child,
            )  # fmt: skip
    return report
