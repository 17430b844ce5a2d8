"""What every command shares: the app, clear failures, a migrated database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from callhistory import migrate
from callhistory.config import Settings
from callhistory.schema import make_engine

app = typer.Typer(
    help="callhistory: the call history of a cloud PBX.",
    no_args_is_help=True,
    add_completion=False,
)


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@contextmanager
def database(settings: Settings) -> Iterator[Engine]:
    """An engine on the migrated database, disposed of when the command ends."""
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        try:
            migrate.upgrade(engine)
        except SQLAlchemyError as exc:
            raise fail(f"cannot reach or migrate the database: {exc}") from None
        yield engine
    finally:
        engine.dispose()
