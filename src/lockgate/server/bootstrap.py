"""What the server's first start creates: the default tenant, an admin API key and the user ``admin``.

Tenants listed in the configuration file are created or brought in line with it on every start.
Replicas that start together on one PostgreSQL store take turns (an advisory lock), so a first start
creates one admin key and one user ``admin``, printed by whichever replica went first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, text

from lockgate.config.loader import LoadedConfig
from lockgate.security.apikeys import IssuedKey
from lockgate.security.rbac import PLATFORM_TENANT, SYSTEM, Actor
from lockgate.security.tokens import IssuedToken
from lockgate.services import Services

CONFIG = Actor(name="config", system=True)


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Secrets created on first start, shown once: an admin API key and the admin's control token."""

    api_key: IssuedKey | None
    control_token: IssuedToken | None


BOOTSTRAP_LOCK = 0x6C6B_6774_626F_6F74
"""The PostgreSQL advisory lock key replicas take around their start-up writes."""


@contextmanager
def one_at_a_time(engine: Engine) -> Iterator[None]:
    """Hold the bootstrap lock on PostgreSQL. A SQLite store has one host, whose ``lockgate serve``
    bootstraps once before it starts its workers."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": BOOTSTRAP_LOCK})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": BOOTSTRAP_LOCK})
            connection.commit()


def bootstrap(services: Services, config: LoadedConfig) -> Bootstrap:
    with one_at_a_time(services.engine):
        return _bootstrap(services, config)


def _bootstrap(services: Services, config: LoadedConfig) -> Bootstrap:
    for tenant in config.gateway.tenants:
        services.tenants.sync(CONFIG, tenant.name, tenant.allowed_models)
    if not services.tenants.exists(PLATFORM_TENANT):
        services.tenants.create(SYSTEM, PLATFORM_TENANT)
    keys = services.keys
    api_key = (
        None
        if keys.has_admin()
        else keys.create(SYSTEM, PLATFORM_TENANT, name="bootstrap admin", role="admin")
    )
    token = services.users.bootstrap_admin(SYSTEM, PLATFORM_TENANT)
    return Bootstrap(api_key, token)
