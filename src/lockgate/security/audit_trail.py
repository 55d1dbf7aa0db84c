"""Reading the audit log for people: recent entries (redacted) and verification with the server's key.

Verification runs on the server, against the public key of the signing key the server holds and the
anchor file in its data directory; no client ever needs either. It never creates a key: a server
without one does not start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, select

from lockgate.security.audit import AuditLog
from lockgate.security.audit_verify import VerifyReport, verify
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import Actor
from lockgate.store.tables import audit_log

# Entries hold no secrets by design; this guards the display against a service that slips one in.
_SECRET_NAMES = re.compile(r"secret|password|passphrase|private|pepper|token_hash|key_hash|signing_key", re.I)
_FULL_KEY = re.compile(r"\b(lg[ci]?-[0-9a-f]{8})-[A-Za-z0-9_-]+")
REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class Verified:
    report: VerifyReport
    public_key: str
    anchor: Path | None


class AuditTrail:
    def __init__(self, engine: Engine, audit: AuditLog, authz: Authorizer, anchor: Path | None) -> None:
        self._engine = engine
        self._audit = audit
        self._authz = authz
        self._anchor = anchor

    def recent(self, actor: Actor, limit: int = 50, action: str | None = None) -> list[dict[str, Any]]:
        """The newest entries first, with anything that looks like a secret redacted."""
        self._authz.require(actor, "audit.list")
        query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            {
                "seq": int(row.seq),
                "at": row.at.isoformat(),
                "actor": row.actor,
                "action": row.action,
                "resource": redact(row.resource),
                "before": redact(_parsed(row.before)),
                "after": redact(_parsed(row.after)),
                "outcome": row.outcome,
                "source": row.source,
                "request_id": row.request_id,
                "hash": row.hash,
            }
            for row in rows
        ]

    def verify(self, actor: Actor) -> Verified:
        """The whole chain, its signed head and the anchor file, against the server's own key."""
        self._authz.require(actor, "audit.verify")
        key = self._audit.signer.public_key
        return Verified(verify(self._engine, key, self._anchor), key, self._anchor)


def _parsed(text: str | None) -> Any:
    try:
        return orjson.loads(text) if text is not None else None
    except orjson.JSONDecodeError:
        return text  # a tampered column is still worth seeing as it is


def redact(value: Any) -> Any:
    if isinstance(value, str):
        return _FULL_KEY.sub(rf"\1-{REDACTED}", value)
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_NAMES.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
