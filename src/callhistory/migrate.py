"""Apply the Alembic migrations shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

#: The newest migration. Every command checks the database against it with one query, and runs
#: Alembic (slow to load) only when the database is behind. A test keeps it equal to the scripts'.
HEAD = "0030"


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision; None for a new database (no alembic_version table)."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None


def upgrade(engine: Engine, recordings_root: Path | None = None, revision: str = "head") -> None:
    """Bring the database to the newest schema (idempotent). `recordings_root` is RECORDINGS_DIR,
    which a data migration needs (0006 moves shared recordings into per-account roots)."""
    if revision == "head" and current_revision(engine) == HEAD:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "callhistory:migrations")
    if recordings_root is not None:
        config.attributes["recordings_root"] = recordings_root
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
