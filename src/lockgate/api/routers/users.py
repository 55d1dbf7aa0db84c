"""You, users, invitations and control tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from lockgate.api.deps import CurrentActor, InvitationCode, ServicesDep
from lockgate.security.rbac import Role
from lockgate.security.tokens import MAX_DAYS, IssuedToken, TokenInfo
from lockgate.security.users import MAX_INVITE_HOURS

router = APIRouter(tags=["users and tokens"])

NAME = r"^[a-z0-9][a-z0-9_.-]{0,99}$"


class InviteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    roles: list[Role] = Field(min_length=1)
    expires_in_hours: float | None = Field(default=None, gt=0, le=MAX_INVITE_HOURS)


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    roles: list[Role]


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=100)
    expires_in_days: float | None = Field(default=None, gt=0, le=MAX_DAYS)


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires_in_days: float | None = Field(default=None, gt=0, le=MAX_DAYS)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def token_info(info: TokenInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "user": info.user,
        "name": info.name,
        "prefix": info.prefix,
        "status": info.status(),
        "created_at": _iso(info.created_at),
        "expires_at": _iso(info.expires_at),
        "revoked_at": _iso(info.revoked_at),
    }


def issued(token: IssuedToken) -> dict[str, Any]:
    return {**token_info(token.info), "token": token.secret}


@router.get("/users/me", operation_id="users.me")
def whoami(services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    services.authz.require(actor, "users.me")
    return {
        "name": actor.name,
        "roles": {t: sorted(r.value for r in roles) for t, roles in actor.roles.items()},
    }


@router.get("/users", operation_id="users.list")
def list_users(services: ServicesDep, actor: CurrentActor) -> list[dict[str, Any]]:
    return [
        {"name": u.name, "roles": u.roles, "created_at": _iso(u.created_at)}
        for u in services.users.list(actor)
    ]


@router.post("/tenants/{tenant}/invitations", status_code=201, operation_id="users.invite")
def invite(tenant: str, body: InviteIn, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    """Create a user with roles in the tenant; the answer holds the invitation code (once) for them."""
    invitation = services.users.invite(actor, tenant, body.name, body.roles, body.expires_in_hours)
    return {
        "user": invitation.user,
        "tenant": invitation.tenant,
        "roles": invitation.roles,
        "code": invitation.code,
        "expires_at": _iso(invitation.expires_at),
    }


@router.put("/tenants/{tenant}/users/{name}/roles", operation_id="users.grant")
def grant(
    tenant: str, name: str, body: GrantIn, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    user = services.users.grant(actor, tenant, name, body.roles)
    return {"name": user.name, "roles": user.roles}


@router.post("/invitations/redeem", status_code=201, operation_id="invitations.redeem")
def redeem(request: Request, code: InvitationCode, services: ServicesDep) -> dict[str, Any]:
    """Send the invitation code as the bearer credential; the answer holds your own token, once."""
    source = request.client.host if request.client is not None else None
    return issued(services.users.redeem(code, source=source))


@router.get("/tokens", operation_id="tokens.list")
def list_tokens(services: ServicesDep, actor: CurrentActor) -> list[dict[str, Any]]:
    return [token_info(t) for t in services.tokens.list(actor)]


@router.post("/tokens", status_code=201, operation_id="tokens.create")
def create_token(body: TokenIn, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return issued(services.tokens.create(actor, body.name, body.expires_in_days))


@router.post("/tokens/{token}/rotate", status_code=201, operation_id="tokens.rotate")
def rotate_token(token: str, body: RotateIn, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return issued(services.tokens.rotate(actor, token, body.expires_in_days))


@router.delete("/tokens/{token}", operation_id="tokens.revoke")
def revoke_token(token: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return token_info(services.tokens.revoke(actor, token))
