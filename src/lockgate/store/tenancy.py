"""Resolve a tenant name to its id inside a transaction; every control-plane service needs it."""

from __future__ import annotations

from sqlalchemy import Connection, select

from lockgate.service_errors import NotFound
from lockgate.store.tables import tenants


def require_tenant_id(connection: Connection, tenant: str, *, lock: bool = False) -> str:
    """The id of ``tenant``; ``lock`` holds its row until the transaction ends (serialises writers)."""
    query = select(tenants.c.id).where(tenants.c.name == tenant)
    found = connection.execute(query.with_for_update() if lock else query).scalar()
    if found is None:
        raise NotFound(f"unknown tenant {tenant!r}")
    return str(found)
