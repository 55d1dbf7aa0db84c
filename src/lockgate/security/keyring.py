"""The in-memory keyring: authenticates a request without touching the database.

All live keys are loaded at start and reloaded whenever the ``auth`` change version moves; a watcher
polls that counter off the request path (``lockgate.store.watch``), so a revoked key is refused on every
worker within a second and the hot path costs one dict lookup and one HMAC.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from lockgate.errors import Unauthenticated
from lockgate.security.apikeys import digest, prefix_of
from lockgate.store import versions
from lockgate.store.tables import api_keys, tenants


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key, its tenant, and what both allow (None: no limit).

    ``allowed_models`` are the models the key may call by name (the key's list, within the tenant's);
    ``allowed_routes`` the ``route:NAME`` entries it may call; ``route_models`` the models a route's
    release may use on its behalf: the tenant's list, narrowed by the key's models when it names any.
    ``team`` is the key's team (None: none), which team-scoped limits and budgets count by.
    """

    key_id: str
    key_prefix: str
    tenant_id: str
    tenant: str
    role: str
    allowed_models: frozenset[str] | None
    expires_at: float | None
    environment: str | None = None
    allowed_routes: frozenset[str] | None = None
    route_models: frozenset[str] | None = None
    team: str | None = None

    def may_use(self, model: str) -> bool:
        """May this key ask for ``model`` (a model name or ``route:NAME``) by name?"""
        if model.startswith("route:"):
            return self.allowed_routes is None or model in self.allowed_routes
        return self.allowed_models is None or model in self.allowed_models

    def may_route_to(self, model: str) -> bool:
        """May a route's release use ``model`` for this key?"""
        return self.route_models is None or model in self.route_models


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    key_hash: bytes


class Keyring:
    def __init__(self, pepper: bytes, clock: Callable[[], float] = time.time) -> None:
        self._pepper = pepper
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self.version = -1

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated(
                "Missing API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            token = authorization  # also accept a bare key, e.g. from an x-api-key header
        token = token.strip()
        prefix = prefix_of(token)
        entry = self._entries.get(prefix) if prefix else None
        # Hash even when the prefix is unknown so both paths take the same time.
        presented = digest(self._pepper, token).encode("ascii")
        expected = entry.key_hash if entry is not None else b"0" * len(presented)
        if not hmac.compare_digest(presented, expected) or entry is None:
            raise Unauthenticated("Invalid API key.")
        principal = entry.principal
        if principal.expires_at is not None and principal.expires_at <= self._clock():
            raise Unauthenticated("API key has expired.", code="expired_api_key")
        return principal

    def load(self, engine: Engine) -> None:
        """Replace the keyring with every live key; the swap is atomic for concurrent readers."""
        query = (
            select(
                api_keys.c.id,
                api_keys.c.prefix,
                api_keys.c.key_hash,
                api_keys.c.role,
                api_keys.c.allowed_models,
                api_keys.c.expires_at,
                api_keys.c.environment,
                api_keys.c.team,
                tenants.c.id.label("tenant_id"),
                tenants.c.name.label("tenant"),
                tenants.c.allowed_models.label("tenant_models"),
            )
            .join(tenants)
            .where(api_keys.c.revoked_at.is_(None), tenants.c.disabled.is_(False))
        )
        with engine.connect() as connection:
            version = versions.current(connection, versions.AUTH)
            rows = connection.execute(query).all()
        entries: dict[str, _Entry] = {}
        for row in rows:
            expires: datetime | None = row.expires_at
            principal = principal_for(
                key_id=row.id,
                key_prefix=row.prefix,
                tenant_id=row.tenant_id,
                tenant=row.tenant,
                role=row.role,
                key_list=row.allowed_models,
                tenant_list=row.tenant_models,
                expires_at=expires.timestamp() if expires is not None else None,
                environment=row.environment,
                team=row.team,
            )
            entries[row.prefix] = _Entry(principal, row.key_hash.encode("ascii"))
        self._entries = entries
        self.version = version


def principal_for(
    *,
    key_id: str,
    key_prefix: str,
    tenant_id: str,
    tenant: str,
    role: str,
    key_list: list[str] | None,
    tenant_list: list[str] | None,
    expires_at: float | None = None,
    environment: str | None = None,
    team: str | None = None,
) -> Principal:
    """A principal from a key's allow-list (models and ``route:NAME`` entries) and its tenant's."""
    tenant_models = frozenset(tenant_list) if tenant_list is not None else None
    if key_list is None:
        direct, routes, reachable = tenant_models, None, tenant_models
    else:
        routes = frozenset(entry for entry in key_list if entry.startswith("route:"))
        named = frozenset(entry for entry in key_list if not entry.startswith("route:"))
        direct = named if tenant_models is None else named & tenant_models
        reachable = direct if named else tenant_models
    return Principal(
        key_id=key_id,
        key_prefix=key_prefix,
        tenant_id=tenant_id,
        tenant=tenant,
        role=role,
        allowed_models=direct,
        expires_at=expires_at,
        environment=environment,
        allowed_routes=routes,
        route_models=reachable,
        team=team,
    )
