"""Tenants and their API keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lockgate.api.deps import CurrentActor, ServicesDep
from lockgate.security.apikeys import ApiKeyInfo

router = APIRouter(tags=["tenants and keys"])


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    allowed_models: list[str] | None = Field(default=None, max_length=1000)


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200)
    role: Literal["client", "admin"] = "client"
    allowed_models: list[str] | None = Field(default=None, max_length=1000)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)
    environment: Literal["dev", "stage", "prod"] | None = None
    team: str | None = Field(default=None, max_length=100, description="The key's team (limits, budgets)")


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team: str | None = Field(max_length=100, description="The team, or null for none")


def key_info(k: ApiKeyInfo) -> dict[str, Any]:
    return {
        "id": k.id,
        "tenant": k.tenant,
        "prefix": k.prefix,
        "name": k.name,
        "role": k.role,
        "allowed_models": k.allowed_models,
        "environment": k.environment,
        "team": k.team,
        "status": k.status(),
        "created_at": k.created_at.isoformat(),
        "expires_at": k.expires_at.isoformat() if k.expires_at else None,
        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
    }


@router.get("/tenants", operation_id="tenants.list")
def list_tenants(services: ServicesDep, actor: CurrentActor) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "id": t.id,
            "allowed_models": t.allowed_models,
            "created_at": t.created_at.isoformat(),
        }
        for t in services.tenants.list(actor)
    ]


@router.post("/tenants", status_code=201, operation_id="tenants.create")
def create_tenant(body: TenantIn, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    tenant = services.tenants.create(actor, body.name, body.allowed_models)
    return {"name": tenant.name, "id": tenant.id, "allowed_models": tenant.allowed_models}


@router.get("/tenants/{tenant}/keys", operation_id="keys.list")
def list_keys(tenant: str, services: ServicesDep, actor: CurrentActor) -> list[dict[str, Any]]:
    return [key_info(k) for k in services.keys.list(actor, tenant)]


@router.post("/tenants/{tenant}/keys", status_code=201, operation_id="keys.create")
def create_key(tenant: str, body: KeyIn, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    expires = datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    issued = services.keys.create(
        actor,
        tenant,
        name=body.name,
        role=body.role,
        allowed_models=body.allowed_models,
        expires_at=expires,
        environment=body.environment,
        team=body.team,
    )
    return {**key_info(issued.info), "key": issued.secret}


@router.put("/tenants/{tenant}/keys/{key}/team", operation_id="keys.set_team")
def set_key_team(
    tenant: str, key: str, body: TeamIn, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    """Put the key (by id or prefix) in a team, or in none (``null``); its next call counts there."""
    return key_info(services.keys.set_team(actor, tenant, key, body.team))


@router.delete("/tenants/{tenant}/keys/{key}", operation_id="keys.revoke")
def revoke_key(tenant: str, key: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return key_info(services.keys.revoke(actor, tenant, key))
