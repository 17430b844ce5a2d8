"""The `callhistory` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from callhistory import accounts, crmstore, demo, migrate, recordings, store
from callhistory.classify import ConfigError, PbxConfig
from callhistory.config import Settings
from callhistory.crm.amocrm import AmoCrmClient
from callhistory.crm.client import CrmAuthError, TransientCrmError
from callhistory.crm.connect import ConnectError, connect_amocrm
from callhistory.crm.connect import describe as describe_integration
from callhistory.crm.sync import SyncWorker
from callhistory.ingest import asterisk_csv
from callhistory.ingest.ami import AmiFeed, AmiSettings, FeedStats
from callhistory.ingest.spool import Spool
from callhistory.recordings import LocalStorage
from callhistory.schema import make_engine

app = typer.Typer(
    help="callhistory: the call history of a cloud PBX.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts (companies).", no_args_is_help=True)
users_app = typer.Typer(help="Users of an account.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (Sanctum format).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(accounts_app, name="accounts")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
import_app = typer.Typer(help="Import calls from a PBX's files.", no_args_is_help=True)
app.add_typer(import_app, name="import")
recordings_app = typer.Typer(help="Call recordings.", no_args_is_help=True)
app.add_typer(recordings_app, name="recordings")
integrations_app = typer.Typer(help="CRMs the calls are pushed to.", no_args_is_help=True)
amocrm_app = typer.Typer(help="amoCRM (Kommo).", no_args_is_help=True)
integrations_app.add_typer(amocrm_app, name="amocrm")
app.add_typer(integrations_app, name="integrations")

#: Exit status of an import that finished but rejected some lines.
EXIT_REJECTS = 3

TrunkOpt = Annotated[
    list[str] | None,
    typer.Option("--trunk", help="trunk channel pattern, e.g. 'PJSIP/trunk-*' (repeatable)"),
]
ContextOpt = Annotated[
    list[str] | None,
    typer.Option("--inbound-context", help="dialplan context of inbound calls (repeatable)"),
]
DidOpt = Annotated[
    list[str] | None, typer.Option("--did", help="the company's external number (repeatable)")
]
ExtensionsOpt = Annotated[
    str | None, typer.Option("--extensions", help="regex of internal extensions")
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@contextmanager
def _database(settings: Settings) -> Iterator[Engine]:
    """An engine on the migrated database, disposed of when the command ends."""
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        try:
            migrate.upgrade(engine)
        except SQLAlchemyError as exc:
            raise _fail(f"cannot reach or migrate the database: {exc}") from None
        yield engine
    finally:
        engine.dispose()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations."""
    with _database(Settings()):
        typer.echo("database is up to date")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
) -> None:
    """Run the API (migrating the database first)."""
    import uvicorn

    from callhistory.api import create_app

    settings = Settings()
    with _database(settings) as engine:
        stop = threading.Event()
        with engine.connect() as conn:
            connected = bool(crmstore.all_integrations(conn))
        if connected:  # background work only when there is some to do
            worker = SyncWorker(engine, settings)
            threading.Thread(target=worker.run, args=(stop,), name="crm-sync", daemon=True).start()
        typer.echo(f"callhistory on http://{host}:{port}  (docs: http://{host}:{port}/docs)")
        try:
            uvicorn.run(create_app(settings, engine), host=host, port=port, log_level="info")
        finally:
            stop.set()


@accounts_app.command("create")
def accounts_create(
    name: str,
    timezone: Annotated[str, typer.Option(help="IANA timezone of the account")] = (
        accounts.DEFAULT_TIMEZONE
    ),
) -> None:
    """Create an account; prints its id."""
    try:
        with _database(Settings()) as engine, engine.begin() as conn:
            account_id = accounts.create_account(conn, name, timezone)
    except accounts.AccountError as exc:
        raise _fail(str(exc)) from None
    typer.echo(account_id)


def _configure(
    engine: Engine,
    account: int,
    trunks: list[str] | None,
    contexts: list[str] | None,
    dids: list[str] | None,
    extensions: str | None,
) -> PbxConfig:
    """Apply the given classification options to the account's stored PBX layout."""
    with engine.begin() as conn:
        config, _tz = accounts.pbx_settings(conn, account)
        changes: dict[str, object] = {}
        if trunks is not None:
            changes["trunks"] = tuple(trunks)
        if contexts is not None:
            changes["inbound_contexts"] = tuple(contexts)
        if dids is not None:
            changes["dids"] = tuple(dids)
        if extensions is not None:
            changes["extensions"] = extensions
        if changes:
            config = replace(config, **changes)  # type: ignore[arg-type]
            accounts.set_pbx_config(conn, account, config)
    return config


