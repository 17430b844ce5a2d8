"""Commands that bring calls in from Asterisk: import asterisk-csv, ami."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from callhistory.classify import ConfigError
from callhistory.cli.common import (
    ContextOpt,
    DidOpt,
    ExtensionsOpt,
    OutsideOpt,
    PbxOptions,
    TrunkOpt,
    app,
    configure_pbx,
    database,
    fail,
)

if TYPE_CHECKING:  # the rest is imported when a command runs (see cli/common.py)
    from rich.console import Console

    from callhistory.ingest import asterisk_csv
    from callhistory.ingest.ami import FeedStats
    from callhistory.ingest.pbx import Reclassified

import_app = typer.Typer(help="Import calls from a PBX's files.", no_args_is_help=True)
app.add_typer(import_app, name="import")
calls_app = typer.Typer(help="Stored calls.", no_args_is_help=True)
app.add_typer(calls_app, name="calls")
stats_app = typer.Typer(help="The counts behind totals and statistics.", no_args_is_help=True)
app.add_typer(stats_app, name="stats")

#: Exit status of an import that finished but rejected some lines.
EXIT_REJECTS = 3


@import_app.command("asterisk-csv")
def import_asterisk_csv(
    files: Annotated[
        list[str],
        typer.Argument(help="Master.csv files; - reads standard input"),
    ],
    account: Annotated[int, typer.Option(metavar="ID", help="account id")],
    gmt: Annotated[
        bool | None,
        typer.Option(
            "--gmt/--local-time",
            help="times in the file are UTC (a UTC server clock or cdr.conf usegmtime=yes) / "
            "the account's timezone; default: told from each file's uniqueids",
        ),
    ] = None,
    from_start: Annotated[
        bool, typer.Option(help="read files from their first line, not from the last import")
    ] = False,
    trunk: TrunkOpt = None,
    inbound_context: ContextOpt = None,
    did: DidOpt = None,
    extensions: ExtensionsOpt = None,
    outside_numbers: OutsideOpt = None,
) -> None:
    """Import Asterisk CDRs (Master.csv): one call per phone call, idempotent and resumable.

    Classification options given here are saved with the account (as `accounts configure`).
    Exit status: 0 done, 1 error, 3 done but some lines were rejected (listed on stderr).
    """
    for name in files:
        if name != "-" and not Path(name).is_file():
            raise fail(f"{name}: no such file")
    from rich.console import Console

    from callhistory import accounts
    from callhistory.config import Settings
    from callhistory.ingest import asterisk_csv

    console = Console(stderr=True)
    settings = Settings()
    try:
        with database(settings) as engine:
            options = PbxOptions(trunk, inbound_context, did, extensions, outside_numbers)
            with engine.begin() as conn:
                configure_pbx(conn, account, options)
            with import_progress(console) as progress_for:
                report = asterisk_csv.import_paths(
                    engine, account, files, gmt=gmt, resume=not from_start,
                    progress_for=progress_for, recordings_base=settings.recordings_root,
                )  # fmt: skip
    except (accounts.AccountError, ConfigError) as exc:
        raise fail(str(exc)) from None
    outcome = report.outcome
    typer.echo(
        f"lines read: {report.lines_read}"
        + (f" (+{report.lines_skipped} already imported)" if report.lines_skipped else "")
        + f"; calls created: {outcome.created}, updated: {outcome.updated}; "
        f"legs already stored: {outcome.duplicate_legs}; bad lines: {len(report.bad)}"
    )
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    for bad in report.bad[:100]:
        typer.echo(f"rejected: {bad}", err=True)
    if len(report.bad) > 100:
        typer.echo(f"... and {len(report.bad) - 100} more rejected lines", err=True)
    if report.bad:
        raise typer.Exit(EXIT_REJECTS)


@app.command("ami")
def ami_command(
    account: Annotated[int, typer.Option(metavar="ID", help="account id")],
    username: Annotated[
        str, typer.Option(metavar="USER", help="AMI user (manager.conf) with read=cdr")
    ],
    secret: Annotated[
        str, typer.Option(metavar="SECRET", envvar="AMI_SECRET", help="its secret (or AMI_SECRET)")
    ],
    host: Annotated[str, typer.Option(metavar="HOST", help="Asterisk's host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="AMI port")] = 5038,
    spool: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="durable event spool; default DATA_DIR/ami-spool-<account>.sqlite3"
        ),
    ] = None,
) -> None:
    """Store calls live from Asterisk's `Cdr` manager events, until SIGTERM/SIGINT.

    Reconnects with backoff when the PBX goes away; keeps events in a local spool while the
    database is down; on stop, stores what it can and leaves the rest spooled for the next start.
    """
    import asyncio  # here, not at the top: 36 ms of every other command's start-up
    import signal

    from callhistory import accounts
    from callhistory.config import Settings
    from callhistory.ingest.ami import AmiFeed, AmiSettings
    from callhistory.ingest.pbx import Layout
    from callhistory.ingest.spool import Spool

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings()
    try:
        with database(settings) as engine:
            with engine.connect() as conn:
                layout = Layout.load(conn, account, settings.recordings_root)
            feed_spool = Spool(spool or settings.data_dir / f"ami-spool-{account}.sqlite3")
            ami_settings = AmiSettings(host, port, username, secret)
            feed = AmiFeed(engine, account, layout, ami_settings, feed_spool)

            async def run() -> FeedStats:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(signum, stop.set)
                return await feed.run(stop)

            stats = asyncio.run(run())
            left = len(feed_spool)
            feed_spool.close()
    except accounts.AccountError as exc:
        raise fail(str(exc)) from None
    typer.echo(
        f"events: {stats.events}, rejected: {stats.rejected}; calls created: "
        f"{stats.stored.created}, updated: {stats.stored.updated}; still spooled: {left}"
    )


@calls_app.command("reclassify")
def calls_reclassify(
    account: Annotated[int, typer.Option(metavar="ID", help="account id")],
    since: Annotated[
        datetime | None,
        typer.Option(
            "--from",
            metavar="DAY",
            formats=["%Y-%m-%d", "%Y-%m-%d %H:%M:%S"],
            help="only calls that started on or after this day (account time)",
        ),
    ] = None,
) -> None:
    """Recompute type, status, dst, conversation and recording of stored Asterisk calls from their
    legs, with the account's current layout (after `accounts configure --trunk ...`).

    Ids stay; the counters follow; calls whose CRM fields changed are queued for sync again.
    Calls from the JSON ingest have no legs and are left as they are.
    """
    from callhistory import accounts
    from callhistory.config import Settings
    from callhistory.ingest.pbx import reclassify
    from callhistory.query import to_utc

    settings = Settings()
    try:
        with database(settings) as engine:
            with engine.connect() as conn:
                _config, tz = accounts.pbx_settings(conn, account)
            utc_since = to_utc(since, tz) if since is not None else None

            def progress(done: Reclassified) -> None:
                typer.echo(f"... {done.examined} calls examined, {done.changed} changed", err=True)

            done = reclassify(
                engine, account, since=utc_since, recordings_base=settings.recordings_root,
                progress=progress,
            )  # fmt: skip
    except accounts.AccountError as exc:
        raise fail(str(exc)) from None
    typer.echo(
        f"calls examined: {done.examined}, changed: {done.changed}; "
        f"CRM syncs queued again: {done.requeued}"
    )


@stats_app.command("rebuild")
def stats_rebuild(
    account: Annotated[
        int | None, typer.Option(metavar="ID", help="account id (default: every account)")
    ] = None,
) -> None:
    """Rebuild the call counters and quarter-hour rollups (which the totals and the statistics
    read) from the stored calls: after restoring a backup or loading calls around the importer.
    Each account in one transaction; the API can keep serving."""
    from callhistory import accounts, store, tallies
    from callhistory.config import Settings
    from callhistory.query import CallQuery

    with database(Settings()) as engine:
        with engine.connect() as conn:
            if account is not None and not accounts.account_exists(conn, account):
                raise fail(f"No account with id {account}.")
            ids = [account] if account is not None else [r.id for r in accounts.list_accounts(conn)]
        for account_id in ids:
            with engine.begin() as conn:
                tallies.rebuild(conn, account_id)
                total = store.count(conn, store.Scope(account_id), CallQuery())  # from the counters
            typer.echo(f"account {account_id}: {total} calls tallied")
        if engine.dialect.name == "postgresql":  # refilled in bulk: plan with their new sizes
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ANALYZE {', '.join(tallies.TABLES)}")


@contextmanager
def import_progress(
    console: Console,
) -> Iterator[Callable[[str, int | None], asterisk_csv.Progress]]:
    """A progress bar per file on a terminal (bytes, lines, lines/s); nothing otherwise."""
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[lines]} lines, {task.fields[rate]} lines/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        started = time.monotonic()

        def progress_for(name: str, size: int | None) -> asterisk_csv.Progress:
            task = bar.add_task(name, total=size, lines=0, rate=0)

            def update(done: int, lines: int) -> None:
                rate = int(lines / max(time.monotonic() - started, 1e-6))
                bar.update(task, completed=done, lines=lines, rate=rate)

            return update

        yield progress_for
