"""The `callhistory` command line (also `python -m callhistory`)."""

# ruff: noqa: I001, F401
# The modules register their commands on import; this order is the order `--help` lists them.
from __future__ import annotations

import typer

from callhistory.cli.common import app, user_error
from callhistory.cli import people
from callhistory.cli import pbx
from callhistory.cli import crm

__all__ = ["app", "main"]


def main() -> None:
    """Run a command; a mistake in the environment is one `error:` line, never a traceback."""
    try:
        app()
    except Exception as exc:
        message = user_error(exc)
        if message is None:
            raise
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise SystemExit(1) from None