@accounts_app.command("configure")
def accounts_configure(
    account: Annotated[int, typer.Argument(help="account id")],
    trunk: TrunkOpt = None,
    inbound_context: ContextOpt = None,
    did: DidOpt = None,
    extensions: ExtensionsOpt = None,
    recording_retention_days: Annotated[
        int | None,
        typer.Option(help="delete recordings older than N days (`recordings purge`); 0 = keep"),
    ] = None,
) -> None:
    """Set how the account's PBX calls are classified (each given option replaces its list) and
    how long its recordings are kept."""
    try:
        with _database(Settings()) as engine:
            _configure(engine, account, trunk, inbound_context, did, extensions)
            if recording_retention_days is not None:
                with engine.begin() as conn:
                    accounts.set_recording_retention(
                        conn, account, recording_retention_days or None
                    )
            with engine.connect() as conn:
                typer.echo(json.dumps(accounts.describe_account(conn, account), indent=2))
    except (accounts.AccountError, ConfigError) as exc:
        raise _fail(str(exc)) from None


@accounts_app.command("show")
def accounts_show(account: Annotated[int, typer.Argument(help="account id")]) -> None:
    """Print the account's settings as JSON."""
    try:
        with _database(Settings()) as engine, engine.connect() as conn:
            typer.echo(json.dumps(accounts.describe_account(conn, account), indent=2))
    except accounts.AccountError as exc:
        raise _fail(str(exc)) from None


@users_app.command("create")
def users_create(
    account: Annotated[int, typer.Option(help="account id")],
    email: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
) -> None:
    """Create a user in an account; prints its id."""
    if len(password) < 6:
        raise _fail("the password must be at least 6 characters")
    try:
        with _database(Settings()) as engine, engine.begin() as conn:
            user_id = accounts.create_user(conn, account, email, name, password)
    except accounts.AccountError as exc:
        raise _fail(str(exc)) from None
    typer.echo(user_id)


@tokens_app.command("create")
def tokens_create(
    email: Annotated[str, typer.Option(help="the user's email")],
    abilities: Annotated[
        str, typer.Option(help="comma-separated: *, calls:read, calls:write, recordings:read")
    ] = "*",
    name: Annotated[str, typer.Option(help="a label for the token")] = "cli",
) -> None:
    """Create a token for a user; prints the plaintext token alone on the last line."""
    try:
        parsed = accounts.parse_abilities(abilities)
        with _database(Settings()) as engine, engine.begin() as conn:
            user = accounts.find_user(conn, email)
            if user is None:
                raise accounts.AccountError(f"No user with email {email}.")
            token = accounts.create_token(conn, int(str(user["id"])), name, parsed)
    except accounts.AccountError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"abilities: {', '.join(parsed)}")
    typer.echo(token)


@app.command("demo")
def demo_command(
    calls: Annotated[int, typer.Option(min=0, max=5_000_000, help="how many calls")] = 3000,
) -> None:
    """Create the demo account, user, token and calls (once); print the token and a curl line."""
    settings = Settings()
    with _database(settings) as engine, engine.begin() as conn:
        account_id, user_id, created = demo.load(conn, calls)
        token = accounts.create_token(conn, user_id, "demo")
    base = settings.public_url or "http://127.0.0.1:8000"
    typer.echo(f"demo account {account_id}: {created} calls added")
    typer.echo(f"login: {demo.DEMO_EMAIL} / {demo.DEMO_PASSWORD}")
    typer.echo(
        f"try:   curl -H 'Authorization: Bearer {token}' "
        f"'{base}/api/v1/call-history?sort=-id&per_page=5'"
    )
    typer.echo(f"token: {token}")


