"""Tenants: the unit that owns keys, users' roles, releases and (later) quotas and budgets.

A tenant's model allow-list names models the gateway serves; ``None`` allows every model. It bounds
everything the tenant's keys reach, directly or through a route's release.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, Row, select, update

from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import PLATFORM_TENANT, Actor, Role
from lockgate.service_errors import Conflict, Invalid, NotFound
from lockgate.store import versions
from lockgate.store.tables import memberships, tenants

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")

ServedModels = Callable[[], Collection[str]]
"""The public model names this server's gateway serves (from its configuration)."""


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    allowed_models: list[str] | None
    disabled: bool
    created_at: datetime


def check_served(served: ServedModels, models: Collection[str], what: str) -> None:
    """Refuse model names the gateway does not serve, naming them."""
    known = set(served())
    unknown = sorted(set(models) - known)
    if unknown:
        offered = ", ".join(sorted(known)) or "none"
        raise Invalid(f"{what}: unknown model(s) {', '.join(unknown)}; this gateway serves {offered}")


class TenantService:
    def __init__(self, engine: Engine, audit: AuditLog, authz: Authorizer, served: ServedModels) -> None:
        self._engine = engine
        self._audit = audit
        self._authz = authz
        self._served = served

    def create(self, actor: Actor, name: str, allowed_models: list[str] | None = None) -> Tenant:
        """Create a tenant (a platform admin's operation); its creator becomes its first admin, so they
        can invite its people (and later drop the role with ``users grant``)."""
        self._authz.require(actor, "tenants.create", resource=f"tenant:{name}")
        if not NAME.match(name):
            raise Invalid("tenant names are 1-100 lower-case letters, digits, '.', '_' and '-'")
        if allowed_models is not None:
            check_served(self._served, allowed_models, "allowed_models")
        with self._engine.begin() as connection:
            if self.find(connection, name) is not None:
                raise Conflict(f"tenant {name!r} already exists")
            tenant = Tenant(
                id=f"ten_{uuid.uuid4().hex[:24]}",
                name=name,
                allowed_models=sorted(set(allowed_models)) if allowed_models is not None else None,
                disabled=False,
                created_at=datetime.now(UTC),
            )
            connection.execute(
                tenants.insert().values(
                    id=tenant.id,
                    name=name,
                    allowed_models=tenant.allowed_models,
                    disabled=False,
                    created_at=tenant.created_at,
                )
            )
            after: dict[str, object] = {"models": tenant.allowed_models}
            if actor.user_id is not None:
                # Whoever creates a tenant administers it; otherwise nobody could invite into it.
                connection.execute(
                    memberships.insert().values(
                        user_id=actor.user_id, tenant_id=tenant.id, role=Role.ADMIN.value
                    )
                )
                after["admin"] = actor.name
            versions.bump(connection, versions.AUTH)
            event = AuditEvent("tenant.create", f"tenant:{name}", after=after)
            self._audit.append(connection, actor, event)
        return tenant

    def sync(self, actor: Actor, name: str, allowed_models: list[str] | None) -> Tenant:
        """Create the tenant or bring its allow-list in line with the configuration file (server only)."""
        if not actor.system:
            raise Invalid("only the server syncs tenants from its configuration")
        with self._engine.begin() as connection:
            row = self.find(connection, name)
            wanted = sorted(set(allowed_models)) if allowed_models is not None else None
            if row is not None and row.allowed_models != wanted:
                connection.execute(
                    update(tenants).where(tenants.c.id == row.id).values(allowed_models=wanted)
                )
                versions.bump(connection, versions.AUTH)
                event = AuditEvent(
                    "tenant.configure",
                    f"tenant:{name}",
                    before={"models": row.allowed_models},
                    after={"models": wanted},
                )
                self._audit.append(connection, actor, event)
        return self.create(actor, name, allowed_models) if row is None else self.get(name)

    def list(self, actor: Actor) -> list[Tenant]:
        """The tenants ``actor`` holds a role in; every tenant for a platform admin."""
        self._authz.require(actor, "tenants.list")
        with self._engine.connect() as connection:
            found = [_tenant(row) for row in connection.execute(select(tenants).order_by(tenants.c.name))]
        if actor.system or actor.has(PLATFORM_TENANT, Role.ADMIN):
            return found
        return [t for t in found if actor.has(t.name, Role.VIEWER)]

    def get(self, name: str) -> Tenant:
        """A tenant by name, for the server's own use (bootstrap, wiring)."""
        with self._engine.connect() as connection:
            row = self.find(connection, name)
        if row is None:
            raise NotFound(f"unknown tenant {name!r}")
        return _tenant(row)

    def exists(self, name: str) -> bool:
        with self._engine.connect() as connection:
            return self.find(connection, name) is not None

    @staticmethod
    def find(connection: Connection, name: str) -> Row[tuple[object, ...]] | None:
        return connection.execute(select(tenants).where(tenants.c.name == name)).first()


def _tenant(row: Row[tuple[object, ...]]) -> Tenant:
    m = row._mapping
    return Tenant(
        id=str(m["id"]),
        name=str(m["name"]),
        allowed_models=m["allowed_models"],
        disabled=bool(m["disabled"]),
        created_at=m["created_at"],
    )
