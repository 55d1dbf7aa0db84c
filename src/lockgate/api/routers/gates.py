"""Promotion gates."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from lockgate.api.deps import CurrentActor, ServicesDep
from lockgate.gates.gate import GateResult, StoredGate, parse_gate

router = APIRouter(tags=["gates"])


class GateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any] = Field(
        description="The gate file's fields (datasets, thresholds, environments, ...)"
    )
    policies: dict[str, str] = Field(
        default_factory=dict, description="Extra Rego modules: file name -> source"
    )


def gate_view(stored: StoredGate) -> dict[str, Any]:
    return {
        **stored.spec.model_dump(mode="json"),
        "policy_sha256": stored.policies.sha256,
        "policies": stored.policies.modules,
        "updated_by": stored.updated_by,
        "updated_at": stored.updated_at.isoformat(),
    }


def result_view(result: GateResult) -> dict[str, Any]:
    decision = result.decision
    return {
        "release": result.release.id,
        "environment": result.environment,
        "allow": decision.allow,
        "deny": decision.deny,
        "warn": decision.warn,
        "gated": result.gated,
        "policy_sha256": decision.policy_sha256,
        "engine": decision.engine,
        "input": result.input,
        "missing_runs": [{"release": rid, "dataset": ref} for rid, ref in result.missing_runs],
    }


@router.get("/tenants/{tenant}/gates/{route}", operation_id="gates.get")
def get_gate(tenant: str, route: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return gate_view(services.gates.get(actor, tenant, route))


@router.put("/tenants/{tenant}/gates/{route}", operation_id="gates.set")
def set_gate(
    tenant: str, route: str, body: GateIn, services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    spec = parse_gate({**body.spec, "route": route}, "gate")
    return gate_view(services.gates.set(actor, tenant, spec, body.policies))


@router.get("/tenants/{tenant}/releases/{release_id}/gate", operation_id="gates.evaluate")
def evaluate(
    tenant: str,
    release_id: str,
    environment: Literal["dev", "stage", "prod"],
    services: ServicesDep,
    actor: CurrentActor,
) -> dict[str, Any]:
    """What the route's gate decides for the release entering ``environment`` now, from server runs."""
    return result_view(services.gates.evaluate(actor, tenant, release_id, environment))
