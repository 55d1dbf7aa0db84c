"""Eval runs: queued by a client, executed by the server, read back by anyone with the viewer role.

There is deliberately no operation that accepts results: a gate reads only runs the server executed.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lockgate.api.deps import CurrentActor, ServicesDep
from lockgate.evals.service import MAX_CONCURRENCY, MAX_REPEATS, Progress
from lockgate.evals.store import EvalRun

router = APIRouter(tags=["eval runs"])


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    release: str = Field(min_length=1, max_length=80)
    dataset: str = Field(min_length=1, max_length=250, description="name or name@version")
    repeats: int = Field(default=1, ge=1, le=MAX_REPEATS)
    concurrency: int = Field(default=4, ge=1, le=MAX_CONCURRENCY)
    fresh: bool = Field(default=False, description="Start a new run even if one of these is unfinished")
    against: Literal["dev", "stage", "prod"] | None = Field(
        default=None, description="Compare with the release this environment serves"
    )


def run_view(run: EvalRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "release": run.release_id,
        "dataset": run.settings.get("dataset"),
        "repeats": run.repeats,
        "settings": run.settings,
        "origin": run.origin,
        "created_by": run.created_by,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "summary": run.summary,
        "fingerprint": run.fingerprint,
        "deployments": run.deployments or [],
        "error": run.error,
    }


def progress_view(progress: Progress) -> dict[str, Any]:
    return {**run_view(progress.run), "done": progress.done, "total": progress.total}


@router.get("/tenants/{tenant}/eval-runs", operation_id="evals.list")
def list_runs(
    tenant: str, services: ServicesDep, actor: CurrentActor, release: str | None = None
) -> list[dict[str, Any]]:
    return [run_view(r) for r in services.evals.list(actor, tenant, release)]


@router.post("/tenants/{tenant}/eval-runs", status_code=202, operation_id="evals.start")
def start(tenant: str, body: RunIn, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    """Queue a run for the server to execute with its own gateway (an unfinished identical run is
    returned instead, and resumes). Follow it with ``evals.get``."""
    progress = services.evals.start(
        actor,
        tenant,
        body.release,
        body.dataset,
        repeats=body.repeats,
        concurrency=body.concurrency,
        fresh=body.fresh,
        against=body.against,
    )
    return progress_view(progress)


@router.get("/tenants/{tenant}/eval-runs/{run_id}", operation_id="evals.get")
def get_run(tenant: str, run_id: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return progress_view(services.evals.get(actor, tenant, run_id))


@router.post("/tenants/{tenant}/eval-runs/{run_id}/cancel", operation_id="evals.cancel")
def cancel(tenant: str, run_id: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return progress_view(services.evals.cancel(actor, tenant, run_id))


@router.get("/tenants/{tenant}/eval-runs/{run_id}/reports/{format}", operation_id="evals.report")
def report(
    tenant: str,
    run_id: str,
    format: Literal["json", "html", "junit"],
    services: ServicesDep,
    actor: CurrentActor,
) -> dict[str, Any]:
    stored = services.evals.report(actor, tenant, run_id, format)
    return {
        "run_id": stored.run_id,
        "format": stored.format,
        "sha256": stored.sha256,
        "content": stored.content,
    }
