"""Signed deployment evidence: a record of every promotion attempt, allowed or refused.

``record`` (own transaction) and ``append`` (the caller's) sign the draft, plus id, tenant, decision time
and public key, with the instance's Ed25519 key and write the evidence row and its ``evidence.record``
audit entry in one transaction, so a record exists exactly when the audit chain says so. ``verify``
re-checks a record against the database: its digest and signature, the audit entry naming it, the
chain from genesis up to that entry and the head signed for it, and that every release, report and
dataset it cites still has the content it was decided on. ``export`` writes the self-contained
bundle of ``lockgate.gates.evidence_format``, which an auditor verifies without the database.

Recording needs no role: refused attempts must leave evidence too; it is done by the promotion path
only, never by a client. Reading needs the viewer role in the tenant.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import Connection, Engine, Row, select

from lockgate.gates.evidence_format import (
    EVIDENCE_ACTION,
    FORMAT,
    AuditEntry,
    AuditHead,
    AuditProof,
    Bundle,
    BundledDataset,
    BundledReport,
    Check,
    DatasetRef,
    EvidenceDraft,
    EvidenceRecord,
    PolicyRef,
    ReportRef,
    SignedEvidence,
    Verification,
    check_audit_entry,
    check_audit_head,
    check_policy,
    check_release,
    check_signature,
    check_trusted_key,
    dataset_sha256,
    evidence_message,
    failed,
    fingerprint,
    first_error,
    matched,
    passed,
    report_sha256,
)
from lockgate.security.audit import GENESIS, AuditEvent, AuditLog, canonical, entry_hash
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import Actor
from lockgate.service_errors import Invalid, NotFound
from lockgate.store.tables import (
    audit_heads,
    audit_log,
    datasets,
    eval_reports,
    eval_runs,
    evidence,
    releases,
)
from lockgate.store.tenancy import require_tenant_id

__all__ = [
    "DatasetRef",
    "EvidenceDraft",
    "EvidenceService",
    "PolicyRef",
    "ReportRef",
    "StoredEvidence",
    "Verification",
]

_BATCH = 1000


@dataclass(frozen=True, slots=True)
class StoredEvidence:
    id: str
    tenant: str
    record: dict[str, Any]
    sha256: str
    signature: str
    public_key: str
    audit_seq: int
    created_at: datetime

    @property
    def decision(self) -> str:
        return str(self.record["decision"])

    @property
    def release_id(self) -> str:
        return str(self.record["release_id"])

    @property
    def environment(self) -> str:
        return str(self.record["environment"])

    @property
    def route(self) -> str:
        return str(self.record["route"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "record": self.record,
            "sha256": self.sha256,
            "signature": self.signature,
            "public_key": self.public_key,
            "fingerprint": fingerprint(self.public_key),
            "audit_seq": self.audit_seq,
            "created_at": self.created_at.isoformat(),
        }


class EvidenceService:
    def __init__(self, engine: Engine, audit: AuditLog, authz: Authorizer) -> None:
        self._engine = engine
        self._audit = audit
        self._authz = authz

    def record(self, actor: Actor, tenant: str, draft: EvidenceDraft) -> StoredEvidence:
        """Sign ``draft`` and store it with its audit entry, in a transaction of its own."""
        with self._engine.begin() as connection:
            return self.append(connection, actor, tenant, draft)

    def append(
        self, connection: Connection, actor: Actor, tenant: str, draft: EvidenceDraft
    ) -> StoredEvidence:
        """Sign ``draft`` and store it with its audit entry inside the caller's transaction (an allowed
        promotion: the pointer moves and its evidence commit together)."""
        tenant_id = require_tenant_id(connection, tenant)
        signer = self._audit.signer
        now = datetime.now(UTC)
        signed = EvidenceRecord.model_validate(
            {
                **draft.model_dump(),
                "id": f"evd_{secrets.token_hex(12)}",
                "tenant": tenant,
                "decided_at": now,
                "public_key": signer.public_key,
            }
        )
        record = signed.model_dump(mode="json")
        text = canonical(record)
        digest = hashlib.sha256(text.encode()).hexdigest()
        signature = signer.sign(evidence_message(digest))
        after = {"evidence": signed.id, "sha256": digest, "decision": draft.decision}
        event = AuditEvent(
            EVIDENCE_ACTION,
            f"release:{tenant}/{draft.release_id}",
            after={**after, "environment": draft.environment},
        )
        seq = self._audit.append(connection, actor, event)
        connection.execute(
            evidence.insert().values(
                id=signed.id,
                tenant_id=tenant_id,
                route=draft.route,
                environment=draft.environment,
                release_id=draft.release_id,
                decision=draft.decision,
                record=text,
                sha256=digest,
                signature=signature,
                public_key=signer.public_key,
                audit_seq=seq,
                created_at=now,
            )
        )
        return StoredEvidence(signed.id, tenant, record, digest, signature, signer.public_key, seq, now)

    def get(self, actor: Actor, tenant: str, evidence_id: str) -> StoredEvidence:
        self._authz.require(actor, "evidence.get", tenant)
        with self._engine.connect() as connection:
            return _stored(_row(connection, require_tenant_id(connection, tenant), evidence_id), tenant)

    def verify(self, actor: Actor, tenant: str, evidence_id: str) -> Verification:
        """Check the record against the database and the instance's signing key."""
        self._authz.require(actor, "evidence.verify", tenant)
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            row = _row(connection, tenant_id, evidence_id)
            return _Verifier(connection, tenant_id, tenant, self._audit.signer.public_key).run(row)

    def export(self, actor: Actor, tenant: str, evidence_id: str) -> bytes:
        """The self-contained bundle; fails when something the record cites is no longer stored."""
        self._authz.require(actor, "evidence.export", tenant)
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            row = _row(connection, tenant_id, evidence_id)
            document, record = _load(row)
            entry = _audit_entry(connection, int(row.audit_seq))
            if entry is None:
                raise NotFound(f"evidence {evidence_id}: audit entry {row.audit_seq} no longer exists")
            head = _audit_head(connection, entry)
            if head is None:
                raise NotFound(f"evidence {evidence_id}: no signed audit head for entry {entry.seq}")
            spec = _release_spec(connection, tenant_id, record.release_id)
            if spec is None:
                raise NotFound(f"evidence {evidence_id}: release {record.release_id} no longer exists")
            bundle = Bundle(
                format=FORMAT,
                evidence=SignedEvidence(
                    record=document,
                    sha256=row.sha256,
                    signature=row.signature,
                    public_key=row.public_key,
                ),
                audit=AuditProof(entry=entry, head=head),
                release=spec,
                reports=[_bundled_report(connection, tenant_id, ref, evidence_id) for ref in record.reports],
                datasets=[
                    _bundled_dataset(connection, tenant_id, ref, evidence_id) for ref in record.datasets
                ],
            )
        return bundle.to_bytes()

    def list(
        self, actor: Actor, tenant: str, *, release_id: str | None = None, route: str | None = None
    ) -> list[StoredEvidence]:
        """Oldest first, optionally only one release's or one route's."""
        self._authz.require(actor, "evidence.list", tenant)
        with self._engine.connect() as connection:
            query = (
                select(evidence)
                .where(evidence.c.tenant_id == require_tenant_id(connection, tenant))
                .order_by(evidence.c.created_at, evidence.c.id)
            )
            if release_id is not None:
                query = query.where(evidence.c.release_id == release_id)
            if route is not None:
                query = query.where(evidence.c.route == route)
            return [_stored(row, tenant) for row in connection.execute(query)]


