"""Environments: each route has one release pointer per environment (dev, stage, prod).

Editors point ``dev`` at a release. ``stage`` and ``prod`` move only two ways: **promote** (deployer)
takes the release one step along dev -> stage -> prod, through the route's gate, and for prod only with
an approval from someone who had no hand in the release (four eyes); **rollback** (deployer) returns an
environment to a release it served before, named explicitly or the previous one by default, and is a
no-op when repeated. Every move locks the pointer row, is recorded in the route's history, bumps the
``routes`` change version (which is how every gateway worker sees it within a second) and is audited in
the same transaction; every attempt on stage or prod leaves signed evidence through the guard.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlalchemy import Connection, Engine, Row, false, select

from lockgate.control.releases import Release, ReleaseService
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import Actor
from lockgate.service_errors import Conflict, ControlError, Forbidden, Invalid, NotFound
from lockgate.store import versions
from lockgate.store.tables import approvals, prompts, registry_models, route_history, route_pointers, tenants
from lockgate.store.tenancy import require_tenant_id

ENVIRONMENTS = ("dev", "stage", "prod")
SOURCE = {"stage": "dev", "prod": "stage"}
PROMOTED = ("stage", "prod")

Attempt = Literal["allow", "deny", "refused"]
Action = Literal["promote", "rollback"]


class Verdict(Protocol):
    @property
    def allowed(self) -> bool: ...

    @property
    def reasons(self) -> list[str]: ...


class PromotionGuard(Protocol):
    """Decides whether a release may enter an environment and keeps evidence of every attempt."""

    def decide(self, tenant: str, release: Release, environment: str) -> Verdict: ...

    def record(
        self,
        actor: Actor,
        tenant: str,
        release: Release,
        environment: str,
        verdict: Verdict | None,
        attempt: Attempt,
        reasons: list[str],
        connection: Connection | None,
        action: Action = "promote",
    ) -> None:
        """Write the evidence record, inside ``connection``'s transaction when one is given."""


class RolloutStarter(Protocol):
    """Starts a rollout instead of moving a pointer, where the environment has a strategy."""

    def has_strategy(self, tenant: str, route: str, environment: str) -> bool: ...

    def begin(
        self,
        connection: Connection,
        actor: Actor,
        tenant: str,
        route: str,
        environment: str,
        candidate: Release,
    ) -> str:
        """Create the rollout inside the caller's transaction; returns its id."""


class GateRefused(Forbidden):
    def __init__(self, release_id: str, environment: str, reasons: list[str]) -> None:
        lines = "".join(f"\n  - {reason}" for reason in reasons)
        super().__init__(f"the gate refused release {release_id} for {environment}:{lines}")
        self.reasons = reasons


@dataclass(frozen=True, slots=True)
class Pointer:
    route: str
    environment: str
    release_id: str
    previous_release_id: str | None
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Move:
    route: str
    environment: str
    release_id: str
    previous_release_id: str | None
    action: str
    actor: str
    at: datetime


