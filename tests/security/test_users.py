"""People: a tenant admin invites, the invitee redeems the code for their own token, roles are granted
per tenant. Every refusal is audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from lockgate.control.registry import ModelCard
from lockgate.security.rbac import Actor, Role
from lockgate.service_errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from lockgate.services import Services
from lockgate.store.tables import invitations
from tests.support.people import person


def newest(services: Services, admin: Actor) -> dict[str, Any]:
    return services.trail.recent(admin, limit=1)[0]


def card(name: str) -> ModelCard:
    return ModelCard(
        name=name, version="1", gateway_model="m", license="mit", intended_use="tests", owner_team="qa"
    )


@pytest.fixture
def acme_admin(services: Services, admin: Actor, admin_token: str) -> Actor:
    """otto: admin of tenant ``acme`` only (invited there by the platform admin who created it)."""
    services.tenants.create(admin, "acme")
    platform = services.tokens.authenticate(admin_token)  # now acme's admin too
    return person(services, platform, "otto", Role.ADMIN, tenant="acme")


def test_the_invitee_gets_their_own_token(services: Services, admin: Actor) -> None:
    invitation = services.users.invite(admin, "default", "erin", [Role.EDITOR, Role.APPROVER])
    assert (invitation.user, invitation.tenant, invitation.roles) == (
        "erin",
        "default",
        ["approver", "editor"],
    )
    assert invitation.code.startswith("lgi-")
    expected = datetime.now(UTC) + timedelta(hours=72)
    assert abs((invitation.expires_at - expected).total_seconds()) < 60
    # What the admin holds is a code, not a token: it authenticates nobody.
    with pytest.raises(Unauthorized):
        services.tokens.authenticate(invitation.code)

    token = services.users.redeem(invitation.code)
    assert token.user == "erin"
    erin = services.tokens.authenticate(token.secret)
    assert erin.name == "erin"
    assert erin.roles == {"default": frozenset({Role.EDITOR, Role.APPROVER})}
    assert services.users.get("erin").roles == {"default": ["approver", "editor"]}
    # The token is erin's to manage; the admin does not see it among theirs.
    assert [t.prefix for t in services.tokens.list(erin)] == [token.info.prefix]
    assert token.info.prefix not in {t.prefix for t in services.tokens.list(admin)}
    redeemed = services.trail.recent(admin, limit=1, action="user.redeem")[0]
    assert (redeemed["actor"], redeemed["after"]["token"]) == ("erin", token.info.prefix)


def test_an_invitation_code_works_once(services: Services, admin: Actor) -> None:
    invitation = services.users.invite(admin, "default", "erin", [Role.VIEWER])
    first = services.users.redeem(invitation.code)
    with pytest.raises(Unauthorized, match="already redeemed"):
        services.users.redeem(invitation.code)
    entry = newest(services, admin)
    assert (entry["actor"], entry["action"], entry["outcome"]) == ("erin", "invitations.redeem", "denied")
    assert services.tokens.authenticate(first.secret).name == "erin"
    assert [t.prefix for t in services.tokens.list(services.tokens.authenticate(first.secret))] == [
        first.info.prefix
    ]


def test_an_expired_invitation_code_fails(services: Services, admin: Actor) -> None:
    invitation = services.users.invite(admin, "default", "erin", [Role.VIEWER], expires_in_hours=1)
    assert abs((invitation.expires_at - datetime.now(UTC) - timedelta(hours=1)).total_seconds()) < 60
    with services.engine.begin() as connection:
        connection.execute(update(invitations).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with pytest.raises(Unauthorized, match="expired"):
        services.users.redeem(invitation.code)
    entry = newest(services, admin)
    assert (entry["action"], entry["outcome"]) == ("invitations.redeem", "denied")


@pytest.mark.parametrize("code", ["", "lgi-00000000-not-a-code", "lgc-00000000-a-token-is-no-code"])
def test_an_unknown_code_fails(services: Services, admin: Actor, code: str) -> None:
    with pytest.raises(Unauthorized, match="invalid"):
        services.users.redeem(code)
    entry = newest(services, admin)
    assert (entry["actor"], entry["action"], entry["outcome"]) == (
        "anonymous",
        "invitations.redeem",
        "denied",
    )


def test_inviting_an_existing_user_is_a_conflict(services: Services, admin: Actor, acme_admin: Actor) -> None:
    person(services, admin, "erin", Role.VIEWER)
    with pytest.raises(Conflict, match="users grant"):
        services.users.invite(admin, "default", "erin", [Role.ADMIN])
    with pytest.raises(Conflict):
        services.users.invite(acme_admin, "acme", "erin", [Role.EDITOR])  # in another tenant too
    assert services.users.get("erin").roles == {"default": ["viewer"]}


def test_a_tenant_admin_cannot_invite_into_another_tenant(
    services: Services, admin: Actor, acme_admin: Actor
) -> None:
    with pytest.raises(Forbidden):
        services.users.invite(acme_admin, "default", "mallory", [Role.ADMIN])
    entry = newest(services, admin)
    assert (entry["actor"], entry["action"], entry["outcome"]) == ("otto", "users.invite", "denied")
    assert entry["resource"] == "user:mallory"
    with pytest.raises(NotFound):
        services.users.get("mallory")
    # Nor give an existing user roles there.
    person(services, admin, "erin", Role.VIEWER)
    with pytest.raises(Forbidden):
        services.users.grant(acme_admin, "default", "erin", [Role.ADMIN])
    assert (newest(services, admin)["action"], newest(services, admin)["outcome"]) == (
        "users.grant",
        "denied",
    )
    assert services.users.get("erin").roles == {"default": ["viewer"]}
    # Within their own tenant they can.
    invitation = services.users.invite(acme_admin, "acme", "ann", [Role.EDITOR])
    assert services.tokens.authenticate(services.users.redeem(invitation.code).secret).roles == {
        "acme": frozenset({Role.EDITOR})
    }


def test_only_admins_invite(services: Services, admin: Actor) -> None:
    editor = person(services, admin, "erin", Role.EDITOR, Role.DEPLOYER, Role.APPROVER)
    with pytest.raises(Forbidden):
        services.users.invite(editor, "default", "friend", [Role.VIEWER])
    entry = newest(services, admin)
    assert (entry["actor"], entry["action"], entry["outcome"]) == ("erin", "users.invite", "denied")


@pytest.mark.parametrize(
    ("name", "hours"), [("Erin", None), ("a b", None), ("", None), ("erin", 0), ("erin", 24 * 31)]
)
def test_bad_invitations_are_refused(
    services: Services, admin: Actor, name: str, hours: float | None
) -> None:
    with pytest.raises(Invalid):
        services.users.invite(admin, "default", name, [Role.VIEWER], expires_in_hours=hours)
    assert [u.name for u in services.users.list(admin)] == ["admin"]


def test_grant_gives_an_existing_user_roles_in_another_tenant(
    services: Services, admin: Actor, admin_token: str, acme_admin: Actor
) -> None:
    erin = person(services, admin, "erin", Role.EDITOR)
    services.users.grant(acme_admin, "acme", "erin", [Role.VIEWER])
    erin = services.tokens.authenticate(services.tokens.create(erin).secret)
    assert erin.roles == {"default": frozenset({Role.EDITOR}), "acme": frozenset({Role.VIEWER})}
    assert services.registry.list(erin, "acme") == []
    granted = services.trail.recent(admin, limit=1, action="user.grant")[0]
    assert granted["before"] == {"tenant": "acme", "roles": []}
    assert granted["after"] == {"tenant": "acme", "roles": ["viewer"]}


def test_grant_with_no_roles_cuts_a_user_off(services: Services, admin: Actor) -> None:
    token = services.users.redeem(services.users.invite(admin, "default", "erin", [Role.EDITOR]).code)
    erin = services.tokens.authenticate(token.secret)
    services.registry.register(erin, "default", card("llm"))

    user = services.users.grant(admin, "default", "erin", [])
    assert user.roles == {}
    erin = services.tokens.authenticate(token.secret)  # the token still says who she is ...
    assert erin.roles == {}
    with pytest.raises(Forbidden):  # ... and lets her do nothing in the tenant
        services.registry.register(erin, "default", card("llm2"))
    with pytest.raises(Forbidden):
        services.registry.list(erin, "default")
    assert services.tenants.list(erin) == []
    cut = services.trail.recent(admin, limit=1, action="user.grant")[0]
    assert (cut["before"]["roles"], cut["after"]["roles"]) == (["editor"], [])


def test_grant_to_an_unknown_user_is_not_found(services: Services, admin: Actor) -> None:
    with pytest.raises(NotFound, match="unknown user 'nobody'"):
        services.users.grant(admin, "default", "nobody", [Role.VIEWER])


def test_only_platform_admins_list_users(services: Services, admin: Actor, acme_admin: Actor) -> None:
    assert [u.name for u in services.users.list(admin)] == ["admin", "otto"]
    with pytest.raises(Forbidden):
        services.users.list(acme_admin)
