"""Who may do what: users hold roles per tenant, and every control-plane mutation checks one.

Roles are a set per tenant, not a ladder, except that ``admin`` includes every other role:

- ``viewer``   reads everything in the tenant
- ``editor``   registers models, pushes prompts, creates releases, moves the dev pointer
- ``approver`` approves a release for an environment (never their own release: four eyes)
- ``deployer`` promotes to stage and prod, rolls back
- ``admin``    all of the above plus users, keys and tenants
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from lockgate.control.errors import Forbidden


class Role(enum.StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"
    APPROVER = "approver"
    DEPLOYER = "deployer"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Actor:
    """A person (or the system) acting on the control plane, with where the request came from."""

    name: str
    roles: Mapping[str, frozenset[Role]] = field(default_factory=dict)
    user_id: str | None = None
    source: str | None = None
    request_id: str | None = None

    def has(self, tenant: str, role: Role) -> bool:
        held = self.roles.get(tenant, frozenset())
        if Role.ADMIN in held:
            return True
        if role is Role.VIEWER:
            return bool(held)
        return role in held

    def require(self, tenant: str, role: Role, action: str) -> None:
        if not self.has(tenant, role):
            raise Forbidden(
                f"{self.name} lacks the {role.value} role in tenant {tenant!r} needed to {action}"
            )


SYSTEM = Actor(name="system", roles={})