class Environments:
    def __init__(self, engine: Engine, audit: AuditLog, authz: Authorizer, releases: ReleaseService) -> None:
        self._engine = engine
        self._audit = audit
        self._authz = authz
        self._releases = releases
        self.guard: PromotionGuard | None = None
        self.starter: RolloutStarter | None = None

    def point(self, actor: Actor, tenant: str, route: str, environment: str, release_id: str) -> Pointer:
        """Point ``route``'s dev environment at a release; stage and prod move only by promote/rollback."""
        resource = f"route:{tenant}/{route}/{environment}"
        self._authz.require(actor, "routes.point", tenant, resource)
        _check_environment(environment)
        if environment != "dev":
            raise Invalid(
                f"{environment} moves only by `lockgate promote {route} --to {environment}` or "
                f"`lockgate rollback {route} --env {environment}`; `point` sets dev"
            )
        release = self._releases.require(tenant, release_id)
        _check_route(release, route)
        if self.guard is not None:
            verdict = self.guard.decide(tenant, release, environment)
            if not verdict.allowed:
                self._authz.deny(actor, "routes.point", resource)
                raise GateRefused(release_id, environment, verdict.reasons)
        with self._engine.begin() as connection:
            self._move(connection, actor, tenant, route, environment, release_id, "point")
        return self.pointer(tenant, route, environment)

    def promote(self, actor: Actor, tenant: str, route: str, to: str) -> Pointer:
        """Move the release ``to``'s source environment serves into ``to``, if the gate allows it.

        Every attempt leaves an evidence record (allowed, denied by the gate, or refused before it);
        an allowed one is written in the same transaction as the pointer move.
        """
        resource = f"route:{tenant}/{route}/{to}"
        release: Release | None = None
        verdict: Verdict | None = None
        guard = self.guard
        try:
            try:
                self._authz.require(actor, "routes.promote", tenant, resource)
            finally:
                release = self._source_release(tenant, route, to)
            if to not in SOURCE:
                raise Invalid("promote to 'stage' or 'prod'; point dev with `releases point`")
            if release is None:
                raise NotFound(f"route {route!r} has no release in {SOURCE[to]} to promote")
            if to == "prod":
                self._require_second_approval(actor, tenant, release, resource)
            if guard is not None:
                verdict = guard.decide(tenant, release, to)
                if not verdict.allowed:
                    self._authz.deny(actor, "routes.promote", resource)
                    raise GateRefused(release.id, to, verdict.reasons)
        except ControlError as exc:
            if guard is not None and release is not None and to in PROMOTED:
                attempt: Attempt = "deny" if isinstance(exc, GateRefused) else "refused"
                reasons = exc.reasons if isinstance(exc, GateRefused) else [exc.message]
                guard.record(actor, tenant, release, to, verdict, attempt, reasons, None)
            raise
        starter = self.starter
        with self._engine.begin() as connection:
            serving = _locked_pointer(connection, require_tenant_id(connection, tenant), route, to)
            rolls_out = (
                starter is not None
                and serving is not None
                and serving.release_id != release.id
                and starter.has_strategy(tenant, route, to)
            )
            if rolls_out and starter is not None:
                # The environment takes new releases gradually: the pointer moves when the rollout ends.
                starter.begin(connection, actor, tenant, route, to, release)
            else:
                self._move(connection, actor, tenant, route, to, release.id, "promote", locked=serving)
            if guard is not None:
                guard.record(actor, tenant, release, to, verdict, "allow", [], connection)
        return self.pointer(tenant, route, to)

    def finish_rollout(
        self, connection: Connection, actor: Actor, tenant: str, route: str, environment: str, release_id: str
    ) -> None:
        """A rollout reached 100%: its candidate becomes the environment's release (caller's transaction)."""
        self._move(connection, actor, tenant, route, environment, release_id, "rollout")

    def rollback(
        self,
        actor: Actor,
        tenant: str,
        route: str,
        environment: str,
        to: str | None = None,
        expected: str | None = None,
    ) -> Pointer:
        """Return ``environment`` to ``to`` (default: the release it served before the current one).

        ``to`` must be a release the environment has served, so rollback is never a way around the
        gate. ``expected`` names the release the caller saw as current: if someone moved the pointer
        since, the rollback is refused, and if it already serves ``to`` (a retried request) nothing
        happens. The pointer row is locked for the whole move; the evidence record commits with it.
        """
        resource = f"route:{tenant}/{route}/{environment}"
        self._authz.require(actor, "routes.rollback", tenant, resource)
        _check_environment(environment)
        with self._engine.begin() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            row = _locked_pointer(connection, tenant_id, route, environment)
            if row is None:
                raise NotFound(f"route {route!r} has no release in {environment}")
            current = str(row.release_id)
            if expected is not None and current != expected:
                if to is not None and current == to:
                    return _pointer(row)  # a retry of a rollback that already happened
                raise Conflict(
                    f"{route} in {environment} serves {current}, not {expected}: it moved since; "
                    f"see `lockgate pointers --route {route}`"
                )
            target = to or row.previous_release_id
            if target is None:
                raise Invalid(f"route {route!r} in {environment} has no previous release to roll back to")
            if target == current:
                return _pointer(row)
            served_before = _last_arrival(connection, tenant_id, route, environment, target)
            if served_before is None:
                raise Invalid(
                    f"release {target} never served {route} in {environment}; rollback only returns to a "
                    "release the environment served before (new releases go through `promote`)"
                )
            release = self._releases.require(tenant, target)
            self._move(
                connection,
                actor,
                tenant,
                route,
                environment,
                target,
                "rollback",
                previous=served_before.previous_release_id,
                locked=row,
            )
            if self.guard is not None and environment in PROMOTED:
                reasons = [f"rollback from {current}"]
                self.guard.record(
                    actor, tenant, release, environment, None, "allow", reasons, connection, "rollback"
                )
        return self.pointer(tenant, route, environment)

    def approve(self, actor: Actor, tenant: str, release_id: str, environment: str) -> list[str]:
        """Approve a release for an environment; nobody who had a hand in it may. Returns the approvers."""
        resource = f"release:{tenant}/{release_id}"
        self._authz.require(actor, "releases.approve", tenant, resource)
        _check_environment(environment)
        release = self._releases.require(tenant, release_id)
        authors = self.authors(tenant, release)
        if actor.name in authors:
            self._authz.deny(actor, "releases.approve", resource)
            raise Forbidden(
                f"{actor.name} is the {authors[actor.name]} of release {release_id} "
                "and cannot approve it (four eyes)"
            )
        with self._engine.begin() as connection:
            exists = connection.execute(
                select(approvals.c.id).where(
                    approvals.c.release_id == release_id,
                    approvals.c.environment == environment,
                    approvals.c.approver == actor.name,
                )
            ).first()
            if exists is None:
                connection.execute(
                    approvals.insert().values(
                        id=f"apr_{uuid.uuid4().hex[:24]}",
                        release_id=release_id,
                        environment=environment,
                        approver=actor.name,
                        created_at=datetime.now(UTC),
                    )
                )
                event = AuditEvent("release.approve", resource, after={"environment": environment})
                self._audit.append(connection, actor, event)
        return self.approvers(release_id, environment)

    def authors(self, tenant: str, release: Release) -> dict[str, str]:
        """Who had a hand in ``release`` -> how: its creator, its prompt's pusher, its model's registrant."""
        content = release.content
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            pusher = connection.execute(
                select(prompts.c.created_by).where(
                    prompts.c.tenant_id == tenant_id,
                    prompts.c.name == content.prompt.name,
                    prompts.c.version == content.prompt.version,
                )
            ).scalar()
            registrant = connection.execute(
                select(registry_models.c.created_by).where(
                    registry_models.c.tenant_id == tenant_id,
                    registry_models.c.name == content.model.name,
                    registry_models.c.version == content.model.version,
                )
            ).scalar()
        found: dict[str, str] = {}
        for who, how in (
            (registrant, "model registrant"),
            (pusher, "prompt pusher"),
            (release.created_by, "creator"),
        ):
            if who is not None:
                found[str(who)] = how
        return found

    def approvers(self, release_id: str, environment: str) -> list[str]:
        with self._engine.connect() as connection:
            query = select(approvals.c.approver).where(
                approvals.c.release_id == release_id, approvals.c.environment == environment
            )
            return sorted(connection.execute(query).scalars())

    def pointers(self, actor: Actor, tenant: str, route: str | None = None) -> list[Pointer]:
        self._authz.require(actor, "routes.list", tenant)
        return self.current(tenant, route)

    def history(self, actor: Actor, tenant: str, route: str) -> list[Move]:
        """Every pointer move of ``route``, oldest first."""
        self._authz.require(actor, "routes.history", tenant)
        h = route_history.c
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(route_history)
                .where(h.tenant_id == require_tenant_id(connection, tenant), h.route == route)
                .order_by(h.id)
            ).all()
        return [
            Move(r.route, r.environment, r.release_id, r.previous_release_id, r.action, r.actor, r.at)
            for r in rows
        ]

    def pointer(self, tenant: str, route: str, environment: str) -> Pointer:
        for found in self.current(tenant, route):
            if found.environment == environment:
                return found
        raise NotFound(f"route {route!r} has no release in {environment}")

    def current(self, tenant: str, route: str | None = None) -> list[Pointer]:
        """Every pointer of ``tenant`` (for a caller already authorised)."""
        with self._engine.connect() as connection:
            query = select(route_pointers).join(tenants).where(tenants.c.name == tenant)
            if route is not None:
                query = query.where(route_pointers.c.route == route)
            rows = connection.execute(query.order_by(route_pointers.c.route)).all()
        order = {env: i for i, env in enumerate(ENVIRONMENTS)}
        return sorted((_pointer(r) for r in rows), key=lambda p: (p.route, order[p.environment]))

    def _source_release(self, tenant: str, route: str, to: str) -> Release | None:
        """The release a promotion to ``to`` would take, or None (for evidence of refused attempts)."""
        if to not in SOURCE:
            return None
        try:
            source = self.pointer(tenant, route, SOURCE[to])
            return self._releases.require(tenant, source.release_id)
        except ControlError:
            return None

    def _require_second_approval(self, actor: Actor, tenant: str, release: Release, resource: str) -> None:
        authors = self.authors(tenant, release)
        excluded = {*authors, actor.name}
        if any(name not in excluded for name in self.approvers(release.id, "prod")):
            return
        self._authz.deny(actor, "routes.promote", resource)
        who = ", ".join(f"{name} ({how})" for name, how in sorted(authors.items()))
        raise Forbidden(
            f"release {release.id} needs an approval for prod from someone other than {who} and the "
            f"person promoting it: lockgate releases approve {release.id} --env prod"
        )

    def _move(
        self,
        connection: Connection,
        actor: Actor,
        tenant: str,
        route: str,
        environment: str,
        release_id: str,
        action: str,
        *,
        previous: str | None = None,
        locked: Row[Any] | None = None,
    ) -> None:
        """Move the pointer inside the caller's transaction, holding its row lock; a no-op when it
        already points there. Rollback passes the ``previous`` the target had when it last arrived."""
        now = datetime.now(UTC)
        tenant_id = require_tenant_id(connection, tenant)
        row = locked if locked is not None else _locked_pointer(connection, tenant_id, route, environment)
        current = str(row.release_id) if row is not None else None
        if current == release_id:
            return
        before = previous if action == "rollback" else current
        values = {"release_id": release_id, "previous_release_id": before, "updated_by": actor.name}
        key = (
            route_pointers.c.tenant_id == tenant_id,
            route_pointers.c.route == route,
            route_pointers.c.environment == environment,
        )
        if row is None:
            connection.execute(
                route_pointers.insert().values(
                    tenant_id=tenant_id, route=route, environment=environment, updated_at=now, **values
                )
            )
        else:
            connection.execute(route_pointers.update().where(*key).values(updated_at=now, **values))
        connection.execute(
            route_history.insert().values(
                tenant_id=tenant_id,
                route=route,
                environment=environment,
                release_id=release_id,
                previous_release_id=before,
                action=action,
                actor=actor.name,
                at=now,
            )
        )
        versions.bump(connection, versions.ROUTES)
        event = AuditEvent(
            f"route.{action}",
            f"route:{tenant}/{route}/{environment}",
            before={"release": current},
            after={"release": release_id},
        )
        self._audit.append(connection, actor, event)


