"""Rollout strategies and the rollouts they run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter

from lockgate.api.deps import CurrentActor, ServicesDep
from lockgate.rollouts.service import RolloutView, StoredStrategy
from lockgate.rollouts.spec import parse_strategy
from lockgate.rollouts.store import Rollout

router = APIRouter(tags=["rollouts"])

Environment = Literal["stage", "prod"]
STRATEGY = "/tenants/{tenant}/routes/{route}/environments/{environment}/strategy"
ROLLOUT = "/tenants/{tenant}/routes/{route}/environments/{environment}/rollout"


def strategy_view(stored: StoredStrategy) -> dict[str, Any]:
    return {
        "route": stored.route,
        "environment": stored.environment,
        **stored.spec.model_dump(mode="json"),
        "updated_by": stored.updated_by,
        "updated_at": stored.updated_at.isoformat(),
    }


def rollout_view(rollout: Rollout) -> dict[str, Any]:
    return {
        "id": rollout.id,
        "route": rollout.route,
        "environment": rollout.environment,
        "strategy": rollout.strategy,
        "status": rollout.status,
        "stage": rollout.stage,
        "stages": len(rollout.spec.canary.stages) if rollout.strategy == "canary" else None,
        "candidate_share": rollout.candidate_share,
        "candidate_release_id": rollout.candidate_release_id,
        "baseline_release_id": rollout.baseline_release_id,
        "stage_started_at": rollout.stage_started_at.isoformat(),
        "failures": rollout.failures,
        "reason": rollout.reason,
        "created_by": rollout.created_by,
        "created_at": rollout.created_at.isoformat(),
        "finished_at": rollout.finished_at.isoformat() if rollout.finished_at else None,
    }


def status_view(view: RolloutView) -> dict[str, Any]:
    rollout = view.rollout
    last = view.analyses[0] if view.analyses else None
    next_decision = None
    if rollout.status == "running":
        since = last.at if last is not None else rollout.created_at
        next_decision = (since + timedelta(seconds=rollout.spec.analysis.interval)).isoformat()
    return {
        **rollout_view(rollout),
        "traffic": view.counts,
        "next_decision_at": next_decision,
        "now": datetime.now(UTC).isoformat(),
        "analyses": [
            {
                "stage": a.stage,
                "at": a.at.isoformat(),
                "verdict": a.verdict,
                "metrics": a.metrics,
                "reasons": a.reasons,
                "evidence_id": a.evidence_id,
            }
            for a in view.analyses
        ],
    }


@router.put(STRATEGY, operation_id="rollouts.set")
def set_strategy(
    tenant: str,
    route: str,
    environment: Environment,
    spec: dict[str, Any],
    services: ServicesDep,
    actor: CurrentActor,
) -> dict[str, Any]:
    """Set how the environment takes new releases (the fields of a strategy file; docs/rollouts.md)."""
    parsed = parse_strategy(spec, "strategy")
    return strategy_view(services.rollouts.set_strategy(actor, tenant, route, environment, parsed))


@router.get(STRATEGY, operation_id="rollouts.strategy")
def get_strategy(
    tenant: str, route: str, environment: Environment, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    return strategy_view(services.rollouts.strategy(actor, tenant, route, environment))


@router.post(ROLLOUT, status_code=201, operation_id="rollouts.start")
def start(
    tenant: str, route: str, environment: Environment, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    """Promote the source environment's release through the gate into a rollout of the strategy."""
    return status_view(services.rollouts.start(actor, tenant, route, environment))


@router.get(ROLLOUT, operation_id="rollouts.get")
def status(
    tenant: str, route: str, environment: Environment, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    """The latest rollout: arms, traffic, the recent analyses and when the next decision is due."""
    return status_view(services.rollouts.status(actor, tenant, route, environment))


@router.get("/tenants/{tenant}/rollouts", operation_id="rollouts.list")
def history(
    tenant: str, services: ServicesDep, actor: CurrentActor, route: str | None = None
) -> list[dict[str, Any]]:
    return [rollout_view(r) for r in services.rollouts.history(actor, tenant, route)]


def _steering(event: Literal["pause", "resume", "abort", "promote"]) -> None:
    @router.post(f"{ROLLOUT}/{event}", operation_id=f"rollouts.{event}", name=f"rollouts.{event}")
    def steer(
        tenant: str, route: str, environment: Environment, services: ServicesDep, actor: CurrentActor
    ) -> dict[str, Any]:
        act = getattr(services.rollouts, event)
        view: RolloutView = act(actor, tenant, route, environment)
        return status_view(view)


_EVENTS: tuple[Literal["pause", "resume", "abort", "promote"], ...] = ("pause", "resume", "abort", "promote")
for _event in _EVENTS:
    _steering(_event)
