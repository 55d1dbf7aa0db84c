"""API keys: issued once, stored only as a peppered HMAC-SHA256 plus a visible prefix.

A key reads ``lg-<8 hex prefix>-<43 char secret>``. The prefix finds the record; the HMAC of the whole
key is compared in constant time. The secret is shown when the key is created and never again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, RowMapping, or_, select, update

from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.rbac import SYSTEM, Actor, Role
from lockgate.security.tenants import TenantService, UnknownTenant
from lockgate.store import versions
from lockgate.store.tables import api_keys, tenants

ROLES = ("admin", "client")


def generate() -> tuple[str, str]:
    """A fresh key and its visible prefix."""
    prefix = f"lg-{secrets.token_hex(4)}"
    return f"{prefix}-{secrets.token_urlsafe(32)}", prefix


def prefix_of(token: str) -> str | None:
    parts = token.split("-", 2)
    if len(parts) != 3 or parts[0] != "lg" or len(parts[1]) != 8 or not parts[2]:
        return None
    return f"lg-{parts[1]}"


def digest(pepper: bytes, token: str) -> str:
    return hmac.new(pepper, token.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: str
    tenant: str
    name: str
    prefix: str
    role: str
    allowed_models: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def status(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC)):
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    info: ApiKeyInfo
    secret: str


class UnknownKey(LookupError):
    pass


class KeyService:
    def __init__(self, engine: Engine, pepper: bytes, audit: AuditLog | None = None) -> None:
        self._engine = engine
        self._pepper = pepper
        self._audit = audit

    def create(
        self,
        tenant: str,
        *,
        name: str = "",
        role: str = "client",
        allowed_models: list[str] | None = None,
        expires_at: datetime | None = None,
        environment: str | None = None,
        actor: Actor | None = None,
    ) -> IssuedKey:
        """Issue a key. With an ``actor`` (CLI, API) it must be a tenant admin; None is a trusted caller."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if environment not in (None, "dev", "stage", "prod"):
            raise ValueError("environment must be dev, stage or prod")
        if expires_at is not None and expires_at.tzinfo is None:
            raise ValueError("expires_at must carry a timezone")
        event = AuditEvent(
            "key.create",
            f"key:{tenant}/{name or 'unnamed'}",
            after={"role": role, "models": allowed_models, "environment": environment},
        )
        if actor is not None and self._audit is not None:
            self._audit.authorize(self._engine, actor, tenant, Role.ADMIN, event)
        token, prefix = generate()
        info = ApiKeyInfo(
            id=f"key_{uuid.uuid4().hex[:24]}",
            tenant=tenant,
            name=name,
            prefix=prefix,
            role=role,
            allowed_models=sorted(set(allowed_models)) if allowed_models is not None else None,
            created_at=datetime.now(UTC),
            expires_at=expires_at,
            revoked_at=None,
        )
        with self._engine.begin() as connection:
            tenant_row = TenantService.find(connection, tenant)
            if tenant_row is None:
                raise UnknownTenant(tenant)
            connection.execute(
                api_keys.insert().values(
                    id=info.id,
                    tenant_id=tenant_row.id,
                    name=name,
                    prefix=prefix,
                    key_hash=digest(self._pepper, token),
                    role=role,
                    allowed_models=info.allowed_models,
                    created_at=info.created_at,
                    expires_at=expires_at,
                    environment=environment,
                )
            )
            versions.bump(connection, versions.AUTH)
            if self._audit is not None:
                # The audit entry names the key by id and prefix, never by its secret.
                after = {**(event.after or {}), "id": info.id, "prefix": prefix}
                self._audit.append(
                    connection, actor or SYSTEM, AuditEvent(event.action, event.resource, after=after)
                )
        return IssuedKey(info, token)

    def list(self, tenant: str | None = None) -> list[ApiKeyInfo]:
        query = (
            select(api_keys, tenants.c.name.label("tenant_name"))
            .join(tenants)
            .order_by(api_keys.c.created_at)
        )
        if tenant is not None:
            query = query.where(tenants.c.name == tenant)
        with self._engine.connect() as connection:
            return [_info(row._mapping) for row in connection.execute(query)]

    def revoke(self, key: str, actor: Actor | None = None) -> ApiKeyInfo:
        """Revoke by id or visible prefix. Revoking twice keeps the first revocation time."""
        if actor is not None and self._audit is not None:
            found = next((k for k in self.list() if key in (k.id, k.prefix)), None)
            if found is None:
                raise UnknownKey(key)
            self._audit.authorize(
                self._engine, actor, found.tenant, Role.ADMIN, AuditEvent("key.revoke", f"key:{found.id}")
            )
        with self._engine.begin() as connection:
            match = or_(api_keys.c.id == key, api_keys.c.prefix == key)
            connection.execute(
                update(api_keys)
                .where(match, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            row = connection.execute(
                select(api_keys, tenants.c.name.label("tenant_name")).join(tenants).where(match)
            ).first()
            if row is None:
                raise UnknownKey(key)
            versions.bump(connection, versions.AUTH)
            info = _info(row._mapping)
            if self._audit is not None:
                event = AuditEvent("key.revoke", f"key:{info.id}", after={"prefix": info.prefix})
                self._audit.append(connection, actor or SYSTEM, event)
            return info

    def has_admin(self) -> bool:
        with self._engine.connect() as connection:
            query = select(api_keys.c.id).where(api_keys.c.role == "admin", api_keys.c.revoked_at.is_(None))
            return connection.execute(query.limit(1)).first() is not None


def _info(row: RowMapping) -> ApiKeyInfo:
    get = row.__getitem__
    return ApiKeyInfo(
        id=get("id"),
        tenant=get("tenant_name"),
        name=get("name"),
        prefix=get("prefix"),
        role=get("role"),
        allowed_models=get("allowed_models"),
        created_at=get("created_at"),
        expires_at=get("expires_at"),
        revoked_at=get("revoked_at"),
    )
