"""Who may do what: one table, operation x role, checked by the service layer for every caller.

Every REST operation of the control API has exactly one entry here, under its operation id; the CLI is
a client of that API, so it meets the same checks. ``docs/rbac.md`` carries the same table and a test
holds the two (and the API's operation ids) together.

Scopes:

- ``tenant``    the caller needs one of ``roles`` in the tenant named in the request path
- ``platform``  one of ``roles`` in the platform tenant (``default``), which owns tenants, users and
                the audit log
- ``self``      any authenticated user, acting on what is theirs (their tokens, their own profile)
- ``invitation``  the holder of an invitation code (redeeming it is how a new user gets a token)

A refusal is audited (outcome ``denied``, action = the operation id) before it is raised.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine

from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.rbac import PLATFORM_TENANT, Actor, Role
from lockgate.service_errors import Forbidden, Invalid


class Scope(enum.StrEnum):
    TENANT = "tenant"
    PLATFORM = "platform"
    SELF = "self"
    INVITATION = "invitation"


@dataclass(frozen=True, slots=True)
class Permission:
    scope: Scope
    roles: tuple[Role, ...] = ()
    summary: str = ""

    def allows(self, actor: Actor, tenant: str | None) -> bool:
        if actor.system:
            return True
        if self.scope is Scope.SELF:
            return True
        if self.scope is Scope.INVITATION:
            return False  # an invitation code is the credential, never a control token
        where = PLATFORM_TENANT if self.scope is Scope.PLATFORM else tenant
        if where is None:
            return False
        return any(actor.has(where, role) for role in self.roles)

    @property
    def who(self) -> str:
        if self.scope is Scope.SELF:
            return "any user"
        if self.scope is Scope.INVITATION:
            return "the invitation code's holder"
        roles = " or ".join(role.value for role in self.roles)
        return f"{roles} of the platform tenant" if self.scope is Scope.PLATFORM else roles


V, E, A, D, ADMIN = Role.VIEWER, Role.EDITOR, Role.APPROVER, Role.DEPLOYER, Role.ADMIN


def _t(*roles: Role, summary: str) -> Permission:
    return Permission(Scope.TENANT, roles, summary)


def _p(*roles: Role, summary: str) -> Permission:
    return Permission(Scope.PLATFORM, roles, summary)


def _self(summary: str) -> Permission:
    return Permission(Scope.SELF, (), summary)


PERMISSIONS: Mapping[str, Permission] = {
    # you
    "users.me": _self("who the token belongs to and the roles it holds"),
    "tokens.list": _self("your own control tokens (never their secrets)"),
    "tokens.create": _self("a new control token for yourself"),
    "tokens.rotate": _self("replace one of your tokens with a new one"),
    "tokens.revoke": _self("revoke one of your tokens (a platform admin may revoke anyone's)"),
    "invitations.redeem": Permission(Scope.INVITATION, (), "turn an invitation code into your own token"),
    "instance.signing_key": _self("the public key evidence and the audit head are signed with"),
    "tenants.list": _self("the tenants you hold a role in (all of them for a platform admin)"),
    # the platform
    "tenants.create": _p(ADMIN, summary="create a tenant"),
    "users.list": _p(ADMIN, summary="every user and their roles"),
    "audit.list": _p(ADMIN, summary="read audit entries"),
    "audit.verify": _p(V, summary="verify the hash chain, its signed head and the anchor"),
    # people and keys of a tenant
    "users.invite": _t(ADMIN, summary="invite a new user with roles; they redeem the code themselves"),
    "users.grant": _t(ADMIN, summary="set a user's roles in the tenant"),
    "keys.list": _t(ADMIN, summary="API keys (prefixes, never secrets)"),
    "keys.create": _t(ADMIN, summary="issue an API key"),
    "keys.revoke": _t(ADMIN, summary="revoke an API key"),
    "keys.set_team": _t(ADMIN, summary="put an API key in a team, or in none (its team's limits apply)"),
    # model registry
    "models.list": _t(V, summary="registered models"),
    "models.get": _t(V, summary="one model version"),
    "models.resolve": _t(V, summary="resolve name@alias or name:version"),
    "models.register": _t(E, summary="register a model card"),
    "models.alias": _t(E, summary="set or move an alias"),
    "models.set_status": _t(E, summary="deprecate or reactivate a version"),
    "models.retire": _t(ADMIN, summary="retire a version for good"),
    # prompt catalog
    "prompts.list": _t(V, summary="latest version of every prompt"),
    "prompts.versions": _t(V, summary="every version of a prompt"),
    "prompts.get": _t(V, summary="one prompt version"),
    "prompts.diff": _t(V, summary="diff two versions"),
    "prompts.push": _t(E, summary="push a prompt version"),
    # releases and environments
    "releases.list": _t(V, summary="releases"),
    "releases.get": _t(V, summary="one release"),
    "releases.create": _t(E, summary="create a release"),
    "releases.approve": _t(A, summary="approve a release for an environment (four eyes)"),
    "routes.list": _t(V, summary="where each route's environments point"),
    "routes.history": _t(V, summary="every pointer move of a route"),
    "routes.point": _t(E, summary="point dev at a release"),
    "routes.promote": _t(D, summary="promote dev -> stage or stage -> prod, through the gate"),
    "routes.rollback": _t(D, summary="move an environment back to a release it served before"),
    # datasets and evals
    "datasets.list": _t(V, summary="dataset versions"),
    "datasets.get": _t(V, summary="one dataset version with its cases"),
    "datasets.push": _t(E, summary="store a dataset version"),
    "datasets.capture": _t(E, summary="make a dataset from stored production content"),
    "evals.list": _t(V, summary="eval runs"),
    "evals.get": _t(V, summary="one eval run and its progress"),
    "evals.report": _t(V, summary="a finished run's JSON, HTML or JUnit report"),
    "evals.start": _t(E, D, summary="run a release on a dataset, on the server"),
    "evals.cancel": _t(E, D, summary="cancel a queued or running eval run"),
    # progressive delivery
    "rollouts.set": _t(ADMIN, summary="set how a route's stage or prod environment takes releases"),
    "rollouts.strategy": _t(V, summary="a route environment's rollout strategy"),
    "rollouts.start": _t(D, summary="promote through the gate into a rollout of the strategy"),
    "rollouts.list": _t(V, summary="rollouts, newest first"),
    "rollouts.get": _t(V, summary="a rollout's arms, traffic, verdicts and next decision"),
    "rollouts.pause": _t(D, summary="hold a rollout at its stage"),
    "rollouts.resume": _t(D, summary="let a paused rollout go on"),
    "rollouts.abort": _t(D, summary="send all traffic back to the current release at once"),
    "rollouts.promote": _t(D, summary="make the candidate the environment's release now"),
    # limits and budgets: set by the platform, so that a tenant cannot raise its own
    "limits.list": _t(V, summary="the tenant's limit rules"),
    "limits.set": _p(ADMIN, summary="create or replace a limit rule of a tenant"),
    "limits.delete": _p(ADMIN, summary="delete a limit rule of a tenant"),
    "budgets.list": _t(V, summary="the tenant's budgets"),
    "budgets.set": _p(ADMIN, summary="create or replace a budget of a tenant"),
    "budgets.delete": _p(ADMIN, summary="delete a budget of a tenant"),
    "budgets.status": _t(V, summary="what each budget has spent this period, and its soft-cap alerts"),
    # gates and evidence
    "gates.get": _t(V, summary="a route's gate"),
    "gates.set": _t(ADMIN, summary="install or replace a route's gate"),
    "gates.evaluate": _t(V, summary="ask a gate whether a release may enter an environment"),
    "evidence.list": _t(V, summary="evidence records"),
    "evidence.get": _t(V, summary="one evidence record"),
    "evidence.verify": _t(V, summary="check a record against the store and the signing key"),
    "evidence.export": _t(V, summary="the self-contained bundle an auditor verifies offline"),
}


class Authorizer:
    """Checks an actor against ``PERMISSIONS``; refusals are written to the audit log, then raised."""

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self._engine = engine
        self._audit = audit

    def require(self, actor: Actor, operation: str, tenant: str | None = None, resource: str = "") -> None:
        permission = PERMISSIONS.get(operation)
        if permission is None:
            raise Invalid(f"unknown operation {operation!r}")  # a programming error, never a client's
        if permission.allows(actor, tenant):
            return
        self.deny(actor, operation, resource or (f"tenant:{tenant}" if tenant else "platform"))
        where = f" in tenant {tenant!r}" if permission.scope is Scope.TENANT else ""
        raise Forbidden(f"{actor.name} may not {operation}{where}: it needs {permission.who}")

    def deny(self, actor: Actor, operation: str, resource: str) -> None:
        """Record a refusal decided elsewhere (four eyes, a foreign token) under ``operation``."""
        self._audit.record(self._engine, actor, AuditEvent(operation, resource, outcome="denied"))
