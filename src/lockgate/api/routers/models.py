"""The model registry."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lockgate.api.deps import Control, CurrentActor, can_read
from lockgate.control.registry import ModelStatus, parse_card

router = APIRouter(tags=["model registry"])


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=50)


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: ModelStatus


@router.get("/tenants/{tenant}/models")
def list_models(tenant: str, control: Control, actor: CurrentActor) -> list[dict[str, Any]]:
    can_read(actor, tenant)
    return [m.to_dict() for m in control.registry.list(tenant)]


@router.post("/tenants/{tenant}/models", status_code=201)
def register(tenant: str, card: dict[str, Any], control: Control, actor: CurrentActor) -> dict[str, Any]:
    return control.registry.register(actor, tenant, parse_card(card)).to_dict()


@router.get("/tenants/{tenant}/models/{name}/versions/{version}")
def get_model(tenant: str, name: str, version: str, control: Control, actor: CurrentActor) -> dict[str, Any]:
    can_read(actor, tenant)
    return control.registry.get(tenant, name, version).to_dict()


@router.get("/tenants/{tenant}/models/resolve/{reference}")
def resolve(tenant: str, reference: str, control: Control, actor: CurrentActor) -> dict[str, Any]:
    can_read(actor, tenant)
    return control.registry.resolve(tenant, reference).to_dict()


@router.put("/tenants/{tenant}/models/{name}/aliases/{alias}")
def set_alias(
    tenant: str, name: str, alias: str, body: AliasIn, control: Control, actor: CurrentActor
) -> dict[str, Any]:
    return control.registry.set_alias(actor, tenant, name, alias, body.version).to_dict()


@router.post("/tenants/{tenant}/models/{name}/versions/{version}/status")
def set_status(
    tenant: str, name: str, version: str, body: StatusIn, control: Control, actor: CurrentActor
) -> dict[str, Any]:
    return control.registry.set_status(actor, tenant, name, version, body.status).to_dict()
