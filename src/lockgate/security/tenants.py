"""Tenants: the unit that owns keys, model access and (later) quotas and budgets."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, Row, select, update

from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.rbac import SYSTEM, Actor, Role
from lockgate.store import versions
from lockgate.store.tables import tenants

PLATFORM_TENANT = "default"
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


class UnknownTenant(LookupError):
    def __str__(self) -> str:
        return f"unknown tenant {self.args[0]!r}"


class TenantExists(ValueError):
    def __str__(self) -> str:
        return f"tenant {self.args[0]!r} already exists"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    allowed_models: list[str] | None
    disabled: bool
    created_at: datetime


class TenantService:
    def __init__(self, engine: Engine, audit: AuditLog | None = None) -> None:
        self._engine = engine
        self._audit = audit

    def create(
        self, name: str, allowed_models: list[str] | None = None, actor: Actor | None = None
    ) -> Tenant:
        """Create a tenant. With an ``actor`` it must be a platform admin (admin of ``default``)."""
        event = AuditEvent("tenant.create", f"tenant:{name}", after={"models": allowed_models})
        if actor is not None and self._audit is not None:
            self._audit.authorize(self._engine, actor, PLATFORM_TENANT, Role.ADMIN, event)
        if not NAME.match(name):
            raise ValueError("tenant names are lower-case letters, digits, '.', '_' and '-'")
        with self._engine.begin() as connection:
            if self.find(connection, name) is not None:
                raise TenantExists(name)
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
            versions.bump(connection, versions.AUTH)
            if self._audit is not None:
                self._audit.append(connection, actor or SYSTEM, event)
        return tenant

    def ensure(self, name: str, allowed_models: list[str] | None) -> Tenant:
        """Create the tenant, or bring its model allow-list in line with configuration."""
        with self._engine.begin() as connection:
            row = self.find(connection, name)
            wanted = sorted(set(allowed_models)) if allowed_models is not None else None
            if row is not None and row.allowed_models != wanted:
                connection.execute(
                    update(tenants).where(tenants.c.id == row.id).values(allowed_models=wanted)
                )
                versions.bump(connection, versions.AUTH)
                if self._audit is not None:
                    event = AuditEvent(
                        "tenant.configure",
                        f"tenant:{name}",
                        before={"models": row.allowed_models},
                        after={"models": wanted},
                    )
                    self._audit.append(connection, Actor(name="config"), event)
        return self.create(name, allowed_models) if row is None else self.get(name)

    def get(self, name: str) -> Tenant:
        with self._engine.connect() as connection:
            row = self.find(connection, name)
        if row is None:
            raise UnknownTenant(name)
        return _tenant(row)

    def list(self) -> list[Tenant]:
        with self._engine.connect() as connection:
            return [_tenant(row) for row in connection.execute(select(tenants).order_by(tenants.c.name))]

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
