"""Environments: each route has one release pointer per environment (dev, stage, prod).

Promotion moves a release one step along dev -> stage -> prod; rollback moves a pointer back to the
release it held before. Pointing dev needs an editor; stage and prod need a deployer; prod also needs an
approval of that release from someone other than its author (four eyes). Every pointer change bumps the
``routes`` change version in the same transaction, which is how every gateway worker sees it within a
second.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, select

from lockgate.control.errors import Forbidden, Invalid, NotFound
from lockgate.control.releases import Release, ReleaseService
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.rbac import Actor, Role
from lockgate.security.tenants import TenantService
from lockgate.store import versions
from lockgate.store.tables import approvals, route_pointers, tenants

ENVIRONMENTS = ("dev", "stage", "prod")
SOURCE = {"stage": "dev", "prod": "stage"}


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

    def point(self, actor: Actor, tenant: str, route: str, environment: str, release_id: str) -> Pointer:
        """Point ``route`` in ``environment`` at a release (``dev`` directly; stage/prod via promote)."""
        _check_environment(environment)
        release = self._releases.get(tenant, release_id)
        if release.content.route != route:
            raise Invalid(f"release {release_id} belongs to route {release.content.route!r}, not {route!r}")
        event = AuditEvent(
            "route.point", f"route:{tenant}/{route}/{environment}", after={"release": release_id}
        )
        role = Role.EDITOR if environment == "dev" else Role.DEPLOYER
        self._audit.authorize(self._engine, actor, tenant, role, event)
        if environment == "prod":
            self._require_second_approval(actor, tenant, release, event)
        return self._move(actor, tenant, route, environment, release_id, "route.point")

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
        self, actor: Actor, tenant: str, route: str, environment: str, release_id: str, action: str
    ) -> Pointer:
        now = datetime.now(UTC)
        with self._engine.begin() as connection:
            tenant_id = _tenant_id(connection, tenant)
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
        return self.pointer(tenant, route, environment)


def _check_environment(environment: str) -> None:
    if environment not in ENVIRONMENTS:
        raise Invalid(f"unknown environment {environment!r}; use dev, stage or prod")


def _tenant_id(connection: Connection, tenant: str) -> str:
    row = TenantService.find(connection, tenant)
    if row is None:
        raise NotFound(f"unknown tenant {tenant!r}")
    return str(row.id)
