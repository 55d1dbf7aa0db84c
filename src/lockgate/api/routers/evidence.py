"""Signed evidence of promotion attempts and rollbacks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from lockgate.api.deps import CurrentActor, ServicesDep
from lockgate.gates.evidence import StoredEvidence, Verification

router = APIRouter(tags=["evidence"])


def summary(item: StoredEvidence) -> dict[str, Any]:
    return {
        "id": item.id,
        "route": item.route,
        "environment": item.environment,
        "release_id": item.release_id,
        "decision": item.decision,
        "action": item.record.get("action", "promote"),
        "requested_by": item.record["requested_by"],
        "created_at": item.created_at.isoformat(),
        "audit_seq": item.audit_seq,
    }


def verification_view(result: Verification) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "fingerprint": result.fingerprint,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in result.checks],
    }


@router.get("/tenants/{tenant}/evidence", operation_id="evidence.list")
def list_evidence(
    tenant: str,
    services: ServicesDep,
    actor: CurrentActor,
    release: str | None = None,
    route: str | None = None,
) -> list[dict[str, Any]]:
    return [summary(e) for e in services.evidence.list(actor, tenant, release_id=release, route=route)]


@router.get("/tenants/{tenant}/evidence/{evidence_id}", operation_id="evidence.get")
def get_evidence(tenant: str, evidence_id: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return services.evidence.get(actor, tenant, evidence_id).as_dict()


@router.get("/tenants/{tenant}/evidence/{evidence_id}/verify", operation_id="evidence.verify")
def verify(tenant: str, evidence_id: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return verification_view(services.evidence.verify(actor, tenant, evidence_id))


@router.get("/tenants/{tenant}/evidence/{evidence_id}/bundle", operation_id="evidence.export")
def export(tenant: str, evidence_id: str, services: ServicesDep, actor: CurrentActor) -> Response:
    """The canonical bundle bytes; ``lockgate evidence verify --bundle`` checks them offline."""
    data = services.evidence.export(actor, tenant, evidence_id)
    return Response(data, media_type="application/json")
