"""``lockgate users``: invitations, roles and the list of users, against a running server (SQLite and
PostgreSQL). Nobody mints a token for someone else: an admin hands out a code, the invitee redeems it."""

from __future__ import annotations

import re
from typing import Any

from lockgate.security.rbac import Actor, Role
from lockgate.services import Services
from tests.support.cli import Cli
from tests.support.people import token_of

CODE = re.compile(r"lgi-[0-9a-f]{8}-\S+")
BARE: dict[str, Any] = {"LOCKGATE_URL": None, "LOCKGATE_TOKEN": None}


def test_invite_hands_out_a_code_and_never_the_invitees_token(cli: Cli) -> None:
    quiet = cli.ok("users", "invite", "erin", "--role", "editor", "--role", "approver", "-q")
    code = quiet.stdout.strip()
    assert quiet.stdout == f"{code}\n"
    assert CODE.fullmatch(code)
    assert quiet.stderr == ""

    loud = cli.ok("users", "invite", "april", "--role", "approver", "--expires-in", "12h")
    lines = loud.stdout.splitlines()
    assert lines[0] == "invited april to default as approver"
    assert re.fullmatch(r"invitation code \(works once, until \S+\): lgi-[0-9a-f]{8}-\S+", lines[1])
    assert f"april runs: lockgate login --url {cli.url} --invite <code>" in loud.stderr

    login = cli.ok("login", "--url", cli.url, "--invite", code, "--profile", "erin", **BARE)
    assert "as erin (default: approver+editor)" in login.stdout
    for output in (quiet.output, loud.output):
        assert "lgc-" not in output  # the inviting admin never sees a control token

    audit = cli.ok("audit", "show", "--action", "user.invite").stdout
    assert re.search(r"\badmin\s+user\.invite\s+success\b.*\buser:erin\b", audit), audit


def test_invitations_are_refused_with_the_reason(cli: Cli, services: Services, admin: Actor) -> None:
    cli.ok("users", "invite", "erin", "--role", "editor", "-q")
    duplicate = cli.fails("users", "invite", "erin", "--role", "viewer")
    assert "user 'erin' already exists; give them roles in 'default' with `lockgate users grant`" in (
        duplicate.stderr
    )
    editor = cli.as_(token_of(services, admin, "eddie", Role.EDITOR))
    refused = editor.fails("users", "invite", "mallory", "--role", "admin")
    assert "eddie may not users.invite in tenant 'default': it needs admin" in refused.stderr
    assert "lgi-" not in refused.output
    no_role = cli.fails("users", "invite", "mallory", code=2)
    assert "--role" in no_role.stderr
    assert [u["name"] for u in cli.json("users", "list")] == ["admin", "eddie", "erin"]


def test_grant_sets_roles_in_a_tenant(cli: Cli, services: Services, admin: Actor) -> None:
    erin = cli.as_(token_of(services, admin, "erin", Role.VIEWER))
    assert cli.ok("users", "grant", "erin", "editor", "approver").stdout == (
        "erin: default: approver, editor\n"
    )
    assert erin.json("whoami")["roles"] == {"default": ["approver", "editor"]}

    # A tenant's creator administers it and may give people roles there.
    cli.ok("tenants", "create", "acme")
    cli.ok("users", "grant", "erin", "viewer", "--tenant", "acme")
    assert erin.json("whoami")["roles"] == {"acme": ["viewer"], "default": ["approver", "editor"]}

    # No roles cuts erin off in that tenant.
    assert cli.ok("users", "grant", "erin").stdout == "erin: acme: viewer\n"
    assert erin.json("whoami")["roles"] == {"acme": ["viewer"]}
    cut_off = erin.fails("models", "list")
    assert "erin may not models.list in tenant 'default': it needs viewer" in cut_off.stderr

    unknown = cli.fails("users", "grant", "nobody", "viewer")
    assert "unknown user 'nobody'" in unknown.stderr
    bad_role = cli.fails("users", "grant", "erin", "owner", code=2)
    assert "'owner' is not one of" in bad_role.stderr


def test_only_a_platform_admin_lists_users(cli: Cli, services: Services, admin: Actor) -> None:
    viewer = cli.as_(token_of(services, admin, "vic", Role.VIEWER))
    cli.ok("users", "invite", "erin", "--role", "editor", "-q")
    lines = cli.ok("users", "list").stdout.splitlines()
    assert [line.split() for line in lines] == [
        ["admin", "default:", "admin"],
        ["erin", "default:", "editor"],
        ["vic", "default:", "viewer"],
    ]
    listed = cli.json("users", "list")
    assert [(u["name"], u["roles"]) for u in listed] == [
        ("admin", {"default": ["admin"]}),
        ("erin", {"default": ["editor"]}),
        ("vic", {"default": ["viewer"]}),
    ]
    refused = viewer.fails("users", "list")
    assert "vic may not users.list" in refused.stderr
    assert "erin" not in refused.output
    assert "Traceback" not in refused.output
