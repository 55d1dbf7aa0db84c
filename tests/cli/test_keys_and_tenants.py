"""``lockgate tenants`` and ``lockgate keys`` as a client of a running server (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from lockgate.instance import Instance
from lockgate.security.apikeys import digest
from lockgate.security.rbac import Actor, Role
from lockgate.services import Services
from lockgate.store.tables import api_keys
from tests.support.cli import Cli
from tests.support.people import token_of

KEY_LINE = re.compile(r"^key:\s+(?P<key>lg-[0-9a-f]{8}-\S+)$", re.MULTILINE)
PREFIX_LINE = re.compile(r"^prefix:\s+(?P<prefix>lg-[0-9a-f]{8})$", re.MULTILINE)


def create_key(cli: Cli, *args: str) -> tuple[str, str]:
    result = cli.ok("keys", "create", *args)
    key = KEY_LINE.search(result.stdout)
    prefix = PREFIX_LINE.search(result.stdout)
    assert key is not None, result.stdout
    assert prefix is not None, result.stdout
    return key["key"], prefix["prefix"]


def keys(cli: Cli, tenant: str) -> list[dict[str, Any]]:
    """The tenant's keys, without the admin key first start made in ``default``."""
    listed: list[dict[str, Any]] = cli.json("keys", "list", "--tenant", tenant)
    return [k for k in listed if k["name"] != "bootstrap admin"]


def tenant_names(cli: Cli) -> list[str]:
    return sorted(t["name"] for t in cli.json("tenants", "list"))


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


def test_commands_need_a_valid_control_token(cli: Cli) -> None:
    missing = cli.as_(None).fails("tenants", "create", "acme")
    assert "missing control token" in missing.stderr
    assert "lockgate login" in missing.stderr
    forged = cli.fails("keys", "create", "--token", "lgc-00000000-forged")
    assert "invalid control token" in forged.stderr
    assert "key:" not in forged.stdout
    assert "Traceback" not in missing.output + forged.output
    assert tenant_names(cli) == ["default"]
    assert keys(cli, "default") == []


def test_tenants_create_and_list(cli: Cli) -> None:
    created = cli.ok("tenants", "create", "acme", "--model", "m", "--model", "other")
    assert created.stdout.startswith("created tenant acme (ten_")
    cli.ok("tenants", "create", "beta")

    listing = cli.ok("tenants", "list").stdout.splitlines()
    assert listing[0].split() == ["NAME", "ID", "CREATED", "MODELS"]
    rows = {line.split()[0]: line.split() for line in listing[1:]}
    assert set(rows) == {"acme", "beta", "default"}  # default: created on first start
    assert rows["acme"][-1] == "m,other"
    assert rows["beta"][-1] == "*"

    by_name = {t["name"]: t for t in cli.json("tenants", "list")}
    assert by_name["acme"]["allowed_models"] == ["m", "other"]
    assert by_name["beta"]["allowed_models"] is None
    assert by_name["acme"]["id"].startswith("ten_")
    assert by_name["acme"]["id"] in created.stdout

    # Whoever creates a tenant administers it: they can issue its keys and invite its people at once.
    assert cli.json("whoami")["roles"]["acme"] == ["admin"]
    create_key(cli, "--tenant", "acme")


def test_refused_tenants_name_the_reason(cli: Cli) -> None:
    cli.ok("tenants", "create", "acme")
    duplicate = cli.fails("tenants", "create", "acme")
    assert "tenant 'acme' already exists" in duplicate.stderr
    invalid = cli.fails("tenants", "create", "Acme Corp")
    assert invalid.stderr.startswith("Error: name: ")
    unknown = cli.fails("tenants", "create", "beta", "--model", "gpt-9")
    assert "unknown model(s) gpt-9; this gateway serves m, other" in unknown.stderr
    assert tenant_names(cli) == ["acme", "default"]


def test_a_viewer_is_refused_and_the_refusal_is_audited(cli: Cli, services: Services, admin: Actor) -> None:
    viewer = cli.as_(token_of(services, admin, "vic", Role.VIEWER))
    key = viewer.fails("keys", "create", "--role", "admin", "--name", "backdoor")
    assert "vic may not keys.create in tenant 'default': it needs admin" in key.stderr
    assert "key:" not in key.stdout
    tenant = viewer.fails("tenants", "create", "evil")
    assert "vic may not tenants.create: it needs admin of the platform tenant" in tenant.stderr
    assert "Traceback" not in key.output + tenant.output

    assert keys(cli, "default") == []
    assert tenant_names(cli) == ["default"]
    for action in ("keys.create", "tenants.create"):
        entries = cli.json("audit", "show", "--action", action)
        assert [(e["actor"], e["outcome"]) for e in entries] == [("vic", "denied")]
    table = cli.ok("audit", "show", "--limit", "5").stdout
    assert re.search(r"\bvic\s+tenants\.create\s+denied\b", table), table


