"""Apply the Alembic migrations shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine


def upgrade(engine: Engine, recordings_root: Path | None = None, revision: str = "head") -> None:
    """Bring the database to the newest schema (idempotent). `recordings_root` is RECORDINGS_DIR,
    which a data migration needs (0006 moves shared recordings into per-account roots)."""
    config = Config()
    config.set_main_option("script_location", "callhistory:migrations")
    if recordings_root is not None:
        config.attributes["recordings_root"] = recordings_root
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
