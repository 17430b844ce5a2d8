"""What the commands share: the app, clear failures, a migrated database, the PBX options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from callhistory.classify import PbxConfig

# SQLAlchemy, pydantic-settings, httpx... take a second to import on a small machine: commands
# import what they use when they run, so that `--help` and mistakes answer at once.
if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from callhistory.config import Settings

app = typer.Typer(
    help="callhistory: the call history of a cloud PBX.",
    no_args_is_help=True,
    add_completion=False,
    # Plain help: words for types (INTEGER, TEXT), whole sentences, no box-drawing.
    rich_markup_mode=None,
)


def user_error(exc: BaseException) -> str | None:
    """What to tell the user when `exc` comes from their settings or machine, else None (a bug
    of ours, which keeps its traceback)."""
    from pydantic import ValidationError
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'_'.join(str(part) for part in error['loc']).upper() or 'settings'}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
    if isinstance(exc, ArgumentError):
        return (
            f"DATABASE_URL is not a database URL ({exc}); use e.g. "
            "postgresql://user@host/db or sqlite:////path/to/file.sqlite3"
        )
    if isinstance(exc, NoSuchModuleError | ImportError):
        return (
            f"DATABASE_URL needs a database driver that is not installed ({exc}); "
            "callhistory supports SQLite and PostgreSQL (postgresql://user@host/db)"
        )
    if isinstance(exc, OSError):
        return str(exc)
    return None


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@contextmanager
def database(settings: Settings) -> Iterator[Engine]:
    """An engine on the migrated database, disposed of when the command ends. A new SQLite file
    is announced with its absolute path: a relative DATA_DIR from another folder would otherwise
    silently start an empty database."""
    from sqlalchemy.exc import SQLAlchemyError

    from callhistory import migrate
    from callhistory.schema import make_engine

    new_file: Path | None = None
    if settings.database_url is None:
        new_file = None if settings.sqlite_file.exists() else settings.sqlite_file
        try:
            settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise fail(
                f"cannot use DATA_DIR {settings.data_dir.resolve()}: {exc.strerror}"
            ) from None
    engine = make_engine(settings.sqlalchemy_url)
    try:
        try:
            migrate.upgrade(engine, settings.recordings_root)
        except SQLAlchemyError as exc:
            raise fail(f"cannot reach or migrate the database: {exc}") from None
        if new_file is not None:
            typer.echo(f"created a new database: {new_file}", err=True)
        yield engine
    finally:
        engine.dispose()


TrunkOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--trunk",
        metavar="PATTERN",
        help="trunk channel pattern, e.g. 'PJSIP/trunk-*' (repeatable; --trunk '' clears)",
    ),
]
ContextOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--inbound-context",
        metavar="CONTEXT",
        help="dialplan context of inbound calls (repeatable)",
    ),
]
DidOpt = Annotated[
    list[str] | None,
    typer.Option("--did", metavar="NUMBER", help="the company's external number (repeatable)"),
]
ExtensionsOpt = Annotated[
    str | None, typer.Option("--extensions", metavar="REGEX", help="regex of internal extensions")
]
OutsideOpt = Annotated[
    str | None,
    typer.Option(
        "--outside-numbers",
        metavar="REGEX",
        help="regex of numbers beyond the PBX, for calls that reach no --trunk; default "
        "7+ digits or a leading + or 00",
    ),
]


@dataclass(frozen=True)
class PbxOptions:
    """The classification options of a command; None leaves a setting as it is."""

    trunks: list[str] | None = None
    inbound_contexts: list[str] | None = None
    dids: list[str] | None = None
    extensions: str | None = None
    outside_numbers: str | None = None


def configure_pbx(conn: Connection, account: int, options: PbxOptions) -> PbxConfig:
    """Apply the given classification options to the account's stored PBX layout, in the
    caller's transaction. A list option given only as '' clears the list."""
    from callhistory import accounts

    config, _tz = accounts.pbx_settings(conn, account)
    changes: dict[str, object] = {}
    for name in ("trunks", "inbound_contexts", "dids"):
        values = getattr(options, name)
        if values is not None:
            changes[name] = tuple(value for value in values if value)
    for name in ("extensions", "outside_numbers"):
        if getattr(options, name) is not None:
            changes[name] = getattr(options, name)
    if changes:
        config = replace(config, **changes)  # type: ignore[arg-type]
        accounts.set_pbx_config(conn, account, config)
    return config