class _Verifier:
    """The database checks of one evidence row."""

    def __init__(self, connection: Connection, tenant_id: str, tenant: str, trusted_key: str) -> None:
        self.connection = connection
        self.tenant_id = tenant_id
        self.tenant = tenant
        self.trusted_key = trusted_key

    def run(self, row: Row[Any]) -> Verification:
        record, record_check = self.record(row)
        checks = [record_check, _digest(row)]
        if record is not None:
            checks.append(check_signature(record, row.sha256, row.signature, row.public_key))
            checks.extend(self.audit_trail(row, record))
            checks.extend(self.cited(record))
        checks.append(check_trusted_key(row.public_key, self.trusted_key))
        return Verification(tuple(checks), fingerprint(row.public_key))

    def record(self, row: Row[Any]) -> tuple[EvidenceRecord | None, Check]:
        try:
            document = orjson.loads(row.record)
            record = EvidenceRecord.model_validate(document)
        except orjson.JSONDecodeError as exc:
            return None, failed("record", f"the stored record is not JSON: {exc}")
        except ValidationError as exc:
            return None, failed("record", f"the stored record is invalid: {first_error(exc)}")
        columns = {
            "id": row.id,
            "tenant": self.tenant,
            "route": row.route,
            "environment": row.environment,
            "release_id": row.release_id,
            "decision": row.decision,
            "public_key": row.public_key,
        }
        differs = sorted(name for name, value in columns.items() if getattr(record, name) != value)
        if differs:
            return record, failed("record", f"the row's {', '.join(differs)} differ from the signed record")
        if canonical(document) != row.record:
            return record, failed("record", "the stored record is not in canonical form")
        return record, passed("record", "the row agrees with the signed record")

    def audit_trail(self, row: Row[Any], record: EvidenceRecord) -> list[Check]:
        """The entry that chained the evidence in, the chain up to it, and the head signed for it."""
        seq = int(row.audit_seq)
        chain = _chain(self.connection, seq)
        entry = _audit_entry(self.connection, seq)
        if entry is None:
            missing = f"there is no audit entry {seq}"
            return [failed("audit entry", missing), chain, failed("audit head", missing)]
        head = _audit_head(self.connection, entry)
        return [
            check_audit_entry(entry, record, row.sha256),
            chain,
            check_audit_head(head, entry, row.public_key)
            if head is not None
            else failed("audit head", f"no head was signed for entry {seq}"),
        ]

    def cited(self, record: EvidenceRecord) -> list[Check]:
        """What the decision was based on, as stored now."""
        spec = _release_spec(self.connection, self.tenant_id, record.release_id)
        return [
            check_release(spec, record),
            self.reports(record),
            check_policy(record),
            self.datasets(record),
        ]

    def reports(self, record: EvidenceRecord) -> Check:
        problems = []
        for ref in record.reports:
            found = _report_row(self.connection, self.tenant_id, ref)
            if found is None:
                problems.append(f"report {ref.run_id}/{ref.format} no longer exists")
            elif found.sha256 != ref.sha256:
                problems.append(f"report {ref.run_id}/{ref.format} is stored with sha256 {found.sha256}")
            elif report_sha256(found.content) != ref.sha256:
                problems.append(f"report {ref.run_id}/{ref.format} content no longer hashes to {ref.sha256}")
        return matched("reports", problems, len(record.reports), "report")

    def datasets(self, record: EvidenceRecord) -> Check:
        problems = []
        for ref in record.datasets:
            found = _dataset_row(self.connection, self.tenant_id, ref)
            if found is None:
                problems.append(f"dataset {ref.label} no longer exists")
            elif found.sha256 != ref.sha256:
                problems.append(f"dataset {ref.label} is stored with sha256 {found.sha256}")
            elif dataset_sha256(found.spec, found.cases) != ref.sha256:
                problems.append(f"dataset {ref.label} content no longer hashes to {ref.sha256}")
        return matched("datasets", problems, len(record.datasets), "dataset")


