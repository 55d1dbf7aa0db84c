"""``lockgate tenants`` and ``lockgate keys`` against a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from lockgate.cli.main import cli
from lockgate.instance import Instance
from lockgate.security.apikeys import digest
from lockgate.store.tables import api_keys

KEY_LINE = re.compile(r"^key:\s+(?P<key>lg-[0-9a-f]{8}-\S+)$", re.MULTILINE)
PREFIX_LINE = re.compile(r"^prefix:\s+(?P<prefix>lg-[0-9a-f]{8})$", re.MULTILINE)


class Cli:
    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(cli, [*args, "--data-dir", str(self.instance.data)])

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str) -> Any:
        """The listing without what first start created (tenant ``default``, the bootstrap admin key)."""
        items = json.loads(self.ok(*args, "--json").stdout)
        return [i for i in items if i.get("name") not in ("default", "bootstrap admin")]


@pytest.fixture
def run(instance: Instance, admin_token: str) -> Cli:
    """The CLI acting as the bootstrap admin (LOCKGATE_TOKEN is exported by ``admin_token``)."""
    return Cli(instance)


def test_mutations_need_a_control_token(run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCKGATE_TOKEN")
    result = run("tenants", "create", "acme")
    assert result.exit_code == 1
    assert "missing control token" in result.output
    result = run("keys", "create", "--tenant", "default", "--token", "lgc-00000000-forged")
    assert result.exit_code == 1
    assert "invalid control token" in result.output


def create_key(run: Cli, *args: str) -> tuple[str, str]:
    result = run.ok("keys", "create", *args)
    key = KEY_LINE.search(result.stdout)
    prefix = PREFIX_LINE.search(result.stdout)
    assert key is not None, result.stdout
    assert prefix is not None, result.stdout
    return key["key"], prefix["prefix"]


def dump_database(engine: sa.Engine) -> str:
    """Every row of every table in the store, as text."""
    reflected = sa.MetaData()
    reflected.reflect(engine)
    assert "api_keys" in reflected.tables
    parts: list[str] = []
    with engine.connect() as connection:
        for table in reflected.sorted_tables:
            for row in connection.execute(sa.select(table)):
                parts.append(f"{table.name}: {tuple(row)!r} {' '.join(str(v) for v in row)}")
    return "\n".join(parts)


def test_tenants_create_and_list(run: Cli) -> None:
    created = run.ok("tenants", "create", "acme", "--model", "m", "--model", "m2")
    assert created.stdout.startswith("created tenant acme (ten_")
    run.ok("tenants", "create", "beta")

    listing = run.ok("tenants", "list").stdout.splitlines()
    assert listing[0].split() == ["NAME", "ID", "CREATED", "MODELS"]
    rows = {line.split()[0]: line.split() for line in listing[1:]}
    assert set(rows) == {"acme", "beta", "default"}  # default: created on first start
    assert rows["acme"][-1] == "m,m2"
    assert rows["beta"][-1] == "*"

    as_json = run.json("tenants", "list")
    by_name = {t["name"]: t for t in as_json}
    assert by_name["acme"]["allowed_models"] == ["m", "m2"]
    assert by_name["beta"]["allowed_models"] is None
    assert by_name["acme"]["disabled"] is False
    assert by_name["acme"]["id"].startswith("ten_")
    assert by_name["acme"]["id"] in created.stdout


def test_duplicate_tenant_is_refused(run: Cli) -> None:
    run.ok("tenants", "create", "acme")
    result = run("tenants", "create", "acme")
    assert result.exit_code != 0
    assert "tenant 'acme' already exists" in result.stderr
    assert len(run.json("tenants", "list")) == 1


def test_invalid_tenant_name_is_refused(run: Cli) -> None:
    result = run("tenants", "create", "Acme Corp")
    assert result.exit_code != 0
    assert "lower-case" in result.stderr
    assert run.json("tenants", "list") == []


def test_key_create_prints_the_key_once_and_list_never_shows_it(run: Cli) -> None:
    run.ok("tenants", "create", "acme", "--model", "m")
    result = run.ok("keys", "create", "--tenant", "acme", "--expires-in", "30d", "--model", "m")
    match = KEY_LINE.search(result.stdout)
    assert match is not None
    key = match["key"]
    assert result.stdout.count(key) == 1
    assert "only its hash" in result.stderr
    prefix_match = PREFIX_LINE.search(result.stdout)
    assert prefix_match is not None
    prefix = prefix_match["prefix"]
    assert key.startswith(prefix + "-")
    secret = key.removeprefix(prefix + "-")

    expires = re.search(r"^expires:\s+(\S+ \S+)$", result.stdout, re.MULTILINE)
    assert expires is not None
    expires_at = datetime.strptime(expires[1], "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expires_at - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)

    table = run.ok("keys", "list").stdout
    assert prefix in table
    assert secret not in table
    row = next(line for line in table.splitlines() if prefix in line).split()
    assert row[2:5] == ["acme", "client", "active"]
    assert row[-1] == "m"

    listed = run.json("keys", "list")
    assert len(listed) == 1
    assert listed[0]["prefix"] == prefix
    assert listed[0]["tenant"] == "acme"
    assert listed[0]["allowed_models"] == ["m"]
    assert listed[0]["status"] == "active"
    assert secret not in json.dumps(listed)


def test_keys_list_filters_by_tenant(run: Cli) -> None:
    run.ok("tenants", "create", "acme")
    run.ok("tenants", "create", "beta")
    _, acme_prefix = create_key(run, "--tenant", "acme")
    _, beta_prefix = create_key(run, "--tenant", "beta")
    assert [k["prefix"] for k in run.json("keys", "list", "--tenant", "acme")] == [acme_prefix]
    assert [k["prefix"] for k in run.json("keys", "list")] == [acme_prefix, beta_prefix]


def test_revoke_by_prefix(run: Cli) -> None:
    run.ok("tenants", "create", "acme")
    _, prefix = create_key(run, "--tenant", "acme")
    _, other = create_key(run, "--tenant", "acme")
    result = run.ok("keys", "revoke", prefix)
    assert result.stdout.startswith("revoked key_")
    assert prefix in result.stdout
    statuses = {k["prefix"]: (k["status"], k["revoked_at"]) for k in run.json("keys", "list")}
    assert statuses[prefix][0] == "revoked"
    assert statuses[prefix][1] is not None
    assert statuses[other] == ("active", None)


def test_revoke_by_id_and_twice_keeps_the_first_time(run: Cli) -> None:
    run.ok("tenants", "create", "acme")
    create_key(run, "--tenant", "acme")
    key_id = run.json("keys", "list")[0]["id"]
    run.ok("keys", "revoke", key_id)
    first = run.json("keys", "list")[0]["revoked_at"]
    run.ok("keys", "revoke", key_id)
    assert run.json("keys", "list")[0]["revoked_at"] == first


def test_revoke_unknown_key_is_an_error(run: Cli) -> None:
    result = run("keys", "revoke", "lg-00000000")
    assert result.exit_code != 0
    assert "no key with id or prefix 'lg-00000000'" in result.stderr


def test_key_for_unknown_tenant_is_an_error(run: Cli) -> None:
    result = run("keys", "create", "--tenant", "nope")
    assert result.exit_code != 0
    assert "unknown tenant 'nope'" in result.stderr
    assert "key:" not in result.stdout


def test_bad_expiry_is_a_usage_error(run: Cli) -> None:
    run.ok("tenants", "create", "acme")
    result = run("keys", "create", "--tenant", "acme", "--expires-in", "3x")
    assert result.exit_code == 2
    assert "30d" in result.stderr
    assert "key:" not in result.stdout
    assert run.json("keys", "list") == []


def test_store_holds_only_a_peppered_hash(run: Cli, instance: Instance) -> None:
    run.ok("tenants", "create", "acme", "--model", "m")
    key, prefix = create_key(run, "--tenant", "acme", "--expires-in", "30d", "--model", "m")
    secret = key.removeprefix(prefix + "-")
    assert len(secret) >= 40

    with instance.engine.connect() as connection:
        stored = connection.execute(
            sa.select(api_keys.c.key_hash).where(api_keys.c.prefix == prefix)
        ).scalar()
    assert isinstance(stored, str)
    assert stored != key
    assert re.fullmatch(r"[0-9a-f]{64}", stored)
    assert stored == digest(instance.pepper, key)
    assert stored != digest(b"", key)

    dump = dump_database(instance.engine)
    assert prefix in dump
    assert secret not in dump
    assert key not in dump
