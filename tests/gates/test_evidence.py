"""Deployment evidence on SQLite and PostgreSQL: recording, database verification, export.

The release comes from the real control plane; datasets, eval runs and reports are rows inserted with
SQL, as the eval pipeline would leave them. Tampering is done with SQL on a connection of its own, as an
attacker with write access to the database would; that attacker does not have the signing key.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from lockgate.control.environments import GateRefused
from lockgate.control.releases import Release, ReleaseRequest
from lockgate.evals.cases import Case
from lockgate.evals.datasets import DatasetSpec
from lockgate.gates.evidence import (
    DatasetRef,
    EvidenceDraft,
    EvidenceService,
    PolicyRef,
    ReportRef,
    StoredEvidence,
)
from lockgate.gates.evidence_format import verify_bundle
from lockgate.gates.gate import GateSpec
from lockgate.instance import Instance
from lockgate.security.audit_verify import verify as verify_audit_log
from lockgate.security.rbac import SYSTEM, Actor
from lockgate.service_errors import Forbidden, NotFound
from lockgate.services import Services, build_services
from lockgate.store.tables import (
    audit_heads,
    audit_log,
    datasets,
    eval_reports,
    eval_runs,
    evidence,
    releases,
)
from tests.control.test_golden_path import ROUTE, card, gates_optional, prompt
from tests.gates.test_evidence_format import ALL_CHECKS, seal
from tests.support.evals import execute_run
from tests.support.processes import StubUpstream

DB_CHECKS = (ALL_CHECKS - {"canonical", "format"}) | {"record", "audit chain", "trusted key"}
MODULES = {"gate.rego": "package lockgate.gate\n\ndefault allow := false\n", "lib.rego": "package lib\n"}
CASES = [
    {"id": "refund", "variables": {"product": "lockgate", "question": "Refunds?"}, "expected": "30 days"},
    {"id": "crème", "variables": {"product": "lockgate", "question": "Ça va ?"}, "facts": ["oui"]},
]
SPEC = {"description": "What customers ask", "scorers": [{"type": "contains"}], "threshold": 0.8}
REPORT_JSON = '{"pass_rate": 0.875, "cases": 2, "quality": {"mean": 0.91}}'
REPORT_MD = "# Eval report\n\n| case | passed |\n|---|---|\n| refund | ✓ |\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canon(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@dataclass
class World:
    instance: Instance
    services: Services
    service: EvidenceService
    admin: Actor
    release: Release
    dataset: DatasetRef
    reports: list[ReportRef]
    run_ids: list[str]

    def draft(self, **changes: Any) -> EvidenceDraft:
        fields: dict[str, Any] = {
            "route": ROUTE,
            "environment": "prod",
            "release_id": self.release.id,
            "git_commit": self.release.content.git_commit,
            "decision": "deny",
            "reasons": ["pass rate 0.875 is below the baseline's 0.9"],
            "warnings": ["judge agreement not measured"],
            "datasets": [self.dataset],
            "reports": self.reports,
            "policy": PolicyRef(sha256=sha(canon(MODULES)), engine="rego", modules=MODULES),
            "approvers": ["april"],
            "requested_by": "dan",
            "requested_at": datetime(2025, 3, 1, 9, 30, tzinfo=UTC),
            "gate_input": {"candidate": {"pass_rate": 0.875}, "baseline": {"pass_rate": 0.9}},
        }
        return EvidenceDraft.model_validate(fields | changes)

    @property
    def public_key(self) -> str:
        return self.instance.signer.public_key

    def sql(self, statement: Any) -> None:
        with self.instance.engine.begin() as connection:
            assert connection.execute(statement).rowcount >= 1


def _tenant_id(instance: Instance) -> str:
    with instance.engine.connect() as connection:
        found = connection.execute(sa.text("SELECT id FROM tenants WHERE name = 'default'")).scalar_one()
    return str(found)


def _insert_dataset(instance: Instance) -> tuple[str, DatasetRef]:
    dataset_id = f"ds_{uuid.uuid4().hex[:24]}"
    digest = sha(canon({"spec": SPEC, "cases": CASES}))
    with instance.engine.begin() as connection:
        connection.execute(
            datasets.insert().values(
                id=dataset_id,
                tenant_id=_tenant_id(instance),
                name="support-golden",
                version=3,
                sha256=digest,
                spec=SPEC,
                cases=CASES,
                created_by="erin",
                created_at=datetime.now(UTC),
            )
        )
    return dataset_id, DatasetRef(name="support-golden", version=3, sha256=digest)


def _insert_run(instance: Instance, release_id: str, dataset_id: str, reports: dict[str, str]) -> str:
    run_id = f"run_{uuid.uuid4().hex[:24]}"
    now = datetime.now(UTC)
    with instance.engine.begin() as connection:
        connection.execute(
            eval_runs.insert().values(
                id=run_id,
                tenant_id=_tenant_id(instance),
                release_id=release_id,
                dataset_id=dataset_id,
                repeats=1,
                status="complete",
                settings={"dataset": "support-golden@3"},
                summary={"pass_rate": 0.875},
                created_by="erin",
                started_at=now,
                finished_at=now,
                origin="server",
            )
        )
        for fmt, content in reports.items():
            connection.execute(
                eval_reports.insert().values(
                    run_id=run_id, format=fmt, sha256=sha(content.encode()), content=content, created_at=now
                )
            )
    return run_id


@pytest.fixture
def world(services: Services, instance: Instance, admin: Actor) -> World:
    return build_world(services, instance, admin)


def build_world(services: Services, instance: Instance, admin: Actor) -> World:
    """A release made through the services, a dataset, and a candidate and a baseline run."""
    services.registry.register(admin, "default", card("support-llm"))
    services.registry.set_alias(admin, "default", "support-llm", "champion", "1")
    services.prompts.push(admin, "default", prompt("1.0.0", "{{ question }}"))
    request = ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0", git_commit="4f2a9c1")
    release = services.releases.create(admin, "default", request)
    dataset_id, dataset = _insert_dataset(instance)
    candidate = _insert_run(instance, release.id, dataset_id, {"json": REPORT_JSON, "md": REPORT_MD})
    baseline = _insert_run(instance, release.id, dataset_id, {"json": '{"pass_rate": 0.9}'})
    reports = [
        ReportRef(
            run_id=candidate,
            dataset="support-golden@3",
            role="candidate",
            format="json",
            sha256=sha(REPORT_JSON.encode()),
        ),
        ReportRef(
            run_id=candidate,
            dataset="support-golden@3",
            role="candidate",
            format="md",
            sha256=sha(REPORT_MD.encode()),
        ),
        ReportRef(
            run_id=baseline,
            dataset="support-golden@3",
            role="baseline",
            format="json",
            sha256=sha(b'{"pass_rate": 0.9}'),
        ),
    ]
    return World(
        instance, services, services.evidence, admin, release, dataset, reports, [candidate, baseline]
    )


def audit_row(world: World, seq: int) -> Any:
    with world.instance.engine.connect() as connection:
        return connection.execute(sa.select(audit_log).where(audit_log.c.seq == seq)).one()


def audit_count(world: World) -> int:
    with world.instance.engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one())


# --- recording -------------------------------------------------------------------------------------


def test_record_signs_the_draft_and_chains_it_into_the_audit_log(world: World) -> None:
    draft = world.draft()
    stored = world.service.record(world.admin, "default", draft)

    assert stored.id.startswith("evd_") and len(stored.id) == 28
    assert (stored.decision, stored.release_id, stored.environment, stored.route) == (
        "deny",
        world.release.id,
        "prod",
        ROUTE,
    )
    assert stored.record == {
        **draft.model_dump(mode="json"),
        "id": stored.id,
        "tenant": "default",
        "decided_at": stored.record["decided_at"],
        "public_key": world.public_key,
    }
    assert datetime.fromisoformat(stored.record["decided_at"]).tzinfo is not None
    # The digest is over the canonical JSON; the signature is Ed25519 over the prefixed digest.
    assert stored.sha256 == sha(canon(stored.record))
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(world.public_key))
    key.verify(base64.b64decode(stored.signature), b"lockgate-evidence:" + stored.sha256.encode())

    entry = audit_row(world, stored.audit_seq)
    assert (entry.action, entry.resource, entry.actor) == (
        "evidence.record",
        f"release:default/{world.release.id}",
        world.admin.name,
    )
    assert orjson.loads(entry.after) == {
        "evidence": stored.id,
        "sha256": stored.sha256,
        "decision": "deny",
        "environment": "prod",
    }
    assert verify_audit_log(world.instance.engine, world.public_key, None).ok


def test_get_and_list(world: World) -> None:
    denied = world.service.record(world.admin, "default", world.draft())
    allowed = world.service.record(world.admin, "default", world.draft(environment="stage", decision="allow"))

    assert world.service.get(world.admin, "default", denied.id) == denied
    assert [e.id for e in world.service.list(world.admin, "default")] == [denied.id, allowed.id]
    assert [e.id for e in world.service.list(world.admin, "default", release_id=world.release.id)] == [
        denied.id,
        allowed.id,
    ]
    assert world.service.list(world.admin, "default", release_id="rel_other") == []
    assert [e.id for e in world.service.list(world.admin, "default", route=ROUTE)] == [denied.id, allowed.id]
    assert world.service.list(world.admin, "default", route="other-route") == []
    assert world.service.get(world.admin, "default", allowed.id).decision == "allow"


def test_evidence_belongs_to_its_tenant(world: World, admin_token: str) -> None:
    stored = world.service.record(world.admin, "default", world.draft())
    world.services.tenants.create(world.admin, "acme")
    admin = world.services.tokens.authenticate(admin_token)  # now also the admin of acme
    with pytest.raises(NotFound, match=stored.id):
        world.service.get(admin, "acme", stored.id)
    assert world.service.list(admin, "acme") == []
    with pytest.raises(NotFound, match="evd_000000000000000000000000"):
        world.service.get(admin, "default", "evd_000000000000000000000000")
    with pytest.raises(NotFound, match="unknown tenant 'nope'"):
        world.service.list(SYSTEM, "nope")


def test_a_refused_attempt_is_recorded_whoever_made_it(world: World) -> None:
    nobody = Actor(name="mallory", roles={}, source="cli")
    with pytest.raises(Forbidden):
        world.services.authz.require(nobody, "routes.promote", "default")
    stored = world.service.record(nobody, "default", world.draft(decision="refused", reasons=["no role"]))
    assert stored.decision == "refused"
    assert audit_row(world, stored.audit_seq).actor == "mallory"
    assert world.service.verify(world.admin, "default", stored.id).ok


def test_evidence_and_its_audit_entry_commit_or_roll_back_together(world: World) -> None:
    before = audit_count(world)
    with (  # noqa: PT012
        pytest.raises(RuntimeError, match="promotion failed"),
        world.instance.engine.begin() as connection,
    ):
        world.service.append(connection, world.admin, "default", world.draft(decision="allow"))
        raise RuntimeError("promotion failed")
    assert world.service.list(world.admin, "default") == []
    assert audit_count(world) == before

    with pytest.raises(NotFound, match="unknown tenant"):
        world.service.record(world.admin, "nope", world.draft())
    assert audit_count(world) == before


def test_a_draft_names_the_field_at_fault(world: World) -> None:
    with pytest.raises(ValidationError, match="environment"):
        world.draft(environment="qa")
    with pytest.raises(ValidationError, match="requested_at"):
        world.draft(requested_at=datetime(2025, 3, 1, 9, 30))
    with pytest.raises(ValidationError, match="decision"):
        world.draft(decision="maybe")
    with pytest.raises(ValidationError, match=r"datasets\.0\.sha256"):
        world.draft(datasets=[{"name": "d", "version": 1, "sha256": "not-a-digest"}])


# --- database verification ------------------------------------------------------------------------


def test_verify_passes_on_untouched_evidence(world: World) -> None:
    stored = world.service.record(world.admin, "default", world.draft())
    result = world.service.verify(world.admin, "default", stored.id)
    assert result.ok, result.checks
    assert {check.name for check in result.checks} == DB_CHECKS
    assert result.fingerprint == sha(base64.b64decode(world.public_key))[:16]


def _set_record(column: str, edit: Callable[[str], str]) -> Callable[[World, StoredEvidence], Any]:
    def change(world: World, stored: StoredEvidence) -> Any:
        with world.instance.engine.connect() as connection:
            text = connection.execute(
                sa.select(evidence.c.record).where(evidence.c.id == stored.id)
            ).scalar_one()
        edited = edit(text)
        values = (
            {"record": edited} if column == "record" else {"record": edited, "sha256": sha(edited.encode())}
        )
        return evidence.update().where(evidence.c.id == stored.id).values(**values)

    return change


TAMPERING: dict[str, tuple[Callable[[World, StoredEvidence], Any], set[str]]] = {
    "record edited": (
        _set_record("record", lambda t: t.replace('"deny"', '"allow"')),
        {"record", "digest", "audit entry"},
    ),
    "record edited, digest recomputed": (
        _set_record("both", lambda t: t.replace("below the baseline", "above the baseline")),
        {"signature", "audit entry"},
    ),
    "signature altered": (
        lambda w, s: (
            evidence.update()
            .where(evidence.c.id == s.id)
            .values(signature=w.instance.signer.sign(b"lockgate-evidence:" + b"0" * 64))
        ),
        {"signature"},
    ),
    "signed by another key": (
        lambda w, s: (
            evidence.update()
            .where(evidence.c.id == s.id)
            .values(signature=base64.b64encode(Ed25519PrivateKey.generate().sign(s.sha256.encode())).decode())
        ),
        {"signature"},
    ),
    "decision column edited": (
        lambda w, s: evidence.update().where(evidence.c.id == s.id).values(decision="allow"),
        {"record"},
    ),
    "audit entry edited": (
        lambda w, s: audit_log.update().where(audit_log.c.seq == s.audit_seq).values(actor="someone"),
        {"audit entry", "audit chain"},
    ),
    "an earlier audit entry edited": (
        lambda w, s: audit_log.update().where(audit_log.c.seq == 1).values(resource="tenant:x"),
        {"audit chain"},
    ),
    "audit head deleted": (
        lambda w, s: audit_heads.delete().where(audit_heads.c.seq == s.audit_seq),
        {"audit head"},
    ),
    "report content changed": (
        lambda w, s: (
            eval_reports.update()
            .where(eval_reports.c.run_id == w.run_ids[0], eval_reports.c.format == "json")
            .values(content='{"pass_rate": 0.99}')
        ),
        {"reports"},
    ),
    "report hash changed": (
        lambda w, s: (
            eval_reports.update().where(eval_reports.c.run_id == w.run_ids[1]).values(sha256=sha(b"other"))
        ),
        {"reports"},
    ),
    "report deleted": (
        lambda w, s: eval_reports.delete().where(
            eval_reports.c.run_id == w.run_ids[0], eval_reports.c.format == "md"
        ),
        {"reports"},
    ),
    "release content changed": (
        lambda w, s: (
            releases.update()
            .where(releases.c.id == w.release.id)
            .values(spec={**w.release.content.model_dump(mode="json"), "tools": ["shell"]})
        ),
        {"release"},
    ),
    "dataset case changed": (
        lambda w, s: (
            datasets.update()
            .where(datasets.c.name == "support-golden")
            .values(cases=[{**CASES[0], "expected": "60 days"}, CASES[1]])
        ),
        {"datasets"},
    ),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_verify_finds_tampering(world: World, case: str) -> None:
    stored = world.service.record(world.admin, "default", world.draft())
    change, expected = TAMPERING[case]
    world.sql(change(world, stored))
    result = world.service.verify(world.admin, "default", stored.id)
    assert not result.ok
    assert set(result.failed) == expected, result.checks


def test_verify_of_an_unreadable_record_reports_it(world: World) -> None:
    stored = world.service.record(world.admin, "default", world.draft())
    world.sql(evidence.update().where(evidence.c.id == stored.id).values(record="{not json"))
    result = world.service.verify(world.admin, "default", stored.id)
    assert set(result.failed) == {"record", "digest"}
    assert "not JSON" in result.checks[0].detail


# --- export ----------------------------------------------------------------------------------------


def test_export_holds_everything_and_verifies_offline(world: World) -> None:
    stored = world.service.record(world.admin, "default", world.draft())
    data = world.service.export(world.admin, "default", stored.id)

    result = verify_bundle(data, world.public_key)
    assert result.ok, result.checks
    assert result.fingerprint == world.service.verify(world.admin, "default", stored.id).fingerprint
    document = orjson.loads(data)
    assert document["format"] == "lockgate-evidence/1"
    assert document["evidence"]["record"] == stored.record
    assert document["release"] == world.release.content.model_dump(mode="json")
    assert {(r["format"], r["content"]) for r in document["reports"]} == {
        ("json", REPORT_JSON),
        ("md", REPORT_MD),
        ("json", '{"pass_rate": 0.9}'),
    }
    assert document["datasets"] == [{"name": "support-golden", "version": 3, "spec": SPEC, "cases": CASES}]
    assert document["evidence"]["record"]["policy"]["modules"] == MODULES
    assert document["audit"]["entry"]["seq"] == document["audit"]["head"]["seq"] == stored.audit_seq
    assert document["audit"]["entry"]["hash"] == audit_row(world, stored.audit_seq).hash


def test_flipping_any_byte_of_an_export_fails(world: World) -> None:
    stored = world.service.record(world.admin, "default", world.draft())
    data = world.service.export(world.admin, "default", stored.id)
    assert len(data) > 4000
    spread = {round(i * (len(data) - 1) / 399) for i in range(400)}
    assert len(spread) == 400
    positions = sorted({*range(50), *spread, *range(len(data) - 50, len(data))})
    unnoticed = []
    for position in positions:
        changed = bytearray(data)
        changed[position] ^= 0x01
        if verify_bundle(bytes(changed)).ok:
            unnoticed.append(position)
    assert unnoticed == []


def test_an_export_of_a_tampered_store_fails_offline(world: World) -> None:
    stored = world.service.record(world.admin, "default", world.draft())
    change, _ = TAMPERING["report content changed"]
    world.sql(change(world, stored))
    result = verify_bundle(world.service.export(world.admin, "default", stored.id), world.public_key)
    assert result.failed == ["reports"]


def test_a_re_signed_export_fails_only_against_the_trusted_key(world: World) -> None:
    stored = world.service.record(world.admin, "default", world.draft())
    document = orjson.loads(world.service.export(world.admin, "default", stored.id))
    document["evidence"]["record"]["decision"] = "allow"
    forged = canon(seal(document, Ed25519PrivateKey.generate()))
    assert verify_bundle(forged).ok
    assert verify_bundle(forged, world.public_key).failed == ["trusted key"]


def test_export_needs_what_the_record_cites(world: World) -> None:
    stored = world.service.record(world.admin, "default", world.draft())
    world.sql(
        eval_reports.delete().where(eval_reports.c.run_id == world.run_ids[0], eval_reports.c.format == "md")
    )
    with pytest.raises(NotFound, match=f"report {world.run_ids[0]}/md no longer exists"):
        world.service.export(world.admin, "default", stored.id)


# --- through the promotion path --------------------------------------------------------------------


def test_promotions_leave_evidence_that_verifies(world: World, instance: Instance) -> None:
    environments = world.services.environments
    environments.point(world.admin, "default", ROUTE, "dev", world.release.id)
    with pytest.raises(GateRefused, match="has no gate"):
        environments.promote(world.admin, "default", ROUTE, "stage")  # gates are required by default

    relaxed = build_services(instance, gates_optional())
    relaxed.environments.promote(world.admin, "default", ROUTE, "stage")
    with pytest.raises(Forbidden):
        relaxed.environments.promote(world.admin, "default", ROUTE, "prod")  # nobody else approved

    records = world.service.list(world.admin, "default", release_id=world.release.id)
    assert [(e.environment, e.decision, e.record["action"]) for e in records] == [
        ("stage", "deny", "promote"),
        ("stage", "allow", "promote"),
        ("prod", "refused", "promote"),
    ]
    assert any("has no gate" in warning for warning in records[1].record["warnings"])
    for record in records:
        assert world.service.verify(world.admin, "default", record.id).ok
        assert verify_bundle(world.service.export(world.admin, "default", record.id), world.public_key).ok


def test_promotion_evidence_names_the_runs_it_read_and_what_answered_them(
    world: World, instance: Instance, stub: StubUpstream
) -> None:
    services, admin, rid = world.services, world.admin, world.release.id
    cases = [Case(id="q", variables={"product": "lockgate", "question": "refunds?"}, facts=["refunds"])]
    services.datasets.push(
        admin, "default", DatasetSpec(name="golden", scorers=[{"type": "contains"}]), cases
    )
    services.gates.set(admin, "default", GateSpec(route=ROUTE, datasets=["golden"]))
    run = execute_run(services, instance, admin, rid, "golden", stub)
    assert run.status == "complete" and run.fingerprint is not None
    services.environments.point(admin, "default", ROUTE, "dev", rid)
    services.environments.promote(admin, "default", ROUTE, "stage")

    [record] = [r for r in world.service.list(admin, "default", release_id=rid) if r.environment == "stage"]
    assert record.record["runs"] == [
        {
            "run_id": run.id,
            "dataset": "golden@1",
            "role": "candidate",
            "origin": "server",
            "fingerprint": run.fingerprint,
            "deployments": run.deployments,
        }
    ]
    [deployment] = record.record["runs"][0]["deployments"]
    assert (deployment["model"], deployment["upstream_model"]) == ("m", "upstream-m")
    assert world.service.verify(admin, "default", record.id).ok
