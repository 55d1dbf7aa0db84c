"""Users, their roles per tenant, and control tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lockgate.api.deps import Control, CurrentActor
from lockgate.security.rbac import Role

router = APIRouter(tags=["users"])


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    roles: dict[str, list[Role]] = Field(default_factory=dict, description="tenant -> roles")


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    roles: list[Role]


@router.get("/users")
def list_users(control: Control, actor: CurrentActor) -> list[dict[str, Any]]:
    return [
        {"name": u.name, "roles": u.roles} for u in control.users.all() if actor.has("default", Role.VIEWER)
    ]


@router.get("/users/me")
def whoami(actor: CurrentActor) -> dict[str, Any]:
    return {
        "name": actor.name,
        "roles": {t: sorted(r.value for r in roles) for t, roles in actor.roles.items()},
    }


@router.post("/users", status_code=201)
def create_user(body: UserIn, control: Control, actor: CurrentActor) -> dict[str, Any]:
    user = control.users.create(actor, body.name, body.roles)
    token = control.users.issue_token(actor, body.name)
    return {"name": user.name, "roles": user.roles, "token": token.secret}


@router.put("/users/{name}/tenants/{tenant}/roles")
def grant(name: str, tenant: str, body: GrantIn, control: Control, actor: CurrentActor) -> dict[str, Any]:
    user = control.users.grant(actor, name, tenant, body.roles)
    return {"name": user.name, "roles": user.roles}
