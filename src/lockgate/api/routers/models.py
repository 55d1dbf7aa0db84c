"""The model registry."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lockgate.api.deps import CurrentActor, ServicesDep
from lockgate.control.registry import ModelStatus, parse_card

router = APIRouter(tags=["model registry"])


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=50)


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["active", "deprecated"]


@router.get("/tenants/{tenant}/models", operation_id="models.list")
def list_models(
    tenant: str, services: ServicesDep, actor: CurrentActor, name: str | None = None
) -> list[dict[str, Any]]:
    return [m.to_dict() for m in services.registry.list(actor, tenant, name)]


@router.post("/tenants/{tenant}/models", status_code=201, operation_id="models.register")
def register(tenant: str, card: dict[str, Any], services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    """Register a model card (the fields of docs/registry.md); its gateway model must be served here."""
    return services.registry.register(actor, tenant, parse_card(card)).to_dict()


@router.get("/tenants/{tenant}/models/{name}/versions/{version}", operation_id="models.get")
def get_model(
    tenant: str, name: str, version: str, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    return services.registry.get(actor, tenant, name, version).to_dict()


@router.get("/tenants/{tenant}/models/resolve/{reference}", operation_id="models.resolve")
def resolve(tenant: str, reference: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return services.registry.resolve(actor, tenant, reference).to_dict()


@router.put("/tenants/{tenant}/models/{name}/aliases/{alias}", operation_id="models.alias")
def set_alias(
    tenant: str, name: str, alias: str, body: AliasIn, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    return services.registry.set_alias(actor, tenant, name, alias, body.version).to_dict()


@router.post("/tenants/{tenant}/models/{name}/versions/{version}/status", operation_id="models.set_status")
def set_status(
    tenant: str, name: str, version: str, body: StatusIn, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    status = ModelStatus(body.status)
    return services.registry.set_status(actor, tenant, name, version, status).to_dict()


@router.post("/tenants/{tenant}/models/{name}/versions/{version}/retire", operation_id="models.retire")
def retire(
    tenant: str, name: str, version: str, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    return services.registry.set_status(actor, tenant, name, version, ModelStatus.RETIRED).to_dict()
