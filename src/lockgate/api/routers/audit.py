"""The audit log: recent entries and chain verification."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from lockgate.api.deps import Control, CurrentActor
from lockgate.security.rbac import Role
from lockgate.store.tables import audit_log

router = APIRouter(tags=["audit"])


@router.get("/audit")
def recent(
    control: Control, actor: CurrentActor, limit: int = Query(default=50, ge=1, le=1000)
) -> list[dict[str, Any]]:
    actor.require("default", Role.ADMIN, "read the audit log")
    with control.engine.connect() as connection:
        rows = connection.execute(select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)).all()
    return [{k: v for k, v in row._mapping.items() if k not in ("prev_hash",)} for row in rows]
