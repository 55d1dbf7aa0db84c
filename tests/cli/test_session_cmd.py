"""``lockgate login``, ``logout`` and ``whoami``: which server the CLI talks to and as whom, saved as
profiles in ``$XDG_CONFIG_HOME/lockgate/profiles.json``."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from lockgate.security.rbac import Actor, Role
from lockgate.services import Services
from tests.support.cli import Cli
from tests.support.people import token_of

CODE = re.compile(r"lgi-[0-9a-f]{8}-\S+")
# Only what `lockgate login` saved: no LOCKGATE_URL, no LOCKGATE_TOKEN.
BARE: dict[str, Any] = {"LOCKGATE_URL": None, "LOCKGATE_TOKEN": None}


def profiles_file(cli: Cli) -> Path:
    return cli.home / ".config" / "lockgate" / "profiles.json"


def saved(cli: Cli) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(profiles_file(cli).read_bytes())
    return document


def whoami(cli: Cli, *args: str, **env: str | None) -> str:
    result = cli.ok("whoami", *args, **(BARE | env))
    return result.stdout.split(" at ")[0]


def test_login_saves_a_private_profile_that_later_commands_use(cli: Cli, admin_token: str) -> None:
    result = cli.ok("login", "--url", cli.url, "--token", admin_token, **BARE)
    path = profiles_file(cli)
    assert result.stdout == (
        f"logged in to {cli.url} as admin (default: admin); profile 'default' saved in {path}\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert saved(cli) == {
        "current": "default",
        "profiles": {"default": {"url": cli.url, "token": admin_token}},
    }

    shown = cli.ok("whoami", **BARE)
    assert shown.stdout == f"admin at {cli.url}\n  default: admin\n"
    assert cli.json("whoami") == {"name": "admin", "roles": {"default": ["admin"]}}
    assert "default" in cli.ok("tenants", "list", **BARE).stdout


def test_profiles_are_chosen_by_flag_environment_or_login_use(
    cli: Cli, services: Services, admin: Actor, admin_token: str
) -> None:
    erin = token_of(services, admin, "erin", Role.EDITOR)
    cli.ok("login", "--url", cli.url, "--token", admin_token, "--profile", "ops", **BARE)
    second = cli.ok("login", "--url", cli.url, "--token", erin, "--profile", "erin", **BARE)
    assert "the current profile is still 'ops'" in second.stderr

    assert whoami(cli) == "admin"  # the first profile saved is the current one
    assert whoami(cli, "--profile", "erin") == "erin"
    assert whoami(cli, LOCKGATE_PROFILE="erin") == "erin"
    assert (
        whoami(cli, "--profile", "erin", LOCKGATE_TOKEN=admin_token) == "admin"
    )  # a token given outright wins
    unknown = cli.fails("whoami", "--profile", "nope", **BARE)
    assert "no profile 'nope'; saved profiles: erin, ops" in unknown.stderr
    cli.ok("login", "--url", cli.url, "--token", erin, "--profile", "erin", "--use", **BARE)
    assert whoami(cli) == "erin"

    assert cli.ok("logout", **BARE).stdout == "forgot profile 'erin'\n"
    assert whoami(cli) == "admin"  # the remaining profile becomes current
    again = cli.fails("logout", "--profile", "erin", **BARE)
    assert "no saved profile 'erin'" in again.stderr
    cli.ok("logout", "--profile", "ops", **BARE)
    assert saved(cli) == {"current": None, "profiles": {}}
    gone = cli.fails("whoami", **BARE)
    assert "no server: set LOCKGATE_URL" in gone.stderr


def test_an_invitation_is_redeemed_once(cli: Cli) -> None:
    code = cli.ok("users", "invite", "erin", "--role", "editor", "-q").stdout.strip()
    assert CODE.fullmatch(code)

    redeemed = cli.ok("login", "--url", cli.url, "--invite", code, "--profile", "erin", **BARE)
    token = saved(cli)["profiles"]["erin"]["token"]
    assert token.startswith("lgc-")
    assert token not in redeemed.output  # the new token goes into the profile, not onto the screen
    assert redeemed.stdout.startswith(f"redeemed the invitation: token {token[:12]} expires ")
    assert f"as erin (default: editor); profile 'erin' saved in {profiles_file(cli)}" in redeemed.stdout
    assert whoami(cli) == "erin"

    second = cli.fails("login", "--url", cli.url, "--invite", code, "--profile", "mallory", **BARE)
    assert f"invitation code {code[:12]} is already redeemed" in second.stderr
    assert "Traceback" not in second.output
    assert set(saved(cli)["profiles"]) == {"erin"}


def test_a_bad_token_is_refused_and_nothing_is_saved(cli: Cli) -> None:
    refused = cli.fails("login", "--url", cli.url, "--token", "lgc-00000000-forged", **BARE)
    assert "invalid control token" in refused.stderr
    assert "Traceback" not in refused.output
    assert not profiles_file(cli).exists()
    forged = cli.fails("whoami", "--token", "lgc-00000000-forged")
    assert "invalid control token" in forged.stderr
    assert "lockgate login" in forged.stderr


@pytest.fixture
def offline(tmp_path: Path) -> Cli:
    """The CLI with nothing configured: no server, no token, no profile."""
    return Cli("", None, tmp_path)


def test_without_a_server_the_message_says_how_to_name_one(offline: Cli) -> None:
    result = offline.fails("whoami", **BARE)
    assert result.stderr == (
        "Error: no server: set LOCKGATE_URL (e.g. http://127.0.0.1:4000) or run `lockgate login --url URL`\n"
    )
    usage = offline.fails("login", "--token", "lgc-00000000-x", code=2, **BARE)
    assert "--url" in usage.stderr
    neither = offline.fails("login", "--url", "http://127.0.0.1:1", code=2, **BARE)
    assert "give --token TOKEN or --invite CODE" in neither.stderr
    scheme = offline.fails("whoami", "--url", "127.0.0.1:4000", "--token", "lgc-00000000-x", **BARE)
    assert "must start with http:// or https://" in scheme.stderr


def test_an_unreachable_server_or_a_broken_profiles_file_is_one_line(offline: Cli) -> None:
    for args in (
        ["whoami", "--url", "http://127.0.0.1:1", "--token", "lgc-00000000-x"],
        ["login", "--url", "http://127.0.0.1:1", "--token", "lgc-00000000-x"],
        ["tenants", "create", "acme", "--url", "http://127.0.0.1:1"],
    ):
        result = offline.fails(*args, **BARE)
        assert (
            result.stderr
            == "Error: cannot reach lockgate at http://127.0.0.1:1: [Errno 111] Connection refused\n"
        )
        assert "Traceback" not in result.output

    path = profiles_file(offline)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    broken = offline.fails("whoami", **BARE)
    assert broken.stderr == f"Error: {path} is not valid JSON; fix or delete it\n"
