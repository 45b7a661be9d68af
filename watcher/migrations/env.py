"""Alembic environment: runs on the engine the watcher hands over, or on the URL in alembic.ini."""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from watcher.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from watcher.db import create_db_engine, writer

        url = config.get_main_option("sqlalchemy.url")
        # writer: a real transaction around the migrations (PostgreSQL's engine otherwise runs in autocommit)
        engine = writer(create_db_engine(url) if url else create_engine("sqlite:///watcher.db"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things: batch mode rebuilds tables instead.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
