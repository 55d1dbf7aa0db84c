"""``lockgate tokens``: your own control tokens, created, listed, rotated and revoked against a running
server (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from lockgate.security.rbac import Actor, Role
from lockgate.services import Services
from tests.support.cli import Cli
from tests.support.people import token_of

TOKEN = re.compile(r"lgc-[0-9a-f]{8}-\S+")
BARE: dict[str, Any] = {"LOCKGATE_URL": None, "LOCKGATE_TOKEN": None}


def prefix(token: str) -> str:
    return token[: len("lgc-") + 8]


def create(cli: Cli, *args: str) -> str:
    result = cli.ok("tokens", "create", *args)
    token = result.stdout.strip()
    assert TOKEN.fullmatch(token), result.stdout
    assert result.stderr.startswith(f"token {prefix(token)} expires ")
    return token


def statuses(cli: Cli) -> dict[str, str]:
    return {t["prefix"]: t["status"] for t in cli.json("tokens", "list")}


def refused(cli: Cli, token: str) -> str:
    """What the server answers a command made with ``token``."""
    return cli.as_(token).fails("whoami").stderr


def test_create_prints_the_token_once_and_list_never_shows_it(cli: Cli, admin_token: str) -> None:
    token = create(cli, "--name", "ci-deploy", "--expires-in", "30d")
    assert cli.as_(token).ok("whoami").stdout.startswith("admin at ")

    table = cli.ok("tokens", "list").stdout
    assert table.splitlines()[0].split() == ["ID", "PREFIX", "NAME", "STATUS", "EXPIRES"]
    row = next(line for line in table.splitlines() if prefix(token) in line).split()
    assert row[2:4] == ["ci-deploy", "active"]
    expires_at = datetime.strptime(" ".join(row[4:6]), "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expires_at - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)

    listed = cli.json("tokens", "list")
    assert {t["prefix"] for t in listed} == {prefix(admin_token), prefix(token)}
    assert {t["user"] for t in listed} == {"admin"}
    for secret in (token, admin_token):
        assert secret.split("-", 2)[2] not in table + orjson.dumps(listed).decode()

    too_long = cli.fails("tokens", "create", "--expires-in", "400d")
    assert "expires_in_days" in too_long.stderr
    assert "lgc-" not in too_long.stdout


def test_rotate_replaces_the_token_and_the_profile_that_holds_it(cli: Cli, admin_token: str) -> None:
    cli.ok("login", "--url", cli.url, "--token", admin_token, **BARE)
    rotated = cli.ok("tokens", "rotate", **BARE)
    new = rotated.stdout.strip()
    assert TOKEN.fullmatch(new)
    assert "profile 'default' now holds the new token" in rotated.stderr

    assert f"control token {prefix(admin_token)} is revoked" in refused(cli, admin_token)
    assert cli.ok("whoami", **BARE).stdout.startswith("admin at ")  # through the updated profile
    profiles = (cli.home / ".config" / "lockgate" / "profiles.json").read_text()
    assert new in profiles
    assert admin_token not in profiles

    as_new = cli.as_(new)
    assert statuses(as_new) == {prefix(admin_token): "revoked", prefix(new): "active"}
    again = as_new.fails("tokens", "rotate", prefix(admin_token))
    assert f"token {prefix(admin_token)} is revoked; create a new one instead" in again.stderr


def test_rotate_another_token_by_prefix(cli: Cli, admin_token: str) -> None:
    ci = create(cli, "--name", "ci")
    rotated = cli.ok("tokens", "rotate", prefix(ci)).stdout.strip()
    assert "is revoked" in refused(cli, ci)
    assert cli.as_(rotated).ok("whoami").stdout.startswith("admin at ")
    assert cli.ok("whoami").stdout.startswith("admin at ")  # the token in use is untouched
    names = {t["prefix"]: (t["name"], t["status"]) for t in cli.json("tokens", "list")}
    assert names[prefix(rotated)] == ("ci", "active")


def test_revoke_makes_a_token_fail(cli: Cli, services: Services, admin: Actor) -> None:
    ci = create(cli, "--name", "ci")
    revoked = cli.ok("tokens", "revoke", prefix(ci))
    assert revoked.stdout.startswith(f"revoked {prefix(ci)} of admin at ")
    message = refused(cli, ci)
    assert f"control token {prefix(ci)} is revoked" in message
    assert "Traceback" not in message
    assert statuses(cli)[prefix(ci)] == "revoked"

    # Someone else's token: only a platform admin may revoke it.
    erin_token = token_of(services, admin, "erin", Role.EDITOR)
    erin = cli.as_(erin_token)
    assert prefix(ci) not in statuses(erin)
    other = erin.fails("tokens", "revoke", prefix(create(cli)))
    assert "you have no token" in other.stderr
    cli.ok("tokens", "revoke", prefix(erin_token))
    assert "is revoked" in refused(cli, erin_token)
