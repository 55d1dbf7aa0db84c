"""``lockgate recover-admin``: the operator's way back in when every platform admin token is gone."""

from __future__ import annotations

from click.testing import CliRunner

from lockgate.cli.main import cli
from lockgate.instance import Instance
from lockgate.security.rbac import Actor, Role
from lockgate.server.bootstrap import Bootstrap
from lockgate.services import Services
from tests.support.people import token_of


def test_a_platform_admin_gets_a_one_day_token_and_the_recovery_is_audited(
    instance: Instance, services: Services, first_start: Bootstrap, admin: Actor
) -> None:
    assert first_start.control_token is not None
    services.tokens.revoke(admin, first_start.control_token.info.prefix)  # every admin token is gone
    result = CliRunner().invoke(cli, ["recover-admin", "admin", "--data-dir", str(instance.data)])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    recovered = services.tokens.authenticate(token)
    assert recovered.name == "admin" and recovered.has("default", Role.ADMIN)
    [info] = [t for t in services.tokens.list(recovered) if t.status() == "active"]
    assert info.name == "recovery"
    assert info.expires_at is not None and (info.expires_at - info.created_at).total_seconds() <= 86400
    [entry] = services.trail.recent(recovered, action="user.recover")
    assert (entry["actor"], entry["resource"], entry["source"]) == ("operator", "user:admin", "server host")
    assert token not in str(entry)


def test_only_a_platform_admin_can_be_recovered(instance: Instance, services: Services, admin: Actor) -> None:
    token_of(services, admin, "erin", Role.EDITOR)
    for name, why in (("erin", "not an admin of the platform tenant"), ("nobody", "unknown user")):
        result = CliRunner().invoke(cli, ["recover-admin", name, "--data-dir", str(instance.data)])
        assert result.exit_code == 1
        assert why in result.output
        assert "lgc-" not in result.output
