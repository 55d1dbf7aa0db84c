"""People for service-level tests, made the way the product makes them: invited, then redeemed."""

from __future__ import annotations

from lockgate.security.rbac import Actor, Role
from lockgate.services import Services


def person(services: Services, admin: Actor, name: str, *roles: Role, tenant: str = "default") -> Actor:
    """Invite ``name`` with ``roles`` in ``tenant``, redeem the invitation, and act with their token."""
    invitation = services.users.invite(admin, tenant, name, list(roles))
    token = services.users.redeem(invitation.code)
    return services.tokens.authenticate(token.secret)


def token_of(services: Services, admin: Actor, name: str, *roles: Role, tenant: str = "default") -> str:
    """Like ``person``, but the control token itself (for HTTP and CLI tests)."""
    invitation = services.users.invite(admin, tenant, name, list(roles))
    return services.users.redeem(invitation.code).secret
