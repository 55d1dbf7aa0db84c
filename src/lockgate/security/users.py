"""People on the control plane: users, their roles per tenant, and the tokens they act with.

A control token reads ``lgc-<8 hex prefix>-<secret>`` and is stored, like API keys, only as a peppered
HMAC. The CLI (``LOCKGATE_TOKEN``) and the REST API (``Authorization: Bearer``) both turn a token into
an ``Actor`` here. Every change is audited in the same transaction.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, delete, select

from lockgate.control.errors import Conflict, Invalid, NotFound, Unauthorized
from lockgate.security.apikeys import digest
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.rbac import Actor, Role
from lockgate.security.tenants import TenantService
from lockgate.store.tables import control_tokens, memberships, tenants, users

TOKEN_PREFIX = "lgc"  # noqa: S105 - a visible marker, not a secret


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    roles: dict[str, list[str]]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedToken:
    user: str
    prefix: str
    secret: str


class UserService:
    def __init__(self, engine: Engine, pepper: bytes, audit: AuditLog) -> None:
        self._engine = engine
        self._pepper = pepper
        self._audit = audit

    def create(self, actor: Actor | None, name: str, grants: dict[str, list[Role]]) -> User:
        """Create a user with roles per tenant. ``actor`` None is the bootstrap, allowed only once."""
        event = AuditEvent("user.create", f"user:{name}", after={"roles": _plain(grants)})
        if actor is not None:
            for tenant in grants or {"default": []}:
                self._audit.authorize(self._engine, actor, tenant, Role.ADMIN, event)
        with self._engine.begin() as connection:
            if connection.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
                raise Conflict(f"user {name!r} already exists")
            if actor is None and connection.execute(select(users.c.id).limit(1)).first() is not None:
                raise Invalid("the first user has already been created")
            user_id = f"usr_{uuid.uuid4().hex[:24]}"
            connection.execute(
                users.insert().values(id=user_id, name=name, disabled=False, created_at=_now())
            )
            for tenant, roles in grants.items():
                tenant_row = TenantService.find(connection, tenant)
                if tenant_row is None:
                    raise NotFound(f"unknown tenant {tenant!r}")
                for role in roles:
                    connection.execute(
                        memberships.insert().values(user_id=user_id, tenant_id=tenant_row.id, role=role)
                    )
            self._audit.append(connection, actor or Actor(name="bootstrap"), event)
        return self.get(name)

    def grant(self, actor: Actor, name: str, tenant: str, roles: list[Role]) -> User:
        event = AuditEvent(
            "user.grant", f"user:{name}", after={"tenant": tenant, "roles": [r.value for r in roles]}
        )
        self._audit.authorize(self._engine, actor, tenant, Role.ADMIN, event)
        with self._engine.begin() as connection:
            user_id = self._user_id(connection, name)
            tenant_row = TenantService.find(connection, tenant)
            if tenant_row is None:
                raise NotFound(f"unknown tenant {tenant!r}")
            connection.execute(
                delete(memberships).where(
                    memberships.c.user_id == user_id, memberships.c.tenant_id == tenant_row.id
                )
            )
            for role in roles:
                connection.execute(
                    memberships.insert().values(user_id=user_id, tenant_id=tenant_row.id, role=role)
                )
            self._audit.append(connection, actor, event)
        return self.get(name)

    def issue_token(self, actor: Actor | None, name: str) -> IssuedToken:
        """A new control token for ``name``: by an admin, by the user themself, or at bootstrap."""
        event = AuditEvent("token.create", f"user:{name}")
        if actor is not None and actor.name != name:
            for tenant in self.get(name).roles or {"default": []}:
                self._audit.authorize(self._engine, actor, tenant, Role.ADMIN, event)
        prefix = f"{TOKEN_PREFIX}-{secrets.token_hex(4)}"
        secret = f"{prefix}-{secrets.token_urlsafe(32)}"
        with self._engine.begin() as connection:
            user_id = self._user_id(connection, name)
            connection.execute(
                control_tokens.insert().values(
                    id=f"tok_{uuid.uuid4().hex[:24]}",
                    user_id=user_id,
                    prefix=prefix,
                    token_hash=digest(self._pepper, secret),
                    created_at=_now(),
                )
            )
            event = AuditEvent(event.action, event.resource, after={"prefix": prefix})
            self._audit.append(connection, actor or Actor(name="bootstrap"), event)
        return IssuedToken(name, prefix, secret)

    def authenticate(
        self, token: str | None, *, source: str | None = None, request_id: str | None = None
    ) -> Actor:
        if not token:
            raise Unauthorized("missing control token: set LOCKGATE_TOKEN or send Authorization: Bearer")
        token = token.removeprefix("Bearer ").strip()
        parts = token.split("-", 2)
        prefix = "-".join(parts[:2]) if len(parts) == 3 and parts[0] == TOKEN_PREFIX else ""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(control_tokens.c.token_hash, users.c.id, users.c.name, users.c.disabled)
                .join(users)
                .where(control_tokens.c.prefix == prefix, control_tokens.c.revoked_at.is_(None))
            ).first()
            presented = digest(self._pepper, token)
            if row is None or row.disabled or not hmac.compare_digest(presented, row.token_hash):
                raise Unauthorized("invalid control token")
            roles = self._roles(connection, row.id)
        frozen = {tenant: frozenset(Role(r) for r in held) for tenant, held in roles.items()}
        return Actor(name=row.name, roles=frozen, user_id=row.id, source=source, request_id=request_id)

    def get(self, name: str) -> User:
        with self._engine.connect() as connection:
            row = connection.execute(select(users).where(users.c.name == name)).first()
            if row is None:
                raise NotFound(f"unknown user {name!r}")
            return User(row.id, row.name, self._roles(connection, row.id), row.created_at)

    def all(self) -> list[User]:
        with self._engine.connect() as connection:
            names = connection.execute(select(users.c.name).order_by(users.c.name)).scalars().all()
        return [self.get(n) for n in names]

    @staticmethod
    def _roles(connection: Connection, user_id: str) -> dict[str, list[str]]:
        rows = connection.execute(
            select(tenants.c.name, memberships.c.role).join(tenants).where(memberships.c.user_id == user_id)
        ).all()
        roles: dict[str, list[str]] = {}
        for tenant, role in rows:
            roles.setdefault(tenant, []).append(role)
        return {t: sorted(r) for t, r in roles.items()}

    @staticmethod
    def _user_id(connection: Connection, name: str) -> str:
        user_id = connection.execute(select(users.c.id).where(users.c.name == name)).scalar()
        if user_id is None:
            raise NotFound(f"unknown user {name!r}")
        return str(user_id)


def _plain(grants: dict[str, list[Role]]) -> dict[str, list[str]]:
    return {tenant: sorted(r.value for r in roles) for tenant, roles in grants.items()}


def _now() -> datetime:
    return datetime.now(UTC)
