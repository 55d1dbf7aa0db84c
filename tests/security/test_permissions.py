"""The permission table and the authorizer that every service call goes through."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from lockgate.security.permissions import PERMISSIONS, Permission, Scope
from lockgate.security.rbac import PLATFORM_TENANT, SYSTEM, Actor, Role
from lockgate.service_errors import Forbidden, Invalid
from lockgate.services import Services
from lockgate.store.tables import audit_log

TENANT_OPS = sorted(op for op, p in PERMISSIONS.items() if p.scope is Scope.TENANT)
PLATFORM_OPS = sorted(op for op, p in PERMISSIONS.items() if p.scope is Scope.PLATFORM)
SELF_OPS = sorted(op for op, p in PERMISSIONS.items() if p.scope is Scope.SELF)


def holding(tenant: str, *roles: Role, name: str = "pat") -> Actor:
    return Actor(name=name, roles={tenant: frozenset(roles)}, source="10.1.2.3", request_id="req-1")


def entries(services: Services) -> list[dict[str, Any]]:
    with services.engine.connect() as connection:
        rows = connection.execute(sa.select(audit_log).order_by(audit_log.c.seq)).all()
    return [dict(row._mapping) for row in rows]


def test_every_permission_says_what_it_allows() -> None:
    assert [op for op, p in PERMISSIONS.items() if not p.summary.strip()] == []
    # Tenant and platform operations name the roles that may perform them; the others need none.
    assert [op for op in TENANT_OPS + PLATFORM_OPS if not PERMISSIONS[op].roles] == []
    assert [op for op in SELF_OPS if PERMISSIONS[op].roles] == []


def test_operation_ids_are_area_dot_verb() -> None:
    assert [op for op in PERMISSIONS if op.count(".") != 1 or op != op.lower()] == []


def test_a_refusal_is_audited_under_the_operation_id_then_raised(services: Services) -> None:
    before = len(entries(services))
    viewer = holding("default", Role.VIEWER, name="vic")
    with pytest.raises(Forbidden) as caught:
        services.authz.require(viewer, "prompts.push", "default", "prompt:default/qa")
    assert caught.value.status == 403
    assert caught.value.message == "vic may not prompts.push in tenant 'default': it needs editor"
    written = entries(services)[before:]
    assert len(written) == 1
    entry = written[0]
    assert (entry["actor"], entry["action"], entry["outcome"]) == ("vic", "prompts.push", "denied")
    assert (entry["resource"], entry["source"], entry["request_id"]) == (
        "prompt:default/qa",
        "10.1.2.3",
        "req-1",
    )


def test_a_refusal_without_a_resource_names_the_tenant_or_the_platform(services: Services) -> None:
    nobody = Actor(name="nobody")
    with pytest.raises(Forbidden):
        services.authz.require(nobody, "models.list", "acme")
    with pytest.raises(Forbidden, match="of the platform tenant"):
        services.authz.require(nobody, "tenants.create")
    assert [(e["action"], e["resource"]) for e in entries(services)[-2:]] == [
        ("models.list", "tenant:acme"),
        ("tenants.create", "platform"),
    ]


def test_an_allowed_call_writes_nothing(services: Services) -> None:
    before = len(entries(services))
    services.authz.require(holding("default", Role.EDITOR), "prompts.push", "default")
    services.authz.require(SYSTEM, "tenants.create")
    assert len(entries(services)) == before


def test_an_unknown_operation_is_a_programming_error_not_a_refusal(services: Services) -> None:
    with pytest.raises(Invalid, match="unknown operation"):
        services.authz.require(SYSTEM, "prompts.delete_everything")


@pytest.mark.parametrize("operation", TENANT_OPS)
def test_tenant_operations_need_a_role_in_that_tenant(operation: str) -> None:
    permission = PERMISSIONS[operation]
    needed = permission.roles
    assert permission.allows(holding("acme", *needed), "acme")
    assert permission.allows(holding("acme", Role.ADMIN), "acme")
    # The same roles in another tenant, even the platform tenant, count for nothing here.
    assert not permission.allows(holding("beta", Role.ADMIN), "acme")
    assert not permission.allows(holding(PLATFORM_TENANT, Role.ADMIN), "acme")
    assert not permission.allows(Actor(name="nobody"), "acme")
    assert not permission.allows(holding("acme", *needed), None)
    others = [role for role in Role if role not in needed and role is not Role.ADMIN]
    for role in others:
        if Role.VIEWER in needed:
            assert permission.allows(holding("acme", role), "acme"), role  # any role reads
        else:
            assert not permission.allows(holding("acme", role), "acme"), role


@pytest.mark.parametrize("operation", PLATFORM_OPS)
def test_platform_operations_need_a_role_in_the_platform_tenant(operation: str) -> None:
    permission = PERMISSIONS[operation]
    assert permission.allows(holding(PLATFORM_TENANT, *permission.roles), None)
    assert permission.allows(holding(PLATFORM_TENANT, Role.ADMIN), "acme")  # whatever tenant is named
    assert not permission.allows(holding("acme", Role.ADMIN), "acme")
    assert not permission.allows(holding("acme", Role.ADMIN), None)


@pytest.mark.parametrize("operation", SELF_OPS)
def test_self_operations_are_for_any_user(operation: str) -> None:
    assert PERMISSIONS[operation].allows(Actor(name="someone"), None)


def test_an_invitation_code_is_the_only_credential_for_redeeming_it() -> None:
    redeem = PERMISSIONS["invitations.redeem"]
    assert redeem.scope is Scope.INVITATION
    assert not redeem.allows(holding(PLATFORM_TENANT, Role.ADMIN), PLATFORM_TENANT)
    assert redeem.allows(SYSTEM, None)


def test_the_platform_runs_tenants_users_the_audit_log_and_every_tenants_limits() -> None:
    assert {op: PERMISSIONS[op].roles for op in PLATFORM_OPS} == {
        "audit.list": (Role.ADMIN,),
        "audit.verify": (Role.VIEWER,),
        "tenants.create": (Role.ADMIN,),
        "users.list": (Role.ADMIN,),
        # A tenant must not raise its own limits: not even its admin sets them.
        "limits.set": (Role.ADMIN,),
        "limits.delete": (Role.ADMIN,),
        "budgets.set": (Role.ADMIN,),
        "budgets.delete": (Role.ADMIN,),
    }


def test_admin_implies_every_role_and_any_role_implies_viewer() -> None:
    admin = holding("acme", Role.ADMIN)
    assert all(admin.has("acme", role) for role in Role)
    for role in (Role.EDITOR, Role.APPROVER, Role.DEPLOYER):
        actor = holding("acme", role)
        assert actor.has("acme", role)
        assert actor.has("acme", Role.VIEWER)
        assert [r for r in Role if actor.has("acme", r)] == [Role.VIEWER, role]
        assert not actor.has("beta", Role.VIEWER)
    assert [r for r in Role if holding("acme", Role.VIEWER).has("acme", r)] == [Role.VIEWER]
    assert not Actor(name="nobody").has("acme", Role.VIEWER)


def test_roles_are_a_set_not_a_ladder() -> None:
    # A deployer may promote but not approve; an approver may approve but not promote or edit.
    deployer, approver = holding("acme", Role.DEPLOYER), holding("acme", Role.APPROVER)
    assert PERMISSIONS["routes.promote"].allows(deployer, "acme")
    assert not PERMISSIONS["releases.approve"].allows(deployer, "acme")
    assert PERMISSIONS["releases.approve"].allows(approver, "acme")
    assert not PERMISSIONS["routes.promote"].allows(approver, "acme")
    assert not PERMISSIONS["prompts.push"].allows(approver, "acme")
    assert PERMISSIONS["evals.start"].allows(deployer, "acme")
    assert PERMISSIONS["evals.start"].allows(holding("acme", Role.EDITOR), "acme")


def test_the_system_actor_may_do_anything_and_no_token_is_the_system() -> None:
    assert all(p.allows(SYSTEM, "acme") for p in PERMISSIONS.values())
    assert Actor(name="system").system is False


def test_another_tenants_admin_is_refused_here(services: Services, admin: Actor, admin_token: str) -> None:
    services.tenants.create(admin, "acme")
    platform = services.tokens.authenticate(admin_token)
    invitation = services.users.invite(platform, "acme", "otto", [Role.ADMIN])
    otto = services.tokens.authenticate(services.users.redeem(invitation.code).secret)
    for call in (
        lambda: services.keys.create(otto, "default"),
        lambda: services.keys.list(otto, "default"),
        lambda: services.registry.list(otto, "default"),
        lambda: services.releases.list(otto, "default"),
        lambda: services.users.invite(otto, "default", "friend", [Role.ADMIN]),
        lambda: services.tenants.create(otto, "mine"),
        lambda: services.trail.verify(otto),
    ):
        with pytest.raises(Forbidden):
            call()
    refusals = [e for e in entries(services) if e["actor"] == "otto" and e["outcome"] == "denied"]
    assert [e["action"] for e in refusals] == [
        "keys.create",
        "keys.list",
        "models.list",
        "releases.list",
        "users.invite",
        "tenants.create",
        "audit.verify",
    ]
    # In acme, otto is in charge.
    assert services.keys.list(otto, "acme") == []
    assert [t.name for t in services.tenants.list(otto)] == ["acme"]


def test_who_is_worded_for_people() -> None:
    assert Permission(Scope.TENANT, (Role.EDITOR, Role.DEPLOYER)).who == "editor or deployer"
    assert Permission(Scope.PLATFORM, (Role.VIEWER,)).who == "viewer of the platform tenant"
    assert Permission(Scope.SELF).who == "any user"
