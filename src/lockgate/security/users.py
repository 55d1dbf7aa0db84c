"""People on the control plane: users, their roles per tenant, and how they get their first token.

A tenant admin **invites** a new user with roles in that tenant and receives a one-time invitation code
(``lgi-<prefix>-<secret>``, stored only as a peppered HMAC, valid 72 hours). The user redeems the code
and receives their own control token; the admin never sees it. Existing users get roles in further
tenants by ``grant``. Every change is audited in the same transaction as the change.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, select, update

from lockgate.security.apikeys import digest
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import PLATFORM_TENANT, Actor, Role
from lockgate.security.tenants import NAME, TenantService
from lockgate.security.tokens import IssuedToken, TokenService, roles_of, split_prefix
from lockgate.service_errors import Conflict, Invalid, NotFound, Unauthorized
from lockgate.store.tables import invitations, memberships, users

INVITE_PREFIX = "lgi"
INVITE_HOURS = 72
MAX_INVITE_HOURS = 24 * 30


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    roles: dict[str, list[str]]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Invitation:
    user: str
    tenant: str
    roles: list[str]
    code: str
    expires_at: datetime


class UserService:
    def __init__(
        self, engine: Engine, pepper: bytes, audit: AuditLog, authz: Authorizer, tokens: TokenService
    ) -> None:
        self._engine = engine
        self._pepper = pepper
        self._audit = audit
        self._authz = authz
        self._tokens = tokens

    def bootstrap_admin(self, actor: Actor, tenant: str) -> IssuedToken | None:
        """On first start (no users at all): the user ``admin``, admin of ``tenant``, and their token."""
        if not actor.system:
            raise Invalid("only the server bootstraps the first user")
        with self._engine.begin() as connection:
            if connection.execute(select(users.c.id).limit(1)).first() is not None:
                return None
            user_id = self._insert(connection, "admin", tenant, [Role.ADMIN])
            issued = self._tokens.issue(
                connection, user_id, "admin", "bootstrap", datetime.now(UTC) + timedelta(days=90)
            )
            after = {"roles": {tenant: [Role.ADMIN.value]}, "token": issued.info.prefix}
            self._audit.append(connection, actor, AuditEvent("user.create", "user:admin", after=after))
        return issued

    def recover(self, actor: Actor, name: str) -> IssuedToken:
        """A new token for platform admin ``name``, issued by the operator of the server host when every
        admin token is lost or expired (``lockgate recover-admin``). The server only; always audited."""
        if not actor.system:
            raise Invalid("only an operator on the server host recovers an admin")
        with self._engine.begin() as connection:
            user_id = _user_id(connection, name)
            if Role.ADMIN not in roles_of(connection, user_id).get(PLATFORM_TENANT, frozenset()):
                raise Invalid(f"{name} is not an admin of the platform tenant {PLATFORM_TENANT!r}")
            expires = datetime.now(UTC) + timedelta(days=1)
            issued = self._tokens.issue(connection, user_id, name, "recovery", expires)
            after = {"token": issued.info.prefix, "expires_at": expires.isoformat()}
            self._audit.append(connection, actor, AuditEvent("user.recover", f"user:{name}", after=after))
        return issued

    def invite(
        self, actor: Actor, tenant: str, name: str, roles: list[Role], expires_in_hours: float | None = None
    ) -> Invitation:
        """Create user ``name`` with ``roles`` in ``tenant``, and a code only they should redeem."""
        self._authz.require(actor, "users.invite", tenant, f"user:{name}")
        if not NAME.match(name):
            raise Invalid("user names are 1-100 lower-case letters, digits, '.', '_' and '-'")
        hours = INVITE_HOURS if expires_in_hours is None else expires_in_hours
        if not 0 < hours <= MAX_INVITE_HOURS:
            raise Invalid(f"expires_in_hours must be more than 0 and at most {MAX_INVITE_HOURS}")
        prefix = f"{INVITE_PREFIX}-{secrets.token_hex(4)}"
        code = f"{prefix}-{secrets.token_urlsafe(32)}"
        now = datetime.now(UTC)
        expires = now + timedelta(hours=hours)
        plain = sorted({role.value for role in roles})
        with self._engine.begin() as connection:
            if connection.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
                raise Conflict(
                    f"user {name!r} already exists; give them roles in {tenant!r} with `lockgate users grant`"
                )
            user_id = self._insert(connection, name, tenant, roles)
            connection.execute(
                invitations.insert().values(
                    id=f"inv_{uuid.uuid4().hex[:24]}",
                    user_id=user_id,
                    prefix=prefix,
                    code_hash=digest(self._pepper, code),
                    created_by=actor.name,
                    created_at=now,
                    expires_at=expires,
                )
            )
            after = {"roles": {tenant: plain}, "invitation": prefix, "expires_at": expires.isoformat()}
            self._audit.append(connection, actor, AuditEvent("user.invite", f"user:{name}", after=after))
        return Invitation(name, tenant, plain, code, expires)

    def redeem(self, code: str, *, source: str | None = None, request_id: str | None = None) -> IssuedToken:
        """Turn an invitation code into the invited user's first token; a code works once."""
        prefix = split_prefix(code.strip(), INVITE_PREFIX)
        with self._engine.begin() as connection:
            row = connection.execute(
                select(invitations, users.c.name.label("user_name"))
                .join(users)
                .where(invitations.c.prefix == prefix)
                .with_for_update()
            ).first()
            why, who = _unredeemable(row, digest(self._pepper, code.strip()))
            actor = Actor(name=who, source=source, request_id=request_id)
            if why or row is None:
                refused = AuditEvent("invitations.redeem", f"invitation:{prefix or '-'}", outcome="denied")
                self._audit.record(self._engine, actor, refused)
                raise Unauthorized(f"invitation code {prefix or ''} is {why}".replace("  ", " "))
            connection.execute(
                update(invitations).where(invitations.c.id == row.id).values(redeemed_at=datetime.now(UTC))
            )
            expires = datetime.now(UTC) + timedelta(days=90)
            issued = self._tokens.issue(connection, row.user_id, who, "invitation", expires)
            after = {"invitation": prefix, "token": issued.info.prefix, "expires_at": expires.isoformat()}
            self._audit.append(connection, actor, AuditEvent("user.redeem", f"user:{who}", after=after))
        return issued

    def grant(self, actor: Actor, tenant: str, name: str, roles: list[Role]) -> User:
        """Set ``name``'s roles in ``tenant`` (replacing what they held there; no roles cuts them off)."""
        self._authz.require(actor, "users.grant", tenant, f"user:{name}")
        plain = sorted({role.value for role in roles})
        with self._engine.begin() as connection:
            user_id = _user_id(connection, name)
            tenant_row = TenantService.find(connection, tenant)
            if tenant_row is None:
                raise NotFound(f"unknown tenant {tenant!r}")
            before = sorted(
                connection.execute(
                    select(memberships.c.role).where(
                        memberships.c.user_id == user_id, memberships.c.tenant_id == tenant_row.id
                    )
                ).scalars()
            )
            connection.execute(
                delete(memberships).where(
                    memberships.c.user_id == user_id, memberships.c.tenant_id == tenant_row.id
                )
            )
            for role in plain:
                connection.execute(
                    memberships.insert().values(user_id=user_id, tenant_id=tenant_row.id, role=role)
                )
            event = AuditEvent(
                "user.grant",
                f"user:{name}",
                before={"tenant": tenant, "roles": before},
                after={"tenant": tenant, "roles": plain},
            )
            self._audit.append(connection, actor, event)
        return self.get(name)

    def get(self, name: str) -> User:
        with self._engine.connect() as connection:
            row = connection.execute(select(users).where(users.c.name == name)).first()
            if row is None:
                raise NotFound(f"unknown user {name!r}")
            return User(row.id, row.name, _plain_roles(connection, row.id), row.created_at)

    def exists(self) -> bool:
        with self._engine.connect() as connection:
            return connection.execute(select(users.c.id).limit(1)).first() is not None

    @staticmethod
    def _insert(connection: Connection, name: str, tenant: str, roles: list[Role]) -> str:
        tenant_row = TenantService.find(connection, tenant)
        if tenant_row is None:
            raise NotFound(f"unknown tenant {tenant!r}")
        user_id = f"usr_{uuid.uuid4().hex[:24]}"
        connection.execute(
            users.insert().values(id=user_id, name=name, disabled=False, created_at=datetime.now(UTC))
        )
        for role in sorted({r.value for r in roles}):
            connection.execute(
                memberships.insert().values(user_id=user_id, tenant_id=tenant_row.id, role=role)
            )
        return user_id

    def list(self, actor: Actor) -> list[User]:
        self._authz.require(actor, "users.list")
        with self._engine.connect() as connection:
            names = connection.execute(select(users.c.name).order_by(users.c.name)).scalars().all()
        return [self.get(n) for n in names]


def _unredeemable(row: Row[Any] | None, presented: str) -> tuple[str, str]:
    """(why the code cannot be redeemed, or "", and who it was for)."""
    if row is None or not hmac.compare_digest(presented, row.code_hash):
        return "invalid", "anonymous"
    if row.redeemed_at is not None:
        return "already redeemed", str(row.user_name)
    if row.expires_at <= datetime.now(UTC):
        return "expired", str(row.user_name)
    return "", str(row.user_name)


def _plain_roles(connection: Connection, user_id: str) -> dict[str, list[str]]:
    return {
        tenant: sorted(role.value for role in held) for tenant, held in roles_of(connection, user_id).items()
    }


def _user_id(connection: Connection, name: str) -> str:
    found = connection.execute(select(users.c.id).where(users.c.name == name)).scalar()
    if found is None:
        raise NotFound(f"unknown user {name!r}")
    return str(found)
