"""What the server's first start creates: the default tenant, an admin API key and the user ``admin``.

Tenants listed in the configuration file are created or brought in line with it on every start.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def bootstrap(services: Services, config: LoadedConfig) -> Bootstrap:
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
