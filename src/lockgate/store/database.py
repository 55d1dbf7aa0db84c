"""Engines and schema migration for the store.

SQLite in the data directory is the default; ``LOCKGATE_DATABASE_URL`` selects anything else
(``postgresql://user@host/db`` uses psycopg 3).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url

MIGRATIONS = Path(__file__).with_name("migrations")


def data_dir(explicit: str | Path | None = None) -> Path:
    path = Path(explicit or os.environ.get("LOCKGATE_DATA_DIR") or ".lockgate").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url(data: Path) -> str:
    url = os.environ.get("LOCKGATE_DATABASE_URL")
    if not url:
        return f"sqlite:///{data / 'lockgate.db'}"
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def open_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets the gateway's writer and the CLI work on the same file at once.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def migrate(engine: Engine) -> None:
    """Bring the schema up to date; safe to run from several processes at start-up."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Serialise concurrent start-ups of several workers on one database.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7431001)")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
