"""Migrations create exactly the tables the code uses, on SQLite and PostgreSQL, and can run again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from lockgate.store import versions
from lockgate.store.database import migrate, open_engine
from lockgate.store.tables import metadata, state_versions


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    opened = open_engine(database_url)
    yield opened
    opened.dispose()


def schema(engine: sa.Engine) -> dict[str, dict[str, bool]]:
    """Table name -> column name -> nullable, as the database reports them."""
    inspector = sa.inspect(engine)
    return {
        table: {column["name"]: bool(column["nullable"]) for column in inspector.get_columns(table)}
        for table in inspector.get_table_names()
    }


def test_migrate_creates_every_table_with_the_same_columns(engine: sa.Engine) -> None:
    assert sa.inspect(engine).get_table_names() == []
    migrate(engine)
    found = schema(engine)
    assert set(metadata.tables) <= set(found)
    assert set(found) - set(metadata.tables) == {"alembic_version"}
    for name, table in metadata.tables.items():
        assert list(found[name]) == [c.name for c in table.columns], name
        assert found[name] == {c.name: bool(c.nullable) for c in table.columns}, name


def test_migrate_creates_the_declared_indexes_and_uniques(engine: sa.Engine) -> None:
    migrate(engine)
    inspector = sa.inspect(engine)
    for name, table in metadata.tables.items():
        indexed = {tuple(str(c) for c in ix["column_names"]) for ix in inspector.get_indexes(name)}
        unique = {tuple(str(c) for c in uq["column_names"]) for uq in inspector.get_unique_constraints(name)}
        unique |= {
            tuple(str(c) for c in ix["column_names"]) for ix in inspector.get_indexes(name) if ix["unique"]
        }
        for index in table.indexes:
            assert tuple(c.name for c in index.columns) in indexed, (name, index.name)
        for column in table.columns:
            if column.unique:
                assert (column.name,) in unique, (name, column.name)
        primary = inspector.get_pk_constraint(name)["constrained_columns"]
        assert primary == [c.name for c in table.primary_key.columns], name
    foreign = inspector.get_foreign_keys("api_keys")
    assert [(fk["constrained_columns"], fk["referred_table"]) for fk in foreign] == [
        (["tenant_id"], "tenants")
    ]


def test_migrate_is_idempotent(engine: sa.Engine) -> None:
    migrate(engine)
    with engine.begin() as connection:
        versions.bump(connection, versions.AUTH)
    first = schema(engine)
    migrate(engine)
    assert schema(engine) == first
    with engine.connect() as connection:
        rows = connection.execute(sa.select(state_versions)).all()
        assert sorted(tuple(r) for r in rows) == [("auth", 1), ("routes", 0)]
        head = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    assert head == ["0003"]


def test_fresh_database_has_auth_version_zero(engine: sa.Engine) -> None:
    migrate(engine)
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(state_versions.c.version).where(state_versions.c.name == "auth")
        ).one()
        assert row.version == 0
        assert versions.current(connection, versions.AUTH) == 0


def test_bump_moves_the_auth_version(engine: sa.Engine) -> None:
    migrate(engine)
    with engine.begin() as connection:
        versions.bump(connection, versions.AUTH)
        versions.bump(connection, versions.AUTH)
    with engine.connect() as connection:
        assert versions.current(connection, versions.AUTH) == 2
