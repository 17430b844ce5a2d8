"""Alembic environment: the URL comes from our settings unless the caller passed a connection."""

from __future__ import annotations

from alembic import context

from callhistory.config import Settings
from callhistory.schema import make_engine, metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or Settings().sqlalchemy_url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
