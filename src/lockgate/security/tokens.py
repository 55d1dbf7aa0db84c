"""Control tokens: what a person (or a CI job) holds to act on the control plane.

A token reads ``lgc-<8 hex prefix>-<secret>`` and is stored, like API keys, only as a peppered HMAC. It
has a name, an expiry (90 days unless asked otherwise, at most a year) and can be revoked or rotated.
Only its owner creates or rotates a token; nobody, not even an admin, can mint one for someone else:
new users get theirs by redeeming an invitation (``users.py``). Every failed authentication is audited.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from lockgate.security.apikeys import credential_status, digest
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import PLATFORM_TENANT, Actor, Role
from lockgate.service_errors import Invalid, NotFound, Unauthorized
from lockgate.store.tables import control_tokens, memberships, tenants, users

TOKEN_PREFIX = "lgc"  # noqa: S105 - a visible marker, not a secret
DEFAULT_DAYS = 90
MAX_DAYS = 365
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    user: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def status(self, now: datetime | None = None) -> str:
        return credential_status(self.revoked_at, self.expires_at, now)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    info: TokenInfo
    secret: str

    @property
    def user(self) -> str:
        return self.info.user


def split_prefix(token: str, marker: str) -> str:
    """``marker-xxxxxxxx`` of a well-formed secret, else an empty string."""
    parts = token.split("-", 2)
    return "-".join(parts[:2]) if len(parts) == 3 and parts[0] == marker and len(parts[1]) == 8 else ""


def lifetime(days: float | None) -> timedelta:
    if days is None:
        return timedelta(days=DEFAULT_DAYS)
    if not 0 < days <= MAX_DAYS:
        raise Invalid(f"expires_in_days must be more than 0 and at most {MAX_DAYS}")
    return timedelta(days=days)


class TokenService:
    def __init__(self, engine: Engine, pepper: bytes, audit: AuditLog, authz: Authorizer) -> None:
        self._engine = engine
        self._pepper = pepper
        self._audit = audit
        self._authz = authz

    def authenticate(
        self, token: str | None, *, source: str | None = None, request_id: str | None = None
    ) -> Actor:
        """The actor behind a bearer token; every refusal is audited and is a 401."""
        if not token:
            self._refuse(ANONYMOUS, "missing", source, request_id)
            raise Unauthorized("missing control token: set LOCKGATE_TOKEN or send Authorization: Bearer")
        token = token.removeprefix("Bearer ").strip()
        prefix = split_prefix(token, TOKEN_PREFIX)
        with self._engine.connect() as connection:
            row = connection.execute(
                select(control_tokens, users.c.name.label("user_name"), users.c.disabled)
                .join(users)
                .where(control_tokens.c.prefix == prefix)
            ).first()
            presented = digest(self._pepper, token)
            if row is None or not hmac.compare_digest(presented, row.token_hash):
                self._refuse(ANONYMOUS, "invalid", source, request_id)
                raise Unauthorized("invalid control token")
            why = _unusable(row.revoked_at, row.expires_at, bool(row.disabled))
            if why is not None:
                self._refuse(str(row.user_name), why, source, request_id, prefix)
                raise Unauthorized(f"control token {prefix} is {why}")
            roles = roles_of(connection, row.user_id)
        return Actor(
            name=row.user_name, roles=roles, user_id=row.user_id, source=source, request_id=request_id
        )

    def create(self, actor: Actor, name: str = "", expires_in_days: float | None = None) -> IssuedToken:
        """A new token for ``actor`` themself."""
        self._authz.require(actor, "tokens.create", resource=f"user:{actor.name}")
        expires = datetime.now(UTC) + lifetime(expires_in_days)
        with self._engine.begin() as connection:
            issued = self.issue(connection, self._user_id(connection, actor.name), actor.name, name, expires)
            self._audit.append(connection, actor, _created(issued))
        return issued

    def list(self, actor: Actor) -> list[TokenInfo]:
        self._authz.require(actor, "tokens.list", resource=f"user:{actor.name}")
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(control_tokens, users.c.name.label("user_name"))
                .join(users)
                .where(users.c.name == actor.name)
                .order_by(control_tokens.c.created_at)
            ).all()
        return [_info(row) for row in rows]

    def revoke(self, actor: Actor, token: str) -> TokenInfo:
        """Revoke a token by id or prefix: your own, or anyone's as a platform admin."""
        self._authz.require(actor, "tokens.revoke", resource=f"token:{token}")
        with self._engine.begin() as connection:
            row = self._find(connection, token)
            if row.user_name != actor.name and not actor.has(PLATFORM_TENANT, Role.ADMIN):
                self._authz.deny(actor, "tokens.revoke", f"token:{row.prefix}")
                raise NotFound(f"you have no token {token!r}")
            if row.revoked_at is None:
                connection.execute(
                    update(control_tokens)
                    .where(control_tokens.c.id == row.id)
                    .values(revoked_at=datetime.now(UTC))
                )
                event = AuditEvent("token.revoke", f"user:{row.user_name}", after={"prefix": row.prefix})
                self._audit.append(connection, actor, event)
            return _info(self._find(connection, token))

    def rotate(self, actor: Actor, token: str, expires_in_days: float | None = None) -> IssuedToken:
        """Replace one of your tokens: a new secret with the same name and a fresh expiry; the old one
        stops working in the same transaction."""
        self._authz.require(actor, "tokens.rotate", resource=f"token:{token}")
        with self._engine.begin() as connection:
            row = self._find(connection, token)
            if row.user_name != actor.name:
                self._authz.deny(actor, "tokens.rotate", f"token:{row.prefix}")
                raise NotFound(f"you have no token {token!r}")
            if row.revoked_at is not None:
                raise Invalid(f"token {row.prefix} is revoked; create a new one instead")
            now = datetime.now(UTC)
            connection.execute(
                update(control_tokens).where(control_tokens.c.id == row.id).values(revoked_at=now)
            )
            issued = self.issue(
                connection, row.user_id, actor.name, row.name or "", now + lifetime(expires_in_days)
            )
            after = {
                "prefix": issued.info.prefix,
                "replaces": row.prefix,
                "expires_at": _iso(issued.info.expires_at),
            }
            self._audit.append(
                connection, actor, AuditEvent("token.rotate", f"user:{actor.name}", after=after)
            )
        return issued

    def issue(
        self, connection: Connection, user_id: str, user: str, name: str, expires_at: datetime | None
    ) -> IssuedToken:
        """Store a new token inside the caller's transaction (the caller audits it)."""
        prefix = f"{TOKEN_PREFIX}-{secrets.token_hex(4)}"
        secret = f"{prefix}-{secrets.token_urlsafe(32)}"
        info = TokenInfo(
            id=f"tok_{uuid.uuid4().hex[:24]}",
            user=user,
            name=name,
            prefix=prefix,
            created_at=datetime.now(UTC),
            expires_at=expires_at,
            revoked_at=None,
        )
        connection.execute(
            control_tokens.insert().values(
                id=info.id,
                user_id=user_id,
                prefix=prefix,
                token_hash=digest(self._pepper, secret),
                created_at=info.created_at,
                name=name or None,
                expires_at=expires_at,
            )
        )
        return IssuedToken(info, secret)

    def _refuse(
        self, who: str, why: str, source: str | None, request_id: str | None, prefix: str | None = None
    ) -> None:
        actor = Actor(name=who, source=source, request_id=request_id)
        after = {"reason": why, **({"prefix": prefix} if prefix else {})}
        self._audit.record(
            self._engine, actor, AuditEvent("auth.token", "control-api", after=after, outcome="denied")
        )

    @staticmethod
    def _find(connection: Connection, token: str) -> Any:
        row = connection.execute(
            select(control_tokens, users.c.name.label("user_name"))
            .join(users)
            .where((control_tokens.c.id == token) | (control_tokens.c.prefix == token))
        ).first()
        if row is None:
            raise NotFound(f"no token {token!r}")
        return row

    @staticmethod
    def _user_id(connection: Connection, name: str) -> str:
        found = connection.execute(select(users.c.id).where(users.c.name == name)).scalar()
        if found is None:
            raise NotFound(f"unknown user {name!r}")
        return str(found)


def roles_of(connection: Connection, user_id: str) -> dict[str, frozenset[Role]]:
    rows = connection.execute(
        select(tenants.c.name, memberships.c.role).join(tenants).where(memberships.c.user_id == user_id)
    ).all()
    roles: dict[str, set[Role]] = {}
    for tenant, role in rows:
        roles.setdefault(tenant, set()).add(Role(role))
    return {tenant: frozenset(held) for tenant, held in roles.items()}


def _unusable(revoked_at: datetime | None, expires_at: datetime | None, disabled: bool) -> str | None:
    if disabled:
        return "disabled"
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and expires_at <= datetime.now(UTC):
        return "expired"
    return None


def _created(issued: IssuedToken) -> AuditEvent:
    after = {
        "prefix": issued.info.prefix,
        "name": issued.info.name,
        "expires_at": _iso(issued.info.expires_at),
    }
    return AuditEvent("token.create", f"user:{issued.user}", after=after)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _info(row: Any) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        user=row.user_name,
        name=row.name or "",
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )
