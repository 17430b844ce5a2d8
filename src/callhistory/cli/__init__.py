"""The `callhistory` command line (also `python -m callhistory`)."""

from __future__ import annotations

from callhistory.cli import crm, pbx, people  # noqa: F401  (each module registers its commands)
from callhistory.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
