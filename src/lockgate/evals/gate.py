"""Promotion gates: per-route settings, the gate input document, and the policy decision.

A route's gate names the datasets a release must be evaluated on, the thresholds, the environments it
guards (stage and prod by default) and the Rego policy that decides (the shipped default, extended or
replaced per route, or an external OPA server). For a candidate release and a target environment the
gate gathers, per dataset (latest version): the candidate's latest complete run, the baseline (the
release the environment serves now) and its run on the same version, and a paired comparison of the
two. Anything missing becomes a reason to deny, so a gate fails closed: no eval, no promotion. A policy
that cannot be evaluated denies too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, select

from lockgate.control.errors import ControlError, Invalid, NotFound
from lockgate.control.releases import ROUTE_NAME, Release
from lockgate.control.tenancy import require_tenant_id
from lockgate.evals.datasets import StoredDataset
from lockgate.evals.policy import Decision, PolicySet, check, evaluate, evaluate_remote
from lockgate.evals.service import EvalService
from lockgate.evals.store import EvalRun
from lockgate.evals.summary import compare
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.rbac import Actor, Role
from lockgate.store.tables import route_gates

Environment = Literal["dev", "stage", "prod"]


def _promoted() -> list[Environment]:
    return ["stage", "prod"]


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_quality_drop: float = Field(default=0.02, ge=0, le=1)
    min_quality: float | None = Field(default=None, ge=0, le=1)
    max_safety_failure_rate: float = Field(default=0.0, ge=0, le=1, description="The route's risk threshold")
    p95_latency_ms: float = Field(default=5000.0, gt=0, description="The latency SLO budget")
    max_cost_increase: float = Field(default=0.20, ge=0, description="Warn above this rise in cost per 1k")


class GateSpec(BaseModel):
    """What a gate file says, once its policy files are read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    route: str = Field(pattern=ROUTE_NAME)
    environments: list[Environment] = Field(default_factory=_promoted)
    datasets: list[str] = Field(min_length=1)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    replace_default_policy: bool = False
    opa_url: str | None = None


@dataclass(frozen=True, slots=True)
class StoredGate:
    spec: GateSpec
    policies: PolicySet
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class GateResult:
    """A decision and everything it was made from (what evidence records)."""

    release: Release
    environment: str
    decision: Decision
    gated: bool
    input: dict[str, Any]
    datasets: list[StoredDataset] = field(default_factory=list)
    runs: list[tuple[str, EvalRun]] = field(default_factory=list)  # (role, run)
    policies: PolicySet | None = None

    @property
    def allowed(self) -> bool:
        return self.decision.allow

    @property
    def reasons(self) -> list[str]:
        return list(self.decision.deny)


def parse_gate(raw: Any, where: str) -> GateSpec:
    if not isinstance(raw, dict):
        raise Invalid(f"{where}: a gate file is a mapping with route and datasets")
    try:
        return GateSpec.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = ".".join(str(p) for p in error["loc"]) or "(root)"
        raise Invalid(f"{where}: {path}: {error['msg']}") from None


