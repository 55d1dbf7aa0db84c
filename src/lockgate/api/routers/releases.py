"""Releases, approvals and route pointers per environment."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lockgate.api.deps import CurrentActor, ServicesDep
from lockgate.control.environments import Move, Pointer
from lockgate.control.releases import Release, ReleaseRequest

router = APIRouter(tags=["releases and environments"])

Environment = Literal["dev", "stage", "prod"]
RELEASE_ID = r"^rel_[0-9a-f]{32}$"


class ApprovalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    environment: Environment = "prod"


class PointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    release_id: str = Field(pattern=RELEASE_ID)


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: Literal["stage", "prod"]


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str | None = Field(default=None, pattern=RELEASE_ID, description="Default: the previous release")
    expected: str | None = Field(
        default=None,
        pattern=RELEASE_ID,
        description="The release you saw serving; refused if another one serves now, a no-op if `to` does",
    )


def release_view(release: Release) -> dict[str, Any]:
    return {
        **release.summary(),
        "created_by": release.created_by,
        "created_at": release.created_at.isoformat(),
        "content": release.content.model_dump(mode="json"),
    }


def pointer_view(pointer: Pointer) -> dict[str, Any]:
    return {
        "route": pointer.route,
        "environment": pointer.environment,
        "release_id": pointer.release_id,
        "previous_release_id": pointer.previous_release_id,
        "updated_by": pointer.updated_by,
        "updated_at": pointer.updated_at.isoformat(),
    }


def move_view(move: Move) -> dict[str, Any]:
    return {
        "environment": move.environment,
        "release_id": move.release_id,
        "previous_release_id": move.previous_release_id,
        "action": move.action,
        "actor": move.actor,
        "at": move.at.isoformat(),
    }


@router.get("/tenants/{tenant}/releases", operation_id="releases.list")
def list_releases(
    tenant: str, services: ServicesDep, actor: CurrentActor, route: str | None = None
) -> list[dict[str, Any]]:
    return [release_view(r) for r in services.releases.list(actor, tenant, route)]


@router.post("/tenants/{tenant}/releases", status_code=201, operation_id="releases.create")
def create_release(
    tenant: str, body: ReleaseRequest, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    return release_view(services.releases.create(actor, tenant, body))


@router.get("/tenants/{tenant}/releases/{release_id}", operation_id="releases.get")
def get_release(tenant: str, release_id: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return release_view(services.releases.get(actor, tenant, release_id))


@router.post(
    "/tenants/{tenant}/releases/{release_id}/approvals", status_code=201, operation_id="releases.approve"
)
def approve(
    tenant: str, release_id: str, body: ApprovalIn, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    approvers = services.environments.approve(actor, tenant, release_id, body.environment)
    return {"release_id": release_id, "environment": body.environment, "approvers": approvers}


@router.get("/tenants/{tenant}/routes", operation_id="routes.list")
def list_pointers(
    tenant: str, services: ServicesDep, actor: CurrentActor, route: str | None = None
) -> list[dict[str, Any]]:
    return [pointer_view(p) for p in services.environments.pointers(actor, tenant, route)]


@router.get("/tenants/{tenant}/routes/{route}/history", operation_id="routes.history")
def history(tenant: str, route: str, services: ServicesDep, actor: CurrentActor) -> list[dict[str, Any]]:
    return [move_view(m) for m in services.environments.history(actor, tenant, route)]


@router.put("/tenants/{tenant}/routes/{route}/environments/{environment}", operation_id="routes.point")
def point(
    tenant: str,
    route: str,
    environment: Environment,
    body: PointIn,
    services: ServicesDep,
    actor: CurrentActor,
) -> dict[str, Any]:
    """Point dev at a release; stage and prod answer 422: they move only by promote and rollback."""
    return pointer_view(services.environments.point(actor, tenant, route, environment, body.release_id))


@router.post("/tenants/{tenant}/routes/{route}/promote", operation_id="routes.promote")
def promote(
    tenant: str, route: str, body: PromoteIn, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    return pointer_view(services.environments.promote(actor, tenant, route, body.to))


@router.post(
    "/tenants/{tenant}/routes/{route}/environments/{environment}/rollback", operation_id="routes.rollback"
)
def rollback(
    tenant: str,
    route: str,
    environment: Environment,
    services: ServicesDep,
    actor: CurrentActor,
    body: RollbackIn | None = None,
) -> dict[str, Any]:
    wanted = body or RollbackIn()
    moved = services.environments.rollback(actor, tenant, route, environment, wanted.to, wanted.expected)
    return pointer_view(moved)
