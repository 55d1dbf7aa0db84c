"""Request dependencies of the control API: the services and the acting user.

The actor is resolved before the route runs, by ``auth.ControlAuth``, which refuses a request without a
valid control token (401) before its body is read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lockgate.security.rbac import Actor
from lockgate.service_errors import Unauthorized
from lockgate.services import Services

REDEEM_OPERATION = "invitations.redeem"


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def current_actor(request: Request) -> Actor:
    actor = request.scope.get("state", {}).get("actor")
    if not isinstance(actor, Actor):
        raise Unauthorized("missing control token")
    return actor


def authorized(request: Request, services: Annotated[Services, Depends(services)]) -> None:
    """Check the operation against the permission table before the route reads its parameters or body,
    so a refusal is the same 403 (and audit entry) whatever the request carried. Services check again."""
    route = request.scope.get("route")
    operation = getattr(route, "operation_id", None)
    if operation is None or operation == REDEEM_OPERATION:
        return
    tenant = request.path_params.get("tenant")
    services.authz.require(current_actor(request), operation, tenant, resource=request.url.path)


def invitation_code(request: Request) -> str:
    code = request.scope.get("state", {}).get("invitation")
    if not isinstance(code, str):
        raise Unauthorized("send the invitation code as Authorization: Bearer lgi-...")
    return code


ServicesDep = Annotated[Services, Depends(services)]
CurrentActor = Annotated[Actor, Depends(current_actor)]
InvitationCode = Annotated[str, Depends(invitation_code)]
