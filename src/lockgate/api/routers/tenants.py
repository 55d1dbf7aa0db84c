"""Tenants and their API keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lockgate.api.deps import Control, CurrentActor, can_read
from lockgate.control.errors import Conflict, Invalid, NotFound
from lockgate.security.apikeys import UnknownKey
from lockgate.security.rbac import Role
from lockgate.security.tenants import TenantExists, UnknownTenant

router = APIRouter(tags=["tenants and keys"])


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    allowed_models: list[str] | None = None


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200)
    role: Literal["client", "admin"] = "client"
    allowed_models: list[str] | None = None
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)
    environment: Literal["dev", "stage", "prod"] | None = None


@router.get("/tenants")
def list_tenants(control: Control, actor: CurrentActor) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "id": t.id, "allowed_models": t.allowed_models, "created_at": t.created_at}
        for t in control.tenants.list()
        if actor.has(t.name, Role.VIEWER)
    ]


@router.post("/tenants", status_code=201)
def create_tenant(body: TenantIn, control: Control, actor: CurrentActor) -> dict[str, Any]:
    try:
        tenant = control.tenants.create(body.name, body.allowed_models, actor=actor)
    except TenantExists as exc:
        raise Conflict(str(exc)) from None
    return {"name": tenant.name, "id": tenant.id, "allowed_models": tenant.allowed_models}


@router.get("/tenants/{tenant}/keys")
def list_keys(tenant: str, control: Control, actor: CurrentActor) -> list[dict[str, Any]]:
    can_read(actor, tenant)
    return [
        {
            "id": k.id,
            "prefix": k.prefix,
            "name": k.name,
            "role": k.role,
            "allowed_models": k.allowed_models,
            "status": k.status(),
            "expires_at": k.expires_at,
        }
        for k in control.keys.list(tenant)
    ]


@router.post("/tenants/{tenant}/keys", status_code=201)
def create_key(tenant: str, body: KeyIn, control: Control, actor: CurrentActor) -> dict[str, Any]:
    expires = datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    try:
        issued = control.keys.create(
            tenant,
            name=body.name,
            role=body.role,
            allowed_models=body.allowed_models,
            expires_at=expires,
            environment=body.environment,
            actor=actor,
        )
    except UnknownTenant as exc:
        raise NotFound(str(exc)) from None
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return {"id": issued.info.id, "prefix": issued.info.prefix, "key": issued.secret, "expires_at": expires}


@router.delete("/keys/{key}")
def revoke_key(key: str, control: Control, actor: CurrentActor) -> dict[str, Any]:
    try:
        info = control.keys.revoke(key, actor=actor)
    except UnknownKey:
        raise NotFound(f"no key with id or prefix {key!r}") from None
    return {"id": info.id, "prefix": info.prefix, "revoked_at": info.revoked_at}
