"""The deployment evidence format: the signed record, the export bundle and its offline verification.

An evidence record says who asked to move which release where, what the gate decided and on what
grounds (dataset versions, eval reports, the policy). Its digest is the SHA-256 of its canonical JSON
(sorted keys, no whitespace) and the instance's Ed25519 key signs ``lockgate-evidence:<digest>``.

The export bundle is one canonical JSON document holding the record and everything it refers to: the
audit entry that chained it into the log with the head signed for that entry, the release content,
the report contents and the datasets. ``verify_bundle`` re-derives every hash and checks both
signatures with nothing but this module, so an auditor needs neither the database nor the instance.
The bytes must be exactly the canonical serialisation of the document, and base64 values must be in
canonical form, so that no byte of a bundle can change without verification failing. A bundle signed
by another key is internally consistent; only comparing the key with a trusted one (argument or the
printed fingerprint) shows that it is not this instance's evidence.

The record's shape (``EvidenceDraft`` and the references it holds) lives here with the format, so this
module needs no database and nothing beyond it; the evidence service builds on it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from lockgate.control.release_content import ReleaseContent
from lockgate.control.releases import ROUTE_NAME
from lockgate.security.audit import entry_hash, head_message
from lockgate.security.signing import verify_signature

FORMAT: Final = "lockgate-evidence/1"
EVIDENCE_ACTION = "evidence.record"
SHA256 = r"^[0-9a-f]{64}$"
EVIDENCE_ID = r"^evd_[0-9a-f]{24}$"


class _Ref(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetRef(_Ref):
    name: str = Field(min_length=1, max_length=200)
    version: int = Field(ge=1)
    sha256: str = Field(pattern=SHA256)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


class ReportRef(_Ref):
    run_id: str = Field(min_length=1, max_length=40)
    dataset: str = Field(min_length=1, max_length=250, description="name@version of the dataset run")
    role: Literal["candidate", "baseline"]
    format: str = Field(min_length=1, max_length=10)
    sha256: str = Field(pattern=SHA256)


class RunRef(_Ref):
    """An eval run the decision read, and what answered it: the deployments' fingerprint."""

    run_id: str = Field(min_length=1, max_length=40)
    dataset: str = Field(min_length=1, max_length=250)
    role: Literal["candidate", "baseline"]
    origin: Literal["server", "client"]
    fingerprint: str | None = Field(default=None, pattern=SHA256)
    deployments: list[dict[str, Any]] = Field(default_factory=list)


class PolicyRef(_Ref):
    sha256: str = Field(pattern=SHA256, description="policy_sha256(modules)")
    engine: str = Field(min_length=1, description="e.g. rego")
    modules: dict[str, str] = Field(description="module name -> policy source")


class EvidenceDraft(_Ref):
    """What the promotion path knows about one attempt; the service adds id, tenant, time and key."""

    route: str = Field(pattern=ROUTE_NAME, max_length=200)
    environment: Literal["dev", "stage", "prod"]
    release_id: str = Field(min_length=1, max_length=80)
    git_commit: str | None = None
    decision: Literal["allow", "deny", "refused"] = Field(
        description="refused: stopped before the gate ran (RBAC, four eyes)"
    )
    action: Literal["promote", "rollback", "rollout"] = "promote"
    reasons: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    datasets: list[DatasetRef] = Field(default_factory=list)
    reports: list[ReportRef] = Field(default_factory=list)
    runs: list[RunRef] = Field(default_factory=list)
    rollout: dict[str, Any] | None = Field(
        default=None, description="For action rollout: the rollout, the event, its metrics and verdict"
    )
    policy: PolicyRef | None = None
    approvers: list[str] = Field(default_factory=list)
    requested_by: str = Field(min_length=1, max_length=100)
    requested_at: AwareDatetime
    gate_input: dict[str, Any] | None = None


class EvidenceRecord(EvidenceDraft):
    """The signed record: the draft plus what the service adds."""

    id: str = Field(pattern=EVIDENCE_ID)
    tenant: str = Field(min_length=1)
    decided_at: AwareDatetime
    public_key: str = Field(min_length=1)


# --- hashes and signatures ------------------------------------------------------------------------


