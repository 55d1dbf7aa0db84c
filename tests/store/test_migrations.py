"""Migrations create exactly the tables the code uses, on SQLite and PostgreSQL, and can run again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lockgate.service_errors import Invalid
from lockgate.store import versions
from lockgate.store.database import (
    MIGRATIONS,
    SCHEMA_HEAD,
    migrate,
    open_engine,
    require_current_schema,
    schema_revision,
)
from lockgate.store.tables import (
    control_tokens,
    eval_runs,
    metadata,
    request_log,
    route_history,
    state_versions,
)


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
        assert sorted(tuple(r) for r in rows) == [("auth", 1), ("limits", 0), ("routes", 0)]
        head = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    assert head == [SCHEMA_HEAD]


def test_the_schema_head_the_code_expects_is_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_HEAD]


def test_a_store_at_another_schema_is_refused_until_migrated(engine: sa.Engine) -> None:
    with pytest.raises(Invalid, match="run `lockgate migrate` first"):
        require_current_schema(engine)
    _upgrade_to(engine, "0003")
    assert schema_revision(engine) == "0003"
    with pytest.raises(Invalid, match=f"needs {SCHEMA_HEAD}: run `lockgate migrate`"):
        require_current_schema(engine)
    migrate(engine)
    require_current_schema(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(Invalid, match="newer than this lockgate knows"):
        require_current_schema(engine)


def test_upgrading_to_0004_keeps_data_and_closes_old_gaps(engine: sa.Engine) -> None:
    """Tokens that never expired get an expiry, client-side eval runs are marked as such, and pointer
    history starts from today's pointers so rollback targets stay valid."""
    _upgrade_to(engine, "0003")
    now = datetime.now(UTC)
    rows: list[tuple[str, dict[str, object]]] = [
        ("tenants", {"id": "t1", "name": "default", "disabled": False, "created_at": now}),
        ("users", {"id": "u1", "name": "erin", "disabled": False, "created_at": now}),
        ("control_tokens", {"id": "k1", "user_id": "u1", "prefix": "lgc-00000000", "token_hash": "0" * 64}),
        ("releases", {"id": "rel_a", "tenant_id": "t1", "route": "r", "spec": "{}", "created_by": "erin"}),
        ("releases", {"id": "rel_b", "tenant_id": "t1", "route": "r", "spec": "{}", "created_by": "erin"}),
        (
            "route_pointers",
            {"tenant_id": "t1", "route": "r", "environment": "prod", "release_id": "rel_b"}
            | {"previous_release_id": "rel_a", "updated_by": "dan", "updated_at": now},
        ),
        (
            "datasets",
            {"id": "d1", "tenant_id": "t1", "name": "golden", "version": 1, "sha256": "0" * 64}
            | {"spec": "{}", "cases": "[]", "created_by": "erin"},
        ),
        (
            "eval_runs",
            {"id": "run1", "tenant_id": "t1", "release_id": "rel_b", "dataset_id": "d1", "repeats": 1}
            | {"status": "complete", "settings": "{}", "created_by": "erin", "started_at": now},
        ),
    ]
    with engine.begin() as connection:
        for name, given in rows:
            stamped = name in ("control_tokens", "releases", "datasets")
            values = {**given, "created_at": now} if stamped else given
            table = sa.table(name, *(sa.column(key) for key in values))
            connection.execute(table.insert().values(**values))
    migrate(engine)
    with engine.connect() as connection:
        expires = connection.execute(sa.select(control_tokens.c.expires_at)).scalar()
        origin = connection.execute(sa.select(eval_runs.c.origin)).scalar()
        history = connection.execute(
            sa.select(route_history.c.release_id, route_history.c.previous_release_id).order_by(
                route_history.c.id
            )
        ).all()
    assert expires is not None and timedelta(days=89) < expires - now < timedelta(days=91)
    assert origin == "client"
    assert [tuple(h) for h in history] == [("rel_a", None), ("rel_b", "rel_a")]


def test_upgrading_to_0005_marks_existing_requests_as_served_outside_any_rollout(engine: sa.Engine) -> None:
    _upgrade_to(engine, "0004")
    values = {
        "id": "req_1",
        "created_at": datetime.now(UTC),
        "endpoint": "chat.completions",
        "stream": False,
        "status_code": 200,
        "latency_ms": 1.0,
        "input_tokens": 1,
        "output_tokens": 1,
        "usage_estimated": False,
        "cost_usd": 0.5,
        "attempts": 1,
        "fallback": False,
    }
    with engine.begin() as connection:
        connection.execute(sa.table("request_log", *(sa.column(k) for k in values)).insert().values(**values))
    migrate(engine)
    with engine.connect() as connection:
        row = connection.execute(sa.select(request_log)).one()
    assert (row.shadow, row.arm, row.rollout_id, row.cost_usd) == (False, None, None, 0.5)
    assert (row.team, row.cache) == (None, None)  # 0006: no team, not served from a cache


def _upgrade_to(engine: sa.Engine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


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
