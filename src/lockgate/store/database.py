"""Engines and schema migration for the store.

SQLite in the data directory is the default; ``LOCKGATE_DATABASE_URL`` selects anything else
(``postgresql://user@host/db`` uses psycopg 3). The schema changes only through ``lockgate migrate``;
``lockgate serve`` checks that the store is at exactly the revision this code knows and refuses to
start otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from lockgate.service_errors import Invalid

MIGRATIONS = Path(__file__).with_name("migrations")
SCHEMA_HEAD = "0006"
"""The newest migration; a test keeps it equal to the head of ``migrations/versions``."""


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
            # WAL lets the request log writer, the eval worker and the control API share the file.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # A store that stops answering must fail calls, not hang the threads that make them: bounded connect,
    # TCP keepalives and an unacknowledged-send limit; pre-ping replaces connections an outage killed.
    # Settings given in the URL's query win over these.
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args = {k: v for k, v in _POSTGRES_CONNECT.items() if k not in parsed.query}
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_timeout=10, connect_args=connect_args
    )


_POSTGRES_CONNECT: dict[str, Any] = {
    "connect_timeout": 5,  # seconds, for the whole connection start-up
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # milliseconds
}

_UNREACHABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout, OSError)


def store_unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the store could not be reached (or timed out), as opposed to refusing
    what was asked of it: callers retry the first later and keep what they were writing."""
    return isinstance(error, _UNREACHABLE)


def schema_revision(engine: Engine) -> str | None:
    """The migration the store is at; None for a store that was never migrated."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(found) if found is not None else None


def require_current_schema(engine: Engine) -> None:
    """Refuse a store whose schema this code does not know: never migrated, older, or newer."""
    found = schema_revision(engine)
    if found == SCHEMA_HEAD:
        return
    if found is None:
        raise Invalid("the store has no lockgate schema yet: run `lockgate migrate` first")
    if found < SCHEMA_HEAD:
        raise Invalid(
            f"the store is at schema {found}, this lockgate needs {SCHEMA_HEAD}: run `lockgate migrate`"
        )
    raise Invalid(
        f"the store is at schema {found}, newer than this lockgate knows ({SCHEMA_HEAD}): upgrade lockgate"
    )


def migrate(engine: Engine) -> None:
    """Bring the schema up to date; safe to run from several processes at once."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Serialise concurrent start-ups of several workers on one database.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7431001)")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