def _digest(row: Row[Any]) -> Check:
    computed = hashlib.sha256(str(row.record).encode()).hexdigest()
    if computed != row.sha256:
        return failed("digest", f"the stored record hashes to {computed}, not {row.sha256}")
    return passed("digest", f"sha256 {computed}")


def _chain(connection: Connection, seq: int) -> Check:
    """The audit entries from genesis to ``seq``: consecutive, each linked to and hashed over the last."""
    expected, prev = 1, GENESIS
    for entry in _entries_to(connection, seq):
        if entry.seq != expected:
            return failed("audit chain", f"entry {expected} is missing or out of order")
        if entry.prev_hash != prev:
            return failed("audit chain", f"entry {entry.seq} does not link to entry {entry.seq - 1}")
        if entry_hash(prev, entry.fields()) != entry.hash:
            return failed("audit chain", f"entry {entry.seq} was edited: its hash does not match")
        expected, prev = expected + 1, entry.hash
    if expected <= seq:
        return failed("audit chain", f"the chain ends at entry {expected - 1}, before entry {seq}")
    return passed("audit chain", f"entries 1 to {seq} link up from genesis")


def _entries_to(connection: Connection, seq: int) -> Iterator[AuditEntry]:
    query = select(audit_log).where(audit_log.c.seq <= seq).order_by(audit_log.c.seq)
    for row in connection.execute(query.execution_options(yield_per=_BATCH)):
        yield _entry(row)


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        seq=int(row.seq),
        at=row.at.isoformat(),
        actor=row.actor,
        action=row.action,
        resource=row.resource,
        before=row.before,
        after=row.after,
        outcome=row.outcome,
        source=row.source,
        request_id=row.request_id,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _audit_entry(connection: Connection, seq: int) -> AuditEntry | None:
    row = connection.execute(select(audit_log).where(audit_log.c.seq == seq)).first()
    return _entry(row) if row is not None else None


