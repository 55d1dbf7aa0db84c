"""Releases, approvals and route pointers per environment."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lockgate.api.deps import Control, CurrentActor, can_read
from lockgate.control.environments import Pointer
from lockgate.control.releases import Release, ReleaseRequest

router = APIRouter(tags=["releases and environments"])

Environment = Literal["dev", "stage", "prod"]


class ApprovalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    environment: Environment = "prod"


class PointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    release_id: str = Field(min_length=1, max_length=80)


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: Literal["stage", "prod"]


def _release(release: Release) -> dict[str, Any]:
    return {
        **release.summary(),
        "created_by": release.created_by,
        "created_at": release.created_at,
        "content": release.content.model_dump(mode="json"),
    }


def _pointer(pointer: Pointer) -> dict[str, Any]:
    return {
        "route": pointer.route,
        "environment": pointer.environment,
        "release_id": pointer.release_id,
        "previous_release_id": pointer.previous_release_id,
        "updated_by": pointer.updated_by,
        "updated_at": pointer.updated_at,
    }


@router.get("/tenants/{tenant}/releases")
def list_releases(
    tenant: str, control: Control, actor: CurrentActor, route: str | None = None
) -> list[dict[str, Any]]:
    can_read(actor, tenant)
    return [_release(r) for r in control.releases.list(tenant, route)]


@router.post("/tenants/{tenant}/releases", status_code=201)
def create_release(
    tenant: str, body: ReleaseRequest, control: Control, actor: CurrentActor
) -> dict[str, Any]:
    return _release(control.releases.create(actor, tenant, body))


@router.get("/tenants/{tenant}/releases/{release_id}")
def get_release(tenant: str, release_id: str, control: Control, actor: CurrentActor) -> dict[str, Any]:
    can_read(actor, tenant)
    return _release(control.releases.get(tenant, release_id))


@router.post("/tenants/{tenant}/releases/{release_id}/approvals", status_code=201)
def approve(
    tenant: str, release_id: str, body: ApprovalIn, control: Control, actor: CurrentActor
) -> dict[str, Any]:
    control.environments.approve(actor, tenant, release_id, body.environment)
    return {
        "release_id": release_id,
        "approvers": control.environments.approvers(release_id, body.environment),
    }


@router.get("/tenants/{tenant}/routes")
def list_pointers(tenant: str, control: Control, actor: CurrentActor) -> list[dict[str, Any]]:
    can_read(actor, tenant)
    return [_pointer(p) for p in control.environments.pointers(tenant)]


@router.put("/tenants/{tenant}/routes/{route}/environments/{environment}")
def point(
    tenant: str, route: str, environment: Environment, body: PointIn, control: Control, actor: CurrentActor
) -> dict[str, Any]:
    return _pointer(control.environments.point(actor, tenant, route, environment, body.release_id))


@router.post("/tenants/{tenant}/routes/{route}/promote")
def promote(
    tenant: str, route: str, body: PromoteIn, control: Control, actor: CurrentActor
) -> dict[str, Any]:
    return _pointer(control.environments.promote(actor, tenant, route, body.to))


@router.post("/tenants/{tenant}/routes/{route}/environments/{environment}/rollback")
def rollback(
    tenant: str, route: str, environment: Environment, control: Control, actor: CurrentActor
) -> dict[str, Any]:
    return _pointer(control.environments.rollback(actor, tenant, route, environment))
