"""Request dependencies of the control API: the control plane and the acting user."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lockgate.control.plane import ControlPlane
from lockgate.security.rbac import Actor, Role

bearer = HTTPBearer(auto_error=False, description="A control token (lgc-...) of the user acting")


def control_plane(request: Request) -> ControlPlane:
    plane: ControlPlane = request.app.state.control
    return plane


def current_actor(
    request: Request,
    plane: Annotated[ControlPlane, Depends(control_plane)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    token = credentials.credentials if credentials is not None else None
    source = request.client.host if request.client is not None else None
    return plane.users.authenticate(token, source=source, request_id=f"req_{uuid.uuid4().hex}")


Control = Annotated[ControlPlane, Depends(control_plane)]
CurrentActor = Annotated[Actor, Depends(current_actor)]


def can_read(actor: Actor, tenant: str) -> None:
    actor.require(tenant, Role.VIEWER, "read")
