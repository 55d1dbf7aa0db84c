"""Roles and the actor: users hold a set of roles per tenant; ``permissions`` says what each allows.

Roles are a set per tenant, not a ladder, except that ``admin`` includes every other role and any role
includes ``viewer``:

- ``viewer``   reads everything in the tenant
- ``editor``   registers models, pushes prompts and datasets, creates releases, points dev, runs evals
- ``approver`` approves a release for an environment (never one they had a hand in: four eyes)
- ``deployer`` promotes to stage and prod, rolls back, runs evals
- ``admin``    all of the above plus users, keys and gates; admin of ``default`` runs the platform
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

PLATFORM_TENANT = "default"


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
    system: bool = False
    """The server itself (bootstrap, configuration sync, the eval worker); never from a token."""

    def has(self, tenant: str, role: Role) -> bool:
        held = self.roles.get(tenant, frozenset())
        if Role.ADMIN in held:
            return True
        if role is Role.VIEWER:
            return bool(held)
        return role in held


SYSTEM = Actor(name="system", roles={}, system=True)
