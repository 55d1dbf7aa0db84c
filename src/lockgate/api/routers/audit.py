"""The audit log and the instance's public signing key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from lockgate.api.deps import CurrentActor, ServicesDep
from lockgate.gates.evidence_format import fingerprint

router = APIRouter(tags=["audit"])


@router.get("/audit", operation_id="audit.list")
def recent(
    services: ServicesDep,
    actor: CurrentActor,
    limit: int = Query(default=50, ge=1, le=1000),
    action: str | None = Query(default=None, max_length=60),
) -> list[dict[str, Any]]:
    return services.trail.recent(actor, limit, action)


@router.get("/audit/verify", operation_id="audit.verify")
def verify(services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    """Walk the whole chain, check the signed head and the anchor file, with the server's own key."""
    verified = services.trail.verify(actor)
    report = verified.report
    return {
        "ok": report.ok,
        "entries": report.entries,
        "head_seq": report.head_seq,
        "anchor_seq": report.anchor_seq,
        "first_bad_seq": report.first_bad_seq,
        "problem": report.problem,
        "kind": report.kind,
        "public_key": verified.public_key,
        "fingerprint": fingerprint(verified.public_key),
    }


@router.get("/signing-key", operation_id="instance.signing_key")
def signing_key(services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    """Pin this key when verifying exported evidence offline (``evidence verify --bundle --public-key``)."""
    services.authz.require(actor, "instance.signing_key")
    key = services.audit.signer.public_key
    return {"public_key": key, "fingerprint": fingerprint(key)}