def test_key_create_prints_the_key_once_and_list_never_shows_it(cli: Cli) -> None:
    cli.ok("tenants", "create", "acme", "--model", "m")
    result = cli.ok("keys", "create", "--tenant", "acme", "--expires-in", "30d", "--model", "m")
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

    table = cli.ok("keys", "list", "--tenant", "acme").stdout
    assert table.splitlines()[0].split() == [
        "ID",
        "PREFIX",
        "ENV",
        "ROLE",
        "STATUS",
        "EXPIRES",
        "TEAM",
        "MODELS",
    ]
    assert prefix in table
    assert secret not in table
    row = next(line for line in table.splitlines() if prefix in line).split()
    assert row[2:5] == ["-", "client", "active"]
    assert row[-2:] == ["-", "m"]  # no team

    listed = keys(cli, "acme")
    assert len(listed) == 1
    assert listed[0]["prefix"] == prefix
    assert listed[0]["tenant"] == "acme"
    assert listed[0]["allowed_models"] == ["m"]
    assert listed[0]["status"] == "active"
    assert secret not in orjson.dumps(listed).decode()


def test_a_key_reaches_only_what_its_tenant_allows(cli: Cli) -> None:
    cli.ok("tenants", "create", "acme", "--model", "m")
    refused = cli.fails("keys", "create", "--tenant", "acme", "--model", "other")
    assert "other" in refused.stderr
    assert "key:" not in refused.stdout
    pinned = cli.ok("keys", "create", "--tenant", "acme", "--model", "route:support", "--env", "stage")
    assert KEY_LINE.search(pinned.stdout) is not None
    [listed] = keys(cli, "acme")
    assert (listed["allowed_models"], listed["environment"]) == (["route:support"], "stage")


def test_keys_list_shows_one_tenant(cli: Cli) -> None:
    cli.ok("tenants", "create", "acme")
    cli.ok("tenants", "create", "beta")
    _, acme_prefix = create_key(cli, "--tenant", "acme")
    _, beta_prefix = create_key(cli, "--tenant", "beta")
    assert [k["prefix"] for k in keys(cli, "acme")] == [acme_prefix]
    assert [k["prefix"] for k in keys(cli, "beta")] == [beta_prefix]
    assert keys(cli, "default") == []


def test_revoke_by_prefix_and_by_id(cli: Cli) -> None:
    cli.ok("tenants", "create", "acme")
    _, prefix = create_key(cli, "--tenant", "acme")
    _, other = create_key(cli, "--tenant", "acme")
    result = cli.ok("keys", "revoke", prefix, "--tenant", "acme")
    assert result.stdout.startswith("revoked key_")
    assert prefix in result.stdout
    statuses = {k["prefix"]: (k["status"], k["revoked_at"]) for k in keys(cli, "acme")}
    assert statuses[prefix][0] == "revoked"
    assert statuses[prefix][1] is not None
    assert statuses[other] == ("active", None)

    # Revoking again (by id this time) keeps the first revocation time.
    key_id = next(k["id"] for k in keys(cli, "acme") if k["prefix"] == prefix)
    cli.ok("keys", "revoke", key_id, "--tenant", "acme")
    assert {k["prefix"]: k["revoked_at"] for k in keys(cli, "acme")}[prefix] == statuses[prefix][1]


def test_unknown_keys_and_tenants_are_errors(cli: Cli) -> None:
    unknown_key = cli.fails("keys", "revoke", "lg-00000000")
    assert "no key with id or prefix 'lg-00000000' in tenant 'default'" in unknown_key.stderr
    # Nobody holds a role in a tenant that does not exist, so the answer does not say whether it does.
    unknown_tenant = cli.fails("keys", "create", "--tenant", "nope")
    assert "admin may not keys.create in tenant 'nope'" in unknown_tenant.stderr
    assert "key:" not in unknown_tenant.stdout


def test_bad_expiry_is_a_usage_error(cli: Cli) -> None:
    result = cli.fails("keys", "create", "--expires-in", "3x", code=2)
    assert "30d" in result.stderr
    assert "key:" not in result.stdout
    assert keys(cli, "default") == []


def test_store_holds_only_a_peppered_hash(cli: Cli, instance: Instance) -> None:
    cli.ok("tenants", "create", "acme", "--model", "m")
    key, prefix = create_key(cli, "--tenant", "acme", "--expires-in", "30d", "--model", "m")
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
