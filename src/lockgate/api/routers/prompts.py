"""The prompt catalog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from lockgate.api.deps import CurrentActor, ServicesDep
from lockgate.control.prompt_spec import PromptSpec, parse_prompt
from lockgate.service_errors import Invalid

router = APIRouter(tags=["prompt catalog"])


def prompt_or_invalid(raw: dict[str, Any]) -> PromptSpec:
    spec, problems = parse_prompt(raw)
    if spec is None:
        raise Invalid("invalid prompt: " + "; ".join(problems))
    return spec


@router.get("/tenants/{tenant}/prompts", operation_id="prompts.list")
def list_prompts(tenant: str, services: ServicesDep, actor: CurrentActor) -> list[dict[str, Any]]:
    return [p.to_dict() for p in services.prompts.list(actor, tenant)]


@router.post("/tenants/{tenant}/prompts", status_code=201, operation_id="prompts.push")
def push(tenant: str, spec: dict[str, Any], services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    """Push one prompt version (the fields of a prompt file); ``unchanged`` when it was stored already."""
    pushed = services.prompts.push(actor, tenant, prompt_or_invalid(spec))
    return {**pushed.to_dict(), "unchanged": pushed.unchanged}


@router.get("/tenants/{tenant}/prompts/{name}/versions", operation_id="prompts.versions")
def versions(tenant: str, name: str, services: ServicesDep, actor: CurrentActor) -> list[dict[str, Any]]:
    return [p.to_dict() for p in services.prompts.versions(actor, tenant, name)]


@router.get("/tenants/{tenant}/prompts/{name}/versions/{version}", operation_id="prompts.get")
def get_prompt(
    tenant: str, name: str, version: str, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    """``version`` ``latest`` is the highest version."""
    wanted = None if version == "latest" else version
    return services.prompts.get(actor, tenant, name, wanted).to_dict()


@router.get("/tenants/{tenant}/prompts/{name}/diff", operation_id="prompts.diff")
def diff(
    tenant: str, name: str, a: str, b: str, services: ServicesDep, actor: CurrentActor
) -> dict[str, str]:
    return {"diff": services.prompts.diff(actor, tenant, name, a, b)}