def canonical_bytes(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def record_digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def evidence_message(digest: str) -> bytes:
    return b"lockgate-evidence:" + digest.encode()


def policy_sha256(modules: Mapping[str, str]) -> str:
    return hashlib.sha256(canonical_bytes(modules)).hexdigest()


def dataset_sha256(spec: Any, cases: Any) -> str:
    return hashlib.sha256(canonical_bytes({"spec": spec, "cases": cases})).hexdigest()


def report_sha256(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def fingerprint(public_key: str) -> str | None:
    """First 16 hex digits of the SHA-256 of the raw key; None when it is not canonical base64."""
    raw = _b64(public_key)
    return hashlib.sha256(raw).hexdigest()[:16] if raw is not None else None


def _b64(text: str) -> bytes | None:
    """Decoded bytes of canonical base64 only: no stray characters and zero padding bits."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


# --- verification results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Verification:
    """Named checks and the fingerprint of the key that signed the evidence (to compare with the
    instance's published key)."""

    checks: tuple[Check, ...]
    fingerprint: str | None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[str]:
        return [check.name for check in self.checks if not check.ok]


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def failed(name: str, detail: str) -> Check:
    return Check(name, False, detail)


# --- the bundle document --------------------------------------------------------------------------


class _Strict(BaseModel):
    # strict: a value of another JSON type is an error, never silently converted
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SignedEvidence(_Strict):
    record: dict[str, Any]
    sha256: str
    signature: str
    public_key: str


class AuditEntry(_Strict):
    """An audit log entry as it was hashed (``at`` in ISO form), with its chain hashes."""

    seq: int
    at: str
    actor: str
    action: str
    resource: str
    before: str | None
    after: str | None
    outcome: str
    source: str | None
    request_id: str | None
    prev_hash: str
    hash: str

    def fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"prev_hash", "hash"})


class AuditHead(_Strict):
    seq: int
    hash: str
    signature: str
    public_key: str


class AuditProof(_Strict):
    entry: AuditEntry
    head: AuditHead


class BundledReport(_Strict):
    run_id: str
    format: str
    content: str


class BundledDataset(_Strict):
    name: str
    version: int
    spec: dict[str, Any]
    cases: list[Any]


class Bundle(_Strict):
    format: Literal["lockgate-evidence/1"]
    evidence: SignedEvidence
    audit: AuditProof
    release: dict[str, Any] = Field(description="The release content (releases.spec)")
    reports: list[BundledReport]
    datasets: list[BundledDataset]

    def to_bytes(self) -> bytes:
        return canonical_bytes(self.model_dump(mode="json"))


# --- checks shared with the database verification -------------------------------------------------


def check_signature(record: EvidenceRecord, digest: str, signature: str, public_key: str) -> Check:
    if record.public_key != public_key:
        return failed("signature", "the record names another public key than the one given with it")
    if _b64(signature) is None:
        return failed("signature", "the signature is not canonical base64")
    if not verify_signature(public_key, evidence_message(digest), signature):
        return failed("signature", "the Ed25519 signature does not match the digest")
    return passed("signature", f"Ed25519 signature by key {fingerprint(public_key)}")


def check_audit_entry(entry: AuditEntry, record: EvidenceRecord, digest: str) -> Check:
    name = "audit entry"
    if entry_hash(entry.prev_hash, entry.fields()) != entry.hash:
        return failed(name, f"entry {entry.seq} was edited: its hash does not match its contents")
    resource = f"release:{record.tenant}/{record.release_id}"
    if entry.action != EVIDENCE_ACTION or entry.resource != resource:
        return failed(name, f"entry {entry.seq} is {entry.action} on {entry.resource}, not this evidence")
    try:
        after = orjson.loads(entry.after) if entry.after is not None else None
    except orjson.JSONDecodeError:
        after = None
    expected = {
        "evidence": record.id,
        "sha256": digest,
        "decision": record.decision,
        "environment": record.environment,
    }
    if after != expected:
        return failed(name, f"entry {entry.seq} does not name this evidence and digest")
    return passed(name, f"entry {entry.seq} records this evidence and digest")


def check_audit_head(head: AuditHead, entry: AuditEntry, public_key: str) -> Check:
    name = "audit head"
    if head.seq != entry.seq or head.hash != entry.hash:
        return failed(name, f"the signed head (seq {head.seq}) is not the one of entry {entry.seq}")
    if head.public_key != public_key:
        return failed(name, "the head is signed by another key than the evidence")
    if _b64(head.signature) is None:
        return failed(name, "the head signature is not canonical base64")
    if not verify_signature(public_key, head_message(head.seq, head.hash), head.signature):
        return failed(name, f"the signature of the head at seq {head.seq} is invalid")
    return passed(name, f"the head at seq {head.seq} is signed by the same key")


def check_release(spec: Mapping[str, Any] | None, record: EvidenceRecord) -> Check:
    name = "release"
    if spec is None:
        return failed(name, f"release {record.release_id} does not exist")
    try:
        content = ReleaseContent.model_validate(spec)
    except ValidationError as exc:
        return failed(name, f"the release content is invalid: {first_error(exc)}")
    if content.model_dump(mode="json") != dict(spec):
        return failed(name, "the release content is not in its canonical form")
    computed = content.release_id(record.tenant)
    if record.release_id not in (computed, content.legacy_release_id):
        return failed(name, f"the release content hashes to {computed}, not {record.release_id}")
    return passed(name, f"the content hashes to {record.release_id}")


def check_policy(record: EvidenceRecord) -> Check:
    if record.policy is None:
        return passed("policy", "no policy was evaluated")
    computed = policy_sha256(record.policy.modules)
    if computed != record.policy.sha256:
        return failed("policy", f"the policy modules hash to {computed}, not {record.policy.sha256}")
    return passed("policy", f"{len(record.policy.modules)} {record.policy.engine} module(s) match")


def check_trusted_key(public_key: str, trusted: str) -> Check:
    if public_key != trusted:
        return failed(
            "trusted key", f"signed by key {fingerprint(public_key)}, not the trusted {fingerprint(trusted)}"
        )
    return passed("trusted key", f"signed by the trusted key {fingerprint(trusted)}")


def matched(name: str, problems: Sequence[str], count: int, noun: str) -> Check:
    if problems:
        return failed(name, "; ".join(problems))
    return passed(name, f"{count} {noun}(s) match their recorded sha256")


def first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "document"
    return f"{where}: {error['msg']}"


# --- offline verification -------------------------------------------------------------------------


def verify_bundle(data: bytes, trusted_public_key: str | None = None) -> Verification:
    """Check an exported bundle without a database; ``trusted_public_key`` pins the signing key."""
    try:
        document = orjson.loads(data)
        canonical = canonical_bytes(document) == data
    except (orjson.JSONDecodeError, orjson.JSONEncodeError) as exc:
        return Verification((failed("canonical", f"not a JSON document: {exc}"),), None)
    checks = [
        passed("canonical", "the bytes are the canonical serialisation")
        if canonical
        else failed("canonical", "the bytes are not the canonical serialisation (edited or re-formatted)")
    ]
    try:
        bundle = Bundle.model_validate(document)
    except ValidationError as exc:
        return Verification((*checks, failed("format", first_error(exc))), None)
    try:
        record = EvidenceRecord.model_validate(bundle.evidence.record)
    except ValidationError as exc:
        return Verification((*checks, failed("format", f"evidence.record.{first_error(exc)}")), None)
    checks.append(passed("format", FORMAT))
    checks.extend(check(bundle, record) for check in _BUNDLE_CHECKS)
    if trusted_public_key is not None:
        checks.append(check_trusted_key(bundle.evidence.public_key, trusted_public_key))
    return Verification(tuple(checks), fingerprint(bundle.evidence.public_key))


def _digest(bundle: Bundle, record: EvidenceRecord) -> Check:
    computed = record_digest(bundle.evidence.record)
    if computed != bundle.evidence.sha256:
        return failed("digest", f"the record hashes to {computed}, not {bundle.evidence.sha256}")
    return passed("digest", f"sha256 {computed}")


def _signature(bundle: Bundle, record: EvidenceRecord) -> Check:
    evidence = bundle.evidence
    return check_signature(record, evidence.sha256, evidence.signature, evidence.public_key)


def _entry(bundle: Bundle, record: EvidenceRecord) -> Check:
    return check_audit_entry(bundle.audit.entry, record, bundle.evidence.sha256)


def _head(bundle: Bundle, record: EvidenceRecord) -> Check:
    return check_audit_head(bundle.audit.head, bundle.audit.entry, bundle.evidence.public_key)


def _release(bundle: Bundle, record: EvidenceRecord) -> Check:
    return check_release(bundle.release, record)


def _policy(bundle: Bundle, record: EvidenceRecord) -> Check:
    return check_policy(record)


def _reports(bundle: Bundle, record: EvidenceRecord) -> Check:
    bundled = {(r.run_id, r.format): r.content for r in bundle.reports}
    wanted = {(r.run_id, r.format): r.sha256 for r in record.reports}
    problems = [f"report {run}/{fmt} is not referenced by the record" for run, fmt in bundled.keys() - wanted]
    if len(bundled) != len(bundle.reports):
        problems.append("a report is included twice")
    for (run, fmt), sha in wanted.items():
        content = bundled.get((run, fmt))
        if content is None:
            problems.append(f"report {run}/{fmt} is missing")
        elif report_sha256(content) != sha:
            problems.append(f"report {run}/{fmt} does not hash to {sha}")
    return matched("reports", problems, len(wanted), "report")


def _datasets(bundle: Bundle, record: EvidenceRecord) -> Check:
    bundled = {(d.name, d.version): d for d in bundle.datasets}
    wanted = {(d.name, d.version): d.sha256 for d in record.datasets}
    problems = [f"dataset {n}@{v} is not referenced by the record" for n, v in bundled.keys() - wanted]
    if len(bundled) != len(bundle.datasets):
        problems.append("a dataset is included twice")
    for (name, version), sha in wanted.items():
        dataset = bundled.get((name, version))
        if dataset is None:
            problems.append(f"dataset {name}@{version} is missing")
        elif dataset_sha256(dataset.spec, dataset.cases) != sha:
            problems.append(f"dataset {name}@{version} does not hash to {sha}")
    return matched("datasets", problems, len(wanted), "dataset")


_BUNDLE_CHECKS: tuple[Callable[[Bundle, EvidenceRecord], Check], ...] = (
    _digest,
    _signature,
    _entry,
    _head,
    _release,
    _reports,
    _policy,
    _datasets,
)