@import_app.command("asterisk-csv")
def import_asterisk_csv(
    files: Annotated[list[str], typer.Argument(help="Master.csv files; - reads standard input")],
    account: Annotated[int, typer.Option(help="account id")],
    gmt: Annotated[
        bool,
        typer.Option(
            "--gmt/--local-time",
            help="times in the file are UTC (cdr.conf usegmtime=yes); default: the account's "
            "timezone",
        ),
    ] = False,
    from_start: Annotated[
        bool, typer.Option(help="read files from their first line, not from the last import")
    ] = False,
    trunk: TrunkOpt = None,
    inbound_context: ContextOpt = None,
    did: DidOpt = None,
    extensions: ExtensionsOpt = None,
) -> None:
    """Import Asterisk CDRs (Master.csv): one call per phone call, idempotent and resumable.

    Classification options given here are saved with the account (as `accounts configure`).
    Exit status: 0 done, 1 error, 3 done but some lines were rejected (listed on stderr).
    """
    for name in files:
        if name != "-" and not Path(name).is_file():
            raise _fail(f"{name}: no such file")
    console = Console(stderr=True)
    try:
        with _database(Settings()) as engine:
            _configure(engine, account, trunk, inbound_context, did, extensions)
            with _import_progress(console) as progress_for:
                report = asterisk_csv.import_paths(
                    engine, account, files, gmt=gmt, resume=not from_start,
                    progress_for=progress_for,
                )  # fmt: skip
    except (accounts.AccountError, ConfigError) as exc:
        raise _fail(str(exc)) from None
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
    account: Annotated[int, typer.Option(help="account id")],
    username: Annotated[str, typer.Option(help="AMI user (manager.conf) with read=cdr")],
    secret: Annotated[str, typer.Option(envvar="AMI_SECRET", help="its secret (or AMI_SECRET)")],
    host: Annotated[str, typer.Option(help="Asterisk's host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="AMI port")] = 5038,
    spool: Annotated[
        Path | None,
        typer.Option(help="durable event spool; default DATA_DIR/ami-spool-<account>.sqlite3"),
    ] = None,
) -> None:
    """Store calls live from Asterisk's `Cdr` manager events, until SIGTERM/SIGINT.

    Reconnects with backoff when the PBX goes away; keeps events in a local spool while the
    database is down; on stop, stores what it can and leaves the rest spooled for the next start.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings()
    try:
        with _database(settings) as engine:
            with engine.connect() as conn:
                pbx = accounts.pbx_settings(conn, account)
            feed_spool = Spool(spool or settings.data_dir / f"ami-spool-{account}.sqlite3")
            ami_settings = AmiSettings(host, port, username, secret)
            feed = AmiFeed(engine, account, pbx, ami_settings, feed_spool)

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
        raise _fail(str(exc)) from None
    typer.echo(
        f"events: {stats.events}, rejected: {stats.rejected}; calls created: "
        f"{stats.stored.created}, updated: {stats.stored.updated}; still spooled: {left}"
    )


@recordings_app.command("purge")
def recordings_purge(
    account: Annotated[int | None, typer.Option(help="only this account")] = None,
    dry_run: Annotated[bool, typer.Option(help="report what would go; delete nothing")] = False,
) -> None:
    """Delete recordings older than each account's retention, and clear their links."""
    settings = Settings()
    with _database(settings) as engine:
        storage = LocalStorage(settings.recordings_root)
        report = recordings.purge(
            engine, storage, store.utcnow(), account_id=account, dry_run=dry_run
        )
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb} {report.files} files ({report.bytes / 1e6:.1f} MB) of {report.calls} expired "
        f"calls; {report.missing} files were already missing"
    )


@amocrm_app.command("connect")
def amocrm_connect(
    account: Annotated[int, typer.Option(help="account id")],
    base_url: Annotated[str, typer.Option(help="https://SUBDOMAIN.amocrm.ru")],
    long_lived_token: Annotated[
        str | None, typer.Option(envvar="AMOCRM_TOKEN", help="a private integration's token")
    ] = None,
    client_id: Annotated[str | None, typer.Option(help="OAuth: the integration's id")] = None,
    client_secret: Annotated[
        str | None, typer.Option(envvar="AMOCRM_CLIENT_SECRET", help="OAuth: its secret")
    ] = None,
    redirect_uri: Annotated[str | None, typer.Option(help="OAuth: its redirect URI")] = None,
    code: Annotated[str | None, typer.Option(help="OAuth: the authorization code")] = None,
) -> None:
    """Connect the account's amoCRM; from then on each outside call is queued for it."""
    settings = Settings()
    oauth = {
        k: v
        for k, v in (
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("redirect_uri", redirect_uri),
        )
        if v
    }
    try:
        with _database(settings) as engine:
            integration_id = connect_amocrm(
                engine, settings, account, base_url, AmoCrmClient(base_url),
                long_lived_token=long_lived_token, oauth=oauth or None, code=code,
            )  # fmt: skip
    except (ConnectError, CrmAuthError, TransientCrmError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"amoCRM connected to account {account} (integration {integration_id})")


@amocrm_app.command("show")
def amocrm_show(account: Annotated[int, typer.Option(help="account id")]) -> None:
    """The connection and its queue (secrets are never shown)."""
    with _database(Settings()) as engine:
        found = describe_integration(engine, account, "amocrm")
    if found is None:
        raise _fail(f"account {account} has no amoCRM connected")
    typer.echo(json.dumps(found, indent=2))


@amocrm_app.command("disconnect")
def amocrm_disconnect(account: Annotated[int, typer.Option(help="account id")]) -> None:
    """Forget the credentials; calls not yet pushed are dropped from the queue."""
    with _database(Settings()) as engine, engine.begin() as conn:
        if not crmstore.disconnect(conn, account, "amocrm"):
            raise _fail(f"account {account} has no amoCRM connected")
    typer.echo(f"amoCRM disconnected from account {account}")


@app.command("sync")
def sync_command(
    once: Annotated[bool, typer.Option(help="push what is due, then exit")] = False,
) -> None:
    """Push queued calls to the connected CRMs, until SIGTERM/SIGINT (or done, with --once)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings()
    with _database(settings) as engine:
        worker = SyncWorker(engine, settings)
        if once:
            typer.echo(f"pushed or settled {worker.drain()} queued calls")
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        worker.run(stop)


@contextmanager
def _import_progress(
    console: Console,
) -> Iterator[Callable[[str, int | None], asterisk_csv.Progress]]:
    """A progress bar per file on a terminal (bytes, lines, lines/s); nothing otherwise."""
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


def main() -> None:
    app()
