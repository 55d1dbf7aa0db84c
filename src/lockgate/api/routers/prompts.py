"""The prompt catalog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from lockgate.api.deps import Control, CurrentActor, can_read
from lockgate.control.errors import Invalid
from lockgate.control.prompt_spec import PromptSpec

router = APIRouter(tags=["prompt catalog"])


@router.get("/tenants/{tenant}/prompts")
def list_prompts(tenant: str, control: Control, actor: CurrentActor) -> list[dict[str, Any]]:
    return [p.to_dict() for p in control.prompts.list(tenant, actor=actor)]


@router.post("/tenants/{tenant}/prompts", status_code=201)
def push(tenant: str, spec: dict[str, Any], control: Control, actor: CurrentActor) -> dict[str, Any]:
    try:
        parsed = PromptSpec.model_validate(spec)
    except ValueError as exc:
        raise Invalid(f"invalid prompt: {exc}") from None
    return control.prompts.push(actor, tenant, parsed).to_dict()


@router.get("/tenants/{tenant}/prompts/{name}/versions")
def versions(tenant: str, name: str, control: Control, actor: CurrentActor) -> list[dict[str, Any]]:
    return [p.to_dict() for p in control.prompts.versions(tenant, name, actor=actor)]


@router.get("/tenants/{tenant}/prompts/{name}/versions/{version}")
def get_prompt(tenant: str, name: str, version: str, control: Control, actor: CurrentActor) -> dict[str, Any]:
    can_read(actor, tenant)
    return control.prompts.get(tenant, name, version, actor=actor).to_dict()


@router.get("/tenants/{tenant}/prompts/{name}/diff")
def diff(tenant: str, name: str, a: str, b: str, control: Control, actor: CurrentActor) -> dict[str, str]:
    return {"diff": control.prompts.diff(tenant, name, a, b, actor=actor)}