def _locked_pointer(connection: Connection, tenant_id: str, route: str, environment: str) -> Row[Any] | None:
    """The pointer row, locked until the transaction ends (PostgreSQL: the row; SQLite: the database)."""
    if connection.dialect.name == "sqlite":
        # pysqlite defers the write lock to the first write; take it now, before reading the row.
        connection.execute(route_pointers.delete().where(false()))
    query = select(route_pointers).where(
        route_pointers.c.tenant_id == tenant_id,
        route_pointers.c.route == route,
        route_pointers.c.environment == environment,
    )
    return connection.execute(query.with_for_update()).first()


def _last_arrival(
    connection: Connection, tenant_id: str, route: str, environment: str, release_id: str
) -> Row[Any] | None:
    """The history entry of the last time ``release_id`` became current in ``environment``."""
    h = route_history.c
    query = (
        select(route_history)
        .where(
            h.tenant_id == tenant_id,
            h.route == route,
            h.environment == environment,
            h.release_id == release_id,
        )
        .order_by(h.id.desc())
        .limit(1)
    )
    return connection.execute(query).first()


def _pointer(r: Row[Any]) -> Pointer:
    return Pointer(r.route, r.environment, r.release_id, r.previous_release_id, r.updated_by, r.updated_at)


def _check_route(release: Release, route: str) -> None:
    if release.content.route != route:
        raise Invalid(f"release {release.id} belongs to route {release.content.route!r}, not {route!r}")


def _check_environment(environment: str) -> None:
    if environment not in ENVIRONMENTS:
        raise Invalid(f"unknown environment {environment!r}; use dev, stage or prod")
