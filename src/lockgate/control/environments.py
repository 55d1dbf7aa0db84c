"""Environments: each route has one release pointer per environment (dev, stage, prod).

Promotion moves a release one step along dev -> stage -> prod; rollback moves a pointer back to the
release it held before. Pointing dev needs an editor; stage and prod need a deployer; prod also needs an
approval of that release from someone other than its author (four eyes). Every pointer change bumps the
``routes`` change version in the same transaction, which is how every gateway worker sees it within a
second.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from sqlalchemy import Connection, Engine, select

from lockgate.control.errors import ControlError, Forbidden, Invalid, NotFound
from lockgate.control.releases import Release, ReleaseService
from lockgate.control.tenancy import require_tenant_id
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.rbac import Actor, Role
from lockgate.store import versions
from lockgate.store.tables import approvals, route_pointers, tenants

ENVIRONMENTS = ("dev", "stage", "prod")
SOURCE = {"stage": "dev", "prod": "stage"}
PROMOTED = ("stage", "prod")

Attempt = Literal["allow", "deny", "refused"]


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
    ) -> None:
        """Write the evidence record, inside ``connection``'s transaction when one is given."""


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


class Environments:
    def __init__(self, engine: Engine, audit: AuditLog, releases: ReleaseService) -> None:
        self._engine = engine
        self._audit = audit
        self._releases = releases
        self.guard: PromotionGuard | None = None

    def point(self, actor: Actor, tenant: str, route: str, environment: str, release_id: str) -> Pointer:
        """Point ``route`` in ``environment`` at a release (``dev`` directly; stage/prod via promote).

        With a guard installed, the release must also pass the route's gate, and every attempt on
        stage or prod (allowed, denied by the gate, or refused before it) leaves an evidence record;
        an allowed one is written in the same transaction as the pointer move.
        """
        _check_environment(environment)
        release = self._releases.get(tenant, release_id)
        if release.content.route != route:
            raise Invalid(f"release {release_id} belongs to route {release.content.route!r}, not {route!r}")
        event = AuditEvent(
            "route.point", f"route:{tenant}/{route}/{environment}", after={"release": release_id}
        )
        guard = self.guard
        keeps_evidence = guard is not None and environment in PROMOTED
        verdict: Verdict | None = None
        try:
            role = Role.EDITOR if environment == "dev" else Role.DEPLOYER
            self._audit.authorize(self._engine, actor, tenant, role, event)
            if environment == "prod":
                self._require_second_approval(actor, tenant, release, event)
            if guard is not None:
                verdict = guard.decide(tenant, release, environment)
                if not verdict.allowed:
                    self._audit.record(
                        self._engine, actor, AuditEvent(event.action, event.resource, outcome="denied")
                    )
                    raise GateRefused(release_id, environment, verdict.reasons)
        except ControlError as exc:
            if guard is not None and keeps_evidence:
                attempt: Attempt = "deny" if isinstance(exc, GateRefused) else "refused"
                reasons = exc.reasons if isinstance(exc, GateRefused) else [exc.message]
                guard.record(actor, tenant, release, environment, verdict, attempt, reasons, None)
            raise

        def evidence(connection: Connection) -> None:
            if guard is not None and keeps_evidence:
                guard.record(actor, tenant, release, environment, verdict, "allow", [], connection)

        return self._move(actor, tenant, route, environment, release_id, "route.point", evidence)

    def promote(self, actor: Actor, tenant: str, route: str, to: str) -> Pointer:
        if to not in SOURCE:
            raise Invalid("promote to 'stage' or 'prod'; point dev with `releases point`")
        source = self.pointer(tenant, route, SOURCE[to])
        return self.point(actor, tenant, route, to, source.release_id)

    def rollback(self, actor: Actor, tenant: str, route: str, environment: str) -> Pointer:
        _check_environment(environment)
        event = AuditEvent("route.rollback", f"route:{tenant}/{route}/{environment}")
        self._audit.authorize(
            self._engine, actor, tenant, Role.EDITOR if environment == "dev" else Role.DEPLOYER, event
        )
        current = self.pointer(tenant, route, environment)
        if current.previous_release_id is None:
            raise Invalid(f"route {route!r} in {environment} has no previous release to roll back to")
        return self._move(actor, tenant, route, environment, current.previous_release_id, "route.rollback")

    def approve(self, actor: Actor, tenant: str, release_id: str, environment: str) -> None:
        _check_environment(environment)
        release = self._releases.get(tenant, release_id)
        event = AuditEvent(
            "release.approve", f"release:{tenant}/{release_id}", after={"environment": environment}
        )
        self._audit.authorize(self._engine, actor, tenant, Role.APPROVER, event)
        if actor.name == release.created_by:
            self._audit.record(
                self._engine, actor, AuditEvent(event.action, event.resource, outcome="denied")
            )
            raise Forbidden(f"{actor.name} created release {release_id} and cannot approve it (four eyes)")
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
                self._audit.append(connection, actor, event)

    def approvers(self, release_id: str, environment: str) -> list[str]:
        with self._engine.connect() as connection:
            query = select(approvals.c.approver).where(
                approvals.c.release_id == release_id, approvals.c.environment == environment
            )
            return sorted(connection.execute(query).scalars())

    def pointer(self, tenant: str, route: str, environment: str) -> Pointer:
        for found in self.pointers(tenant, route):
            if found.environment == environment:
                return found
        raise NotFound(f"route {route!r} has no release in {environment}")

    def pointers(self, tenant: str, route: str | None = None) -> list[Pointer]:
        with self._engine.connect() as connection:
            query = select(route_pointers).join(tenants).where(tenants.c.name == tenant)
            if route is not None:
                query = query.where(route_pointers.c.route == route)
            rows = connection.execute(query.order_by(route_pointers.c.route)).all()
        order = {env: i for i, env in enumerate(ENVIRONMENTS)}
        found = [
            Pointer(r.route, r.environment, r.release_id, r.previous_release_id, r.updated_by, r.updated_at)
            for r in rows
        ]
        return sorted(found, key=lambda p: (p.route, order[p.environment]))

    def _require_second_approval(
        self, actor: Actor, tenant: str, release: Release, event: AuditEvent
    ) -> None:
        others = [name for name in self.approvers(release.id, "prod") if name != release.created_by]
        if not others:
            self._audit.record(
                self._engine, actor, AuditEvent(event.action, event.resource, outcome="denied")
            )
            raise Forbidden(
                f"release {release.id} needs an approval for prod from someone other than its author "
                f"({release.created_by}): lockgate releases approve {release.id} --env prod"
            )

    def _move(
        self,
        actor: Actor,
        tenant: str,
        route: str,
        environment: str,
        release_id: str,
        action: str,
        also: Callable[[Connection], None] | None = None,
    ) -> Pointer:
        now = datetime.now(UTC)
        with self._engine.begin() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            key = (
                route_pointers.c.tenant_id == tenant_id,
                route_pointers.c.route == route,
                route_pointers.c.environment == environment,
            )
            current = connection.execute(select(route_pointers.c.release_id).where(*key)).scalar()
            values = {"release_id": release_id, "previous_release_id": current, "updated_by": actor.name}
            if current is None:
                connection.execute(
                    route_pointers.insert().values(
                        tenant_id=tenant_id, route=route, environment=environment, updated_at=now, **values
                    )
                )
            elif current != release_id:
                connection.execute(route_pointers.update().where(*key).values(updated_at=now, **values))
            versions.bump(connection, versions.ROUTES)
            self._audit.append(
                connection,
                actor,
                AuditEvent(
                    action,
                    f"route:{tenant}/{route}/{environment}",
                    before={"release": current},
                    after={"release": release_id},
                ),
            )
            if also is not None:
                also(connection)
        return self.pointer(tenant, route, environment)


def _check_environment(environment: str) -> None:
    if environment not in ENVIRONMENTS:
        raise Invalid(f"unknown environment {environment!r}; use dev, stage or prod")
