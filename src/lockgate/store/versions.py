"""Change versions: a counter per kind of state, bumped in the same transaction as the change.

Gateway workers poll these counters off the request path and reload their in-memory copies when one
moves, which is how a revoked key stops working on every worker within a second.
"""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from lockgate.store.tables import state_versions

AUTH = "auth"
ROUTES = "routes"
LIMITS = "limits"


def bump(connection: Connection, name: str) -> None:
    connection.execute(
        update(state_versions)
        .where(state_versions.c.name == name)
        .values(version=state_versions.c.version + 1)
    )


def current(connection: Connection, name: str) -> int:
    value = connection.execute(select(state_versions.c.version).where(state_versions.c.name == name)).scalar()
    return int(value or 0)
