"""API keys: issued once, stored only as a peppered HMAC-SHA256 plus a visible prefix.

A key reads ``lg-<8 hex prefix>-<43 char secret>``. The prefix finds the record; the HMAC of the whole
key is compared in constant time. The secret is shown when the key is created and never again.

A key's allow-list may name models the gateway serves and routes (``route:NAME``). Routes it names are
the only routes it may call; models it names are the only models it may reach, directly or through a
route's release. A list that names only routes leaves the models to the tenant's allow-list.

A key may belong to a **team** (a label such as ``research``): limit rules and budgets scoped to a team
apply to the calls of its keys, and every request records the team of the key that made it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, RowMapping, or_, select, update

from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import Actor
from lockgate.security.tenants import ServedModels, TenantService, check_served
from lockgate.service_errors import Invalid, NotFound
from lockgate.store import versions
from lockgate.store.tables import api_keys, tenants
from lockgate.store.tenancy import require_tenant_id

ROLES = ("admin", "client")
ENVIRONMENTS = ("dev", "stage", "prod")
ROUTE_ENTRY = re.compile(r"^route:[a-z0-9][a-z0-9_.-]*$")
TEAM = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
EACH = "each"  # in a limit's or budget's scope: one counter per team; never a team's name


def check_team(team: str, what: str = "team") -> None:
    """Refuse a team name that is not 1-100 lower-case letters, digits, '.', '_', '-', or is ``each``."""
    if not TEAM.match(team) or team == EACH:
        raise Invalid(
            f"{what}: a team is 1-100 lower-case letters, digits, '.', '_' and '-', starting with a letter "
            f"or digit, and is not `{EACH}` (not {team[:120]!r})"
        )


def credential_status(
    revoked_at: datetime | None, expires_at: datetime | None, now: datetime | None = None
) -> str:
    """``revoked``, ``expired`` or ``active``: the life of an API key or a control token."""
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and expires_at <= (now or datetime.now(UTC)):
        return "expired"
    return "active"


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
    environment: str | None = None
    team: str | None = None

    def status(self, now: datetime | None = None) -> str:
        return credential_status(self.revoked_at, self.expires_at, now)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    info: ApiKeyInfo
    secret: str


class KeyService:
    def __init__(
        self, engine: Engine, pepper: bytes, audit: AuditLog, authz: Authorizer, served: ServedModels
    ) -> None:
        self._engine = engine
        self._pepper = pepper
        self._audit = audit
        self._authz = authz
        self._served = served

    def create(
        self,
        actor: Actor,
        tenant: str,
        *,
        name: str = "",
        role: str = "client",
        allowed_models: list[str] | None = None,
        expires_at: datetime | None = None,
        environment: str | None = None,
        team: str | None = None,
    ) -> IssuedKey:
        """Issue a key in ``tenant`` (its admins' operation); the secret is in the result, once."""
        self._authz.require(actor, "keys.create", tenant, f"key:{tenant}/{name or 'unnamed'}")
        if role not in ROLES:
            raise Invalid(f"role must be one of {', '.join(ROLES)}")
        if environment not in (None, *ENVIRONMENTS):
            raise Invalid("environment must be dev, stage or prod")
        if expires_at is not None and expires_at.tzinfo is None:
            raise Invalid("expires_at must carry a timezone")
        if team is not None:
            check_team(team)
        token, prefix = generate()
        with self._engine.begin() as connection:
            row = TenantService.find(connection, tenant)
            if row is None:
                raise NotFound(f"unknown tenant {tenant!r}")
            listed = self._check_allow_list(allowed_models, row.allowed_models)
            info = ApiKeyInfo(
                id=f"key_{uuid.uuid4().hex[:24]}",
                tenant=tenant,
                name=name,
                prefix=prefix,
                role=role,
                allowed_models=listed,
                created_at=datetime.now(UTC),
                expires_at=expires_at,
                revoked_at=None,
                environment=environment,
                team=team,
            )
            connection.execute(
                api_keys.insert().values(
                    id=info.id,
                    tenant_id=row.id,
                    name=name,
                    prefix=prefix,
                    key_hash=digest(self._pepper, token),
                    role=role,
                    allowed_models=listed,
                    created_at=info.created_at,
                    expires_at=expires_at,
                    environment=environment,
                    team=team,
                )
            )
            versions.bump(connection, versions.AUTH)
            if team is not None:
                versions.bump(connection, versions.LIMITS)  # its team's limits and budgets apply now
            # The audit entry names the key by id and prefix, never by its secret.
            after = {
                "id": info.id,
                "prefix": prefix,
                "role": role,
                "models": listed,
                "environment": environment,
                "team": team,
            }
            self._audit.append(
                connection, actor, AuditEvent("key.create", f"key:{tenant}/{info.id}", after=after)
            )
        return IssuedKey(info, token)

    def revoke(self, actor: Actor, tenant: str, key: str) -> ApiKeyInfo:
        """Revoke a key of ``tenant`` by id or visible prefix; revoking twice keeps the first time."""
        self._authz.require(actor, "keys.revoke", tenant, f"key:{tenant}/{key}")
        with self._engine.begin() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            match = (or_(api_keys.c.id == key, api_keys.c.prefix == key), api_keys.c.tenant_id == tenant_id)
            connection.execute(
                update(api_keys)
                .where(*match, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            row = connection.execute(
                select(api_keys, tenants.c.name.label("tenant_name")).join(tenants).where(*match)
            ).first()
            if row is None:
                raise NotFound(f"no key with id or prefix {key!r} in tenant {tenant!r}")
            versions.bump(connection, versions.AUTH)
            info = _info(row._mapping)
            event = AuditEvent("key.revoke", f"key:{tenant}/{info.id}", after={"prefix": info.prefix})
            self._audit.append(connection, actor, event)
            return info

    def set_team(self, actor: Actor, tenant: str, key: str, team: str | None) -> ApiKeyInfo:
        """Put a key of ``tenant`` (by id or visible prefix) in ``team``, or in none; its admins' operation.

        The gateways reload both their keyring and their limits: the key's next call counts against the
        new team's limits and budgets. Calls already logged keep the team they were made under.
        """
        self._authz.require(actor, "keys.set_team", tenant, f"key:{tenant}/{key}")
        if team is not None:
            check_team(team)
        with self._engine.begin() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            match = (or_(api_keys.c.id == key, api_keys.c.prefix == key), api_keys.c.tenant_id == tenant_id)
            before = connection.execute(select(api_keys.c.team).where(*match)).first()
            if before is None:
                raise NotFound(f"no key with id or prefix {key!r} in tenant {tenant!r}")
            connection.execute(update(api_keys).where(*match).values(team=team))
            row = connection.execute(
                select(api_keys, tenants.c.name.label("tenant_name")).join(tenants).where(*match)
            ).one()
            versions.bump(connection, versions.AUTH)
            versions.bump(connection, versions.LIMITS)
            info = _info(row._mapping)
            event = AuditEvent(
                "key.team", f"key:{tenant}/{info.id}", before={"team": before.team}, after={"team": team}
            )
            self._audit.append(connection, actor, event)
            return info

    def has_admin(self) -> bool:
        """Whether a live admin key exists (the server's first start creates one if not)."""
        with self._engine.connect() as connection:
            query = select(api_keys.c.id).where(api_keys.c.role == "admin", api_keys.c.revoked_at.is_(None))
            return connection.execute(query.limit(1)).first() is not None

    def _check_allow_list(
        self, wanted: list[str] | None, tenant_models: list[str] | None
    ) -> list[str] | None:
        if wanted is None:
            return None
        routes = [entry for entry in wanted if entry.startswith("route:")]
        bad = [entry for entry in routes if not ROUTE_ENTRY.match(entry)]
        if bad:
            raise Invalid(f"allowed_models: {', '.join(bad)} is not route:NAME")
        models = [entry for entry in wanted if not entry.startswith("route:")]
        check_served(self._served, models, "allowed_models")
        if tenant_models is not None:
            outside = sorted(set(models) - set(tenant_models))
            if outside:
                raise Invalid(f"allowed_models: the tenant may not use {', '.join(outside)}")
        return sorted(set(wanted))

    def list(self, actor: Actor, tenant: str) -> list[ApiKeyInfo]:
        self._authz.require(actor, "keys.list", tenant)
        query = (
            select(api_keys, tenants.c.name.label("tenant_name"))
            .join(tenants)
            .where(tenants.c.name == tenant)
            .order_by(api_keys.c.created_at)
        )
        with self._engine.connect() as connection:
            require_tenant_id(connection, tenant)
            return [_info(row._mapping) for row in connection.execute(query)]


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
        environment=get("environment"),
        team=get("team"),
    )
