"""Golden datasets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from lockgate.api.deps import CurrentActor, ServicesDep
from lockgate.evals.datasets import MAX_CASES, StoredDataset, case_dicts, parse_cases, parse_spec

router = APIRouter(tags=["datasets"])


class DatasetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any] = Field(
        description="name, description, suite, scorers (a dataset file without cases)"
    )
    cases: list[Any] = Field(min_length=1, max_length=MAX_CASES)


class CaptureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any]
    route: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    since_hours: float = Field(default=24 * 7, gt=0, le=24 * 365)
    limit: int = Field(default=500, ge=1, le=MAX_CASES)
    only_rated: bool = Field(default=False, description="Only calls a user rated (POST /v1/feedback)")
    min_feedback: float | None = Field(
        default=None, ge=0, le=1, description="Only calls rated at least this (0..1; 1 = thumbs up)"
    )


def summary(d: StoredDataset) -> dict[str, Any]:
    return {
        "name": d.name,
        "version": d.version,
        "ref": d.ref,
        "sha256": d.sha256,
        "suite": d.spec.suite,
        "cases": len(d.cases),
        "created_by": d.created_by,
        "created_at": d.created_at.isoformat(),
    }


@router.get("/tenants/{tenant}/datasets", operation_id="datasets.list")
def list_datasets(tenant: str, services: ServicesDep, actor: CurrentActor) -> list[dict[str, Any]]:
    return [summary(d) for d in services.datasets.list(actor, tenant)]


@router.post("/tenants/{tenant}/datasets", status_code=201, operation_id="datasets.push")
def push(tenant: str, body: DatasetIn, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    """Store a version; problems name ``spec`` or ``cases[i]`` and the field."""
    spec = parse_spec(body.spec, where="spec")
    stored = services.datasets.push(actor, tenant, spec, parse_cases(body.cases))
    return summary(stored)


@router.post("/tenants/{tenant}/datasets/capture", status_code=201, operation_id="datasets.capture")
def capture(tenant: str, body: CaptureIn, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    spec = parse_spec({k: v for k, v in body.spec.items() if k != "cases"}, where="spec")
    since = datetime.now(UTC) - timedelta(hours=body.since_hours)
    stored = services.datasets.capture(
        actor,
        tenant,
        spec,
        route=body.route,
        since=since,
        limit=body.limit,
        only_rated=body.only_rated,
        min_feedback=body.min_feedback,
    )
    return summary(stored)


@router.get("/tenants/{tenant}/datasets/{name}", operation_id="datasets.get")
def get_dataset(
    tenant: str,
    name: str,
    services: ServicesDep,
    actor: CurrentActor,
    version: int | None = Query(default=None, ge=1, le=2**31 - 1, description="Default: the latest"),
) -> dict[str, Any]:
    found = services.datasets.get(actor, tenant, name, version)
    return {
        **summary(found),
        "spec": found.spec.model_dump(mode="json"),
        "case_list": case_dicts(found.cases),
    }
