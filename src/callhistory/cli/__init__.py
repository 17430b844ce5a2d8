"""The `callhistory` command line (also `python -m callhistory`)."""

# ruff: noqa: I001, F401
# The modules register their commands on import; this order is the order `--help` lists them.
from __future__ import annotations

from callhistory.cli.common import app
from callhistory.cli import people
from callhistory.cli import pbx
from callhistory.cli import crm

__all__ = ["app", "main"]


def main() -> None:
    app()
