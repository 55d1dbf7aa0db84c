"""Promotion gates: per-route settings, the gate input document, and the policy decision.

A route's gate names the datasets a release must be evaluated on, the thresholds, the environments it
guards (stage and prod by default) and the Rego policy that decides (the shipped default, extended or
replaced per route, or an external OPA server). For a candidate release and a target environment the
gate gathers, per dataset (latest version): the candidate's latest complete run, the baseline (the
release the environment serves now) and its run on the same version, and a paired comparison of the
two. Anything missing becomes a reason to deny, so a gate fails closed: no eval, no promotion. A policy
that cannot be evaluated denies too, and so does a route with no gate for stage or prod, unless the
instance's configuration says gates are optional. Only runs the server executed count.

Setting a gate is an admin's operation (it constrains deployers); an OPA server may be named only if
the server's configuration lists its URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, select

from lockgate.control.releases import ROUTE_NAME, Release
from lockgate.evals.datasets import StoredDataset
from lockgate.evals.service import EvalService
from lockgate.evals.store import EvalRun
from lockgate.evals.summary import compare
from lockgate.gates.policy import Decision, PolicySet, check, evaluate, evaluate_remote
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import Actor
from lockgate.service_errors import ControlError, Invalid, NotFound
from lockgate.store.tables import route_gates
from lockgate.store.tenancy import require_tenant_id

Environment = Literal["dev", "stage", "prod"]
PROMOTED = ("stage", "prod")


@dataclass(frozen=True, slots=True)
class GateSettings:
    """Instance-wide rules from the server's configuration."""

    required: bool = True
    """Stage and prod refuse releases of routes without a gate guarding them."""
    opa_urls: tuple[str, ...] = ()
    """OPA servers a gate may name; any other ``opa_url`` is refused."""


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
    missing_runs: list[tuple[str, str]] = field(default_factory=list)  # (release id, dataset ref)

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
    def __init__(
        self, engine: Engine, audit: AuditLog, authz: Authorizer, evals: EvalService, settings: GateSettings
    ) -> None:
        self._engine = engine
        self._audit = audit
        self._authz = authz
        self._evals = evals
        self._settings = settings

    def set(
        self, actor: Actor, tenant: str, spec: GateSpec, extra_policies: dict[str, str] | None = None
    ) -> StoredGate:
        """Install or replace the gate of ``spec.route`` (admins only; the change is audited)."""
        self._authz.require(actor, "gates.set", tenant, f"route:{tenant}/{spec.route}")
        if spec.opa_url is not None and spec.opa_url not in self._settings.opa_urls:
            allowed = ", ".join(self._settings.opa_urls) or "none are configured (control.opa_urls)"
            raise Invalid(
                f"opa_url {spec.opa_url} is not an OPA server this instance trusts; allowed: {allowed}"
            )
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
            before = connection.execute(
                select(route_gates.c.spec, route_gates.c.policy_sha256).where(*key)
            ).first()
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
                    before={"policy_sha256": before.policy_sha256, "spec": before.spec} if before else None,
                    after={"policy_sha256": policies.sha256, "spec": spec.model_dump(mode="json")},
                ),
            )
        return StoredGate(spec, policies, actor.name, now)

    def get(self, actor: Actor, tenant: str, route: str) -> StoredGate:
        self._authz.require(actor, "gates.get", tenant)
        found = self.stored(tenant, route)
        if found is None:
            raise NotFound(f"route {route!r} has no gate; an admin sets one with `lockgate gates set FILE`")
        return found

    def stored(self, tenant: str, route: str) -> StoredGate | None:
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

    def evaluate(self, actor: Actor, tenant: str, release_id: str, environment: str) -> GateResult:
        """What the gate would decide for ``release_id`` entering ``environment`` now, and the runs it
        still needs (which ``evals.start`` queues)."""
        self._authz.require(actor, "gates.evaluate", tenant)
        if environment not in ("dev", *PROMOTED):
            raise Invalid(f"unknown environment {environment!r}; use dev, stage or prod")
        release = self._evals.releases.require(tenant, release_id)
        result = self.decide(tenant, release, environment)
        return replace(result, missing_runs=self.missing_runs(tenant, release, environment))

    def decide(self, tenant: str, release: Release, environment: str) -> GateResult:
        """The decision, for the promotion path (already authorised)."""
        gate = self.stored(tenant, release.content.route)
        if gate is None or environment not in gate.spec.environments:
            route = release.content.route
            why = (
                f"route {route!r} has no gate: an admin sets one with `lockgate gates set FILE`"
                if gate is None
                else f"the gate of route {route!r} does not guard {environment}"
            )
            if environment in PROMOTED and self._settings.required:
                decision = Decision(allow=False, deny=[why], warn=[], policy_sha256="", engine="none")
            else:
                decision = Decision(allow=True, deny=[], warn=[why], policy_sha256="", engine="none")
            return GateResult(release, environment, decision, False, {})
        document, used, runs = self._input(tenant, release, environment, gate.spec)
        decision = self._decide(gate, document)
        return GateResult(release, environment, decision, True, document, used, runs, gate.policies)

    def missing_runs(self, tenant: str, release: Release, environment: str) -> list[tuple[str, str]]:
        """(release id, dataset ref) pairs the gate needs a complete server run of and does not have."""
        gate = self.stored(tenant, release.content.route)
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
