"""The tamper-evident audit log: append-only, hash-chained, with a signed head.

Each entry carries the hash of the previous one, so editing, deleting, inserting or reordering entries
breaks the chain. After every append the new head (sequence number and hash) is signed with the
instance's Ed25519 key, so cutting entries off the end is detected too. Entries are appended in the
same transaction as the change they describe: no change without its entry, no entry without its change.
Refused attempts are recorded in a transaction of their own, since the change itself rolls back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, false, func, select

from lockgate.security.rbac import Actor
from lockgate.security.signing import Signer
from lockgate.store.tables import audit_heads, audit_log

GENESIS = "0" * 64
_PG_LOCK = 7431002


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: str
    resource: str
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    outcome: str = "success"


def canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def entry_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical(fields)).encode()).hexdigest()


def head_message(seq: int, hash_: str) -> bytes:
    return f"lockgate-audit-head:{seq}:{hash_}".encode()


class AuditLog:
    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    def append(self, connection: Connection, actor: Actor, event: AuditEvent) -> int:
        """Append ``event`` inside the caller's transaction and sign the new head; returns its seq."""
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
        elif connection.dialect.name == "sqlite":
            # SQLite takes its write lock at the first write: take it now, before reading the tail,
            # so two writers cannot both append after the same entry.
            connection.execute(audit_heads.delete().where(false()))
        last = connection.execute(
            select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
        ).first()
        seq, prev = (int(last.seq) + 1, str(last.hash)) if last is not None else (1, GENESIS)
        at = datetime.now(UTC)
        fields = {
            "seq": seq,
            "at": at.isoformat(),
            "actor": actor.name,
            "action": event.action,
            "resource": event.resource,
            "before": canonical(event.before) if event.before is not None else None,
            "after": canonical(event.after) if event.after is not None else None,
            "outcome": event.outcome,
            "source": actor.source,
            "request_id": actor.request_id,
        }
        digest = entry_hash(prev, fields)
        connection.execute(audit_log.insert().values(**{**fields, "at": at}, prev_hash=prev, hash=digest))
        connection.execute(
            audit_heads.insert().values(
                seq=seq,
                hash=digest,
                signature=self.signer.sign(head_message(seq, digest)),
                public_key=self.signer.public_key,
                signed_at=at,
            )
        )
        return seq

    def record(self, engine: Engine, actor: Actor, event: AuditEvent) -> int:
        """Append in a transaction of its own (refused or failed attempts)."""
        with engine.begin() as connection:
            return self.append(connection, actor, event)

    @staticmethod
    def count(connection: Connection) -> int:
        return int(connection.execute(select(func.count()).select_from(audit_log)).scalar() or 0)