def _audit_head(connection: Connection, entry: AuditEntry) -> AuditHead | None:
    """The head signed for ``entry``: the one with its hash, else the newest at its seq."""
    rows = connection.execute(
        select(audit_heads).where(audit_heads.c.seq == entry.seq).order_by(audit_heads.c.id.desc())
    ).all()
    row = next((r for r in rows if r.hash == entry.hash), rows[0] if rows else None)
    if row is None:
        return None
    return AuditHead(seq=int(row.seq), hash=row.hash, signature=row.signature, public_key=row.public_key)


def _release_spec(connection: Connection, tenant_id: str, release_id: str) -> dict[str, Any] | None:
    query = select(releases.c.spec).where(releases.c.id == release_id, releases.c.tenant_id == tenant_id)
    spec = connection.execute(query).scalar()
    return dict(spec) if isinstance(spec, dict) else None


def _report_row(connection: Connection, tenant_id: str, ref: ReportRef) -> Row[Any] | None:
    query = (
        select(eval_reports)
        .join(eval_runs, eval_runs.c.id == eval_reports.c.run_id)
        .where(
            eval_runs.c.tenant_id == tenant_id,
            eval_reports.c.run_id == ref.run_id,
            eval_reports.c.format == ref.format,
        )
    )
    return connection.execute(query).first()


def _dataset_row(connection: Connection, tenant_id: str, ref: DatasetRef) -> Row[Any] | None:
    query = select(datasets).where(
        datasets.c.tenant_id == tenant_id, datasets.c.name == ref.name, datasets.c.version == ref.version
    )
    return connection.execute(query).first()


def _bundled_report(
    connection: Connection, tenant_id: str, ref: ReportRef, evidence_id: str
) -> BundledReport:
    found = _report_row(connection, tenant_id, ref)
    if found is None:
        raise NotFound(f"evidence {evidence_id}: report {ref.run_id}/{ref.format} no longer exists")
    return BundledReport(run_id=ref.run_id, format=ref.format, content=found.content)


def _bundled_dataset(
    connection: Connection, tenant_id: str, ref: DatasetRef, evidence_id: str
) -> BundledDataset:
    found = _dataset_row(connection, tenant_id, ref)
    if found is None:
        raise NotFound(f"evidence {evidence_id}: dataset {ref.label} no longer exists")
    return BundledDataset(name=ref.name, version=ref.version, spec=found.spec, cases=found.cases)


def _row(connection: Connection, tenant_id: str, evidence_id: str) -> Row[Any]:
    query = select(evidence).where(evidence.c.id == evidence_id, evidence.c.tenant_id == tenant_id)
    row = connection.execute(query).first()
    if row is None:
        raise NotFound(f"unknown evidence {evidence_id!r}")
    return row


def _load(row: Row[Any]) -> tuple[dict[str, Any], EvidenceRecord]:
    """The stored record as signed (a dict) and parsed."""
    try:
        document = orjson.loads(row.record)
        return document, EvidenceRecord.model_validate(document)
    except (orjson.JSONDecodeError, ValidationError):
        raise Invalid(
            f"evidence {row.id}: the stored record is damaged; run `lockgate evidence verify`"
        ) from None


def _stored(row: Row[Any], tenant: str) -> StoredEvidence:
    return StoredEvidence(
        id=row.id,
        tenant=tenant,
        record=_load(row)[0],
        sha256=row.sha256,
        signature=row.signature,
        public_key=row.public_key,
        audit_seq=int(row.audit_seq),
        created_at=row.created_at,
    )