class GateService:
    def __init__(self, engine: Engine, audit: AuditLog, evals: EvalService) -> None:
        self._engine = engine
        self._audit = audit
        self._evals = evals

    def set(
        self, actor: Actor, tenant: str, spec: GateSpec, extra_policies: dict[str, str] | None = None
    ) -> StoredGate:
        """Install or replace the gate of ``spec.route`` (deployers only; the change is audited)."""
        event = AuditEvent("gate.set", f"route:{tenant}/{spec.route}")
        self._audit.authorize(self._engine, actor, tenant, Role.DEPLOYER, event)
        if spec.replace_default_policy and not extra_policies:
            raise Invalid("replace_default_policy needs at least one policy file of your own")
        policies = PolicySet.default(extra_policies or {}, replace=spec.replace_default_policy)
        check(policies)
        for name in spec.datasets:
            self._evals.datasets.resolve(tenant, name)  # every dataset the gate needs must exist
        now = datetime.now(UTC)
        values = {
            "spec": spec.model_dump(mode="json"),
            "policy": orjson.dumps(policies.modules, option=orjson.OPT_SORT_KEYS).decode(),
            "policy_sha256": policies.sha256,
            "updated_by": actor.name,
            "updated_at": now,
        }
        with self._engine.begin() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            key = (route_gates.c.tenant_id == tenant_id, route_gates.c.route == spec.route)
            before = connection.execute(select(route_gates.c.policy_sha256).where(*key)).scalar()
            if before is None:
                connection.execute(
                    route_gates.insert().values(tenant_id=tenant_id, route=spec.route, **values)
                )
            else:
                connection.execute(route_gates.update().where(*key).values(**values))
            self._audit.append(
                connection,
                actor,
                AuditEvent(
                    "gate.set",
                    f"route:{tenant}/{spec.route}",
                    before={"policy_sha256": before} if before else None,
                    after={"policy_sha256": policies.sha256, "datasets": spec.datasets},
                ),
            )
        return StoredGate(spec, policies, actor.name, now)

    def get(self, tenant: str, route: str) -> StoredGate | None:
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            row = connection.execute(
                select(route_gates).where(route_gates.c.tenant_id == tenant_id, route_gates.c.route == route)
            ).first()
        if row is None:
            return None
        return StoredGate(
            GateSpec.model_validate(row.spec),
            PolicySet(orjson.loads(row.policy)),
            row.updated_by,
            row.updated_at,
        )

    def evaluate(self, tenant: str, release_id: str, environment: str) -> GateResult:
        release = self._evals.releases.get(tenant, release_id)
        gate = self.get(tenant, release.content.route)
        if gate is None or environment not in gate.spec.environments:
            why = (
                f"route {release.content.route!r} has no gate: set one with `lockgate gates set FILE`"
                if gate is None
                else f"the gate of route {release.content.route!r} does not guard {environment}"
            )
            decision = Decision(allow=True, deny=[], warn=[why], policy_sha256="", engine="none")
            return GateResult(release, environment, decision, False, {})
        document, used, runs = self._input(tenant, release, environment, gate.spec)
        decision = self._decide(gate, document)
        return GateResult(release, environment, decision, True, document, used, runs, gate.policies)

    def missing_runs(self, tenant: str, release_id: str, environment: str) -> list[tuple[str, str]]:
        """(release id, dataset ref) pairs the gate needs a complete run of and does not have."""
        release = self._evals.releases.get(tenant, release_id)
        gate = self.get(tenant, release.content.route)
        if gate is None or environment not in gate.spec.environments:
            return []
        baseline = self._baseline_id(tenant, release, environment)
        wanted: list[tuple[str, str]] = []
        for name in gate.spec.datasets:
            try:
                dataset = self._evals.datasets.resolve(tenant, name)
            except NotFound:
                continue
            for rid in (release.id, baseline):
                if rid is not None and self._evals.store.latest_complete(rid, dataset.id) is None:
                    wanted.append((rid, dataset.ref))
        return wanted

    def _decide(self, gate: StoredGate, document: dict[str, Any]) -> Decision:
        try:
            if gate.spec.opa_url:
                return evaluate_remote(gate.spec.opa_url, document, gate.policies.sha256)
            return evaluate(gate.policies, document)
        except ControlError as exc:
            # Fail closed: a policy that cannot decide does not let a release through.
            return Decision(
                allow=False,
                deny=[f"the gate policy could not be evaluated: {exc.message}"],
                warn=[],
                policy_sha256=gate.policies.sha256,
                engine="opa:" + gate.spec.opa_url if gate.spec.opa_url else "regopy",
            )

    def _baseline_id(self, tenant: str, release: Release, environment: str) -> str | None:
        try:
            pointer = self._evals.environments.pointer(tenant, release.content.route, environment)
        except NotFound:
            return None
        return pointer.release_id if pointer.release_id != release.id else None

    def _input(
        self, tenant: str, release: Release, environment: str, spec: GateSpec
    ) -> tuple[dict[str, Any], list[StoredDataset], list[tuple[str, EvalRun]]]:
        store = self._evals.store
        baseline_id = self._baseline_id(tenant, release, environment)
        missing: list[str] = []
        entries: list[dict[str, Any]] = []
        used: list[StoredDataset] = []
        runs: list[tuple[str, EvalRun]] = []
        for name in spec.datasets:
            try:
                dataset = self._evals.datasets.resolve(tenant, name)
            except NotFound as exc:
                missing.append(exc.message)
                continue
            used.append(dataset)
            candidate = store.latest_complete(release.id, dataset.id)
            base = store.latest_complete(baseline_id, dataset.id) if baseline_id is not None else None
            if candidate is None:
                missing.append(
                    f"release {release.id} has no completed eval run on {dataset.ref}: "
                    f"run `lockgate eval run --release {release.id} --dataset {dataset.ref}`"
                )
            if baseline_id is not None and base is None:
                missing.append(
                    f"baseline release {baseline_id} (serving {environment}) has no completed eval run "
                    f"on {dataset.ref}: run `lockgate eval run --release {baseline_id} "
                    f"--dataset {dataset.ref}`"
                )
            if candidate is None:
                continue
            runs.append(("candidate", candidate))
            entry: dict[str, Any] = {
                "name": dataset.name,
                "version": dataset.version,
                "suite": dataset.spec.suite,
                "candidate": {"run_id": candidate.id, **(candidate.summary or {})},
                "baseline": None,
                "comparison": None,
            }
            if base is not None:
                runs.append(("baseline", base))
                entry["baseline"] = {"run_id": base.id, **(base.summary or {})}
                entry["comparison"] = compare(
                    store.results(candidate.id, dataset), store.results(base.id, dataset)
                ).as_dict()
            entries.append(entry)
        document = {
            "release": {
                "id": release.id,
                "route": release.content.route,
                "git_commit": release.content.git_commit,
            },
            "environment": environment,
            "baseline_release": baseline_id,
            "thresholds": spec.thresholds.model_dump(mode="json"),
            "datasets": entries,
            "missing": missing,
        }
        return document, used, runs
