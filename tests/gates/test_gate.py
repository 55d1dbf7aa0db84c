"""Route gates: who may set them, what they require, how they fail closed, and the evidence every
attempt leaves. Eval runs are executed the way the server executes them (queued, then run by an eval
worker through a gateway on the stub upstream)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from lockgate.config.loader import LoadedConfig
from lockgate.control.environments import GateRefused
from lockgate.control.releases import ReleaseRequest
from lockgate.evals.cases import Case
from lockgate.evals.datasets import DatasetSpec
from lockgate.gates.gate import GateSpec, Thresholds
from lockgate.instance import Instance
from lockgate.security.rbac import Actor
from lockgate.service_errors import Forbidden, Invalid, NotFound
from lockgate.services import Services, build_services
from lockgate.store.tables import eval_runs
from tests.control.test_golden_path import ROUTE, Team, card, prompt
from tests.support.evals import run_eval
from tests.support.gateway import stub_config
from tests.support.processes import StubUpstream

OPA = "http://127.0.0.1:9"
CASES = [
    Case(id=f"c{i}", variables={"product": "lockgate", "question": f"q{i}"}, facts=[f"q{i}"])
    for i in range(6)
]


@pytest.fixture
def config() -> LoadedConfig:
    """Gates are required (the default); one OPA server is trusted."""
    return stub_config(("primary", "http://127.0.0.1:9/v1"), control={"opa_urls": [OPA]})


@pytest.fixture
def team(services: Services, admin: Actor) -> Team:
    team = Team(services, admin)
    services.registry.register(team.erin, "default", card("support-llm"))
    services.registry.set_alias(team.erin, "default", "support-llm", "champion", "1")
    services.datasets.push(
        team.erin, "default", DatasetSpec(name="golden", scorers=[{"type": "contains"}]), CASES
    )
    return team


def release(services: Services, team: Team, version: str, template: str) -> str:
    services.prompts.push(team.erin, "default", prompt(version, template))
    request = ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@{version}", output_contract={"type": "string"})
    return services.releases.create(team.erin, "default", request).id


def to_stage(services: Services, team: Team, release_id: str) -> None:
    services.environments.point(team.erin, "default", ROUTE, "dev", release_id)
    services.environments.promote(team.dan, "default", ROUTE, "stage")


def denied_by(services: Services, admin: Actor, action: str) -> list[tuple[str, str]]:
    entries = services.trail.recent(admin, limit=500, action=action)
    return [(e["actor"], e["resource"]) for e in reversed(entries) if e["outcome"] == "denied"]


# --- a route needs a gate -------------------------------------------------------------------------


def test_a_route_without_a_gate_cannot_enter_stage(services: Services, team: Team) -> None:
    rid = release(services, team, "1.0.0", 'reply:"{{ question }}"')
    services.environments.point(team.erin, "default", ROUTE, "dev", rid)  # dev needs no gate
    with pytest.raises(GateRefused) as refused:
        services.environments.promote(team.dan, "default", ROUTE, "stage")
    assert refused.value.reasons == [
        f"route '{ROUTE}' has no gate: an admin sets one with `lockgate gates set FILE`"
    ]
    with pytest.raises(NotFound):
        services.environments.pointer("default", ROUTE, "stage")
    [record] = services.evidence.list(team.vic, "default", release_id=rid)
    assert (record.environment, record.decision) == ("stage", "deny")
    assert record.record["reasons"] == refused.value.reasons


def test_a_gate_that_omits_prod_does_not_let_a_release_into_prod(
    instance: Instance, services: Services, team: Team, admin: Actor, stub: StubUpstream
) -> None:
    services.gates.set(admin, "default", GateSpec(route=ROUTE, environments=["stage"], datasets=["golden"]))
    rid = release(services, team, "1.0.0", 'reply:"{{ question }}"')
    run_eval(services, instance, team.erin, rid, "golden", stub)
    to_stage(services, team, rid)
    services.environments.approve(team.april, "default", rid, "prod")
    with pytest.raises(GateRefused, match=f"the gate of route '{ROUTE}' does not guard prod"):
        services.environments.promote(team.dan, "default", ROUTE, "prod")
    with pytest.raises(NotFound):
        services.environments.pointer("default", ROUTE, "prod")


def test_with_gates_optional_an_ungated_route_promotes_with_a_warning_in_its_evidence(
    instance: Instance, team: Team
) -> None:
    relaxed = build_services(
        instance, stub_config(("primary", "http://127.0.0.1:9/v1"), control={"gates_required": False})
    )
    rid = release(relaxed, team, "1.0.0", 'reply:"{{ question }}"')
    to_stage(relaxed, team, rid)
    assert relaxed.environments.pointer("default", ROUTE, "stage").release_id == rid
    [record] = relaxed.evidence.list(team.vic, "default", release_id=rid)
    assert record.decision == "allow"
    assert record.record["warnings"] == [
        f"route '{ROUTE}' has no gate: an admin sets one with `lockgate gates set FILE`"
    ]


# --- who sets a gate, and to what --------------------------------------------------------------------


def test_setting_a_gate_is_checked_and_needs_an_admin(services: Services, team: Team, admin: Actor) -> None:
    for who in (team.erin, team.dan):
        with pytest.raises(Forbidden, match="it needs admin"):
            services.gates.set(who, "default", GateSpec(route=ROUTE, datasets=["golden"]))
    with pytest.raises(NotFound, match="unknown dataset 'nope'"):
        services.gates.set(admin, "default", GateSpec(route=ROUTE, datasets=["nope"]))
    with pytest.raises(Invalid):
        services.gates.set(
            admin, "default", GateSpec(route=ROUTE, datasets=["golden"]), {"x.rego": "package"}
        )
    with pytest.raises(NotFound, match="has no gate"):
        services.gates.get(team.vic, "default", ROUTE)
    stored = services.gates.set(admin, "default", GateSpec(route=ROUTE, datasets=["golden"]))
    assert services.gates.get(team.vic, "default", ROUTE) == stored
    assert stored.updated_by == "admin"


def test_a_deployer_cannot_rewrite_the_gate_that_guards_them(
    services: Services, team: Team, admin: Actor
) -> None:
    strict = services.gates.set(admin, "default", GateSpec(route=ROUTE, datasets=["golden"]))
    lax = GateSpec(
        route=ROUTE, environments=["stage"], datasets=["golden"], thresholds=Thresholds(max_quality_drop=1)
    )
    with pytest.raises(Forbidden):
        services.gates.set(team.dan, "default", lax)
    assert services.gates.get(team.vic, "default", ROUTE) == strict
    assert denied_by(services, admin, "gates.set") == [("dan", f"route:default/{ROUTE}")]


def test_only_a_configured_opa_server_may_decide(services: Services, team: Team, admin: Actor) -> None:
    elsewhere = GateSpec(route=ROUTE, datasets=["golden"], opa_url="http://opa.attacker.example:8181")
    with pytest.raises(
        Invalid, match=re.escape(f"is not an OPA server this instance trusts; allowed: {OPA}")
    ):
        services.gates.set(admin, "default", elsewhere)
    with pytest.raises(NotFound):
        services.gates.get(team.vic, "default", ROUTE)
    trusted = services.gates.set(admin, "default", GateSpec(route=ROUTE, datasets=["golden"], opa_url=OPA))
    assert trusted.spec.opa_url == OPA


# --- what a gate decides -----------------------------------------------------------------------------


def test_gate_compares_with_the_baseline_and_fails_closed(
    instance: Instance, services: Services, team: Team, admin: Actor, stub: StubUpstream
) -> None:
    services.gates.set(admin, "default", GateSpec(route=ROUTE, datasets=["golden"]))
    good = release(services, team, "1.0.0", 'reply:"{{ question }}"')
    run_eval(services, instance, team.erin, good, "golden", stub)
    to_stage(services, team, good)

    # Half the answers lose their fact: a drop of 0.5 against the baseline in stage.
    worse = release(
        services, team, "1.0.1", 'reply:"{% if question[-1] in "024" %}{{ question }}{% endif %}"'
    )
    assert services.gates.evaluate(team.vic, "default", worse, "stage").missing_runs == [(worse, "golden@1")]
    summary = run_eval(services, instance, team.erin, worse, "golden", stub)
    assert summary["quality"] == 0.5
    result = services.gates.evaluate(team.vic, "default", worse, "stage")
    assert not result.decision.allow
    assert result.decision.deny == [
        f"quality on golden@1 is 0.500, below baseline 1.000 ({good}) by 0.500; the allowed drop is 0.020"
    ]
    assert result.missing_runs == []

    # A new dataset version: neither release has a run on it, and the gate says so for both.
    services.datasets.push(
        team.erin, "default", DatasetSpec(name="golden", scorers=[{"type": "icontains"}]), CASES
    )
    result = services.gates.evaluate(team.vic, "default", worse, "stage")
    assert result.missing_runs == [(worse, "golden@2"), (good, "golden@2")]
    assert any(f"release {worse} has no completed eval run on golden@2" in r for r in result.reasons)
    assert any(f"baseline release {good} (serving stage)" in r for r in result.reasons)


def test_a_run_the_server_did_not_execute_does_not_count(
    instance: Instance, services: Services, team: Team, admin: Actor
) -> None:
    services.gates.set(admin, "default", GateSpec(route=ROUTE, datasets=["golden"]))
    rid = release(services, team, "1.0.0", 'reply:"{{ question }}"')
    golden = services.datasets.find("default", "golden")
    # A perfect run someone computed elsewhere and wrote into the store (or one from before schema 0004).
    with instance.engine.begin() as connection:
        connection.execute(
            eval_runs.insert().values(
                id=f"run_{uuid.uuid4().hex[:24]}",
                tenant_id=services.tenants.get("default").id,
                release_id=rid,
                dataset_id=golden.id,
                repeats=1,
                status="complete",
                settings={"dataset": golden.ref},
                summary={"quality": 1.0, "pass_rate": 1.0, "safety_failure_rate": 0.0, "latency_p95_ms": 1.0},
                created_by="mallory",
                started_at=datetime.now(UTC),
                finished_at=datetime.now(UTC),
                origin="client",
            )
        )
    result = services.gates.evaluate(team.vic, "default", rid, "stage")
    assert result.missing_runs == [(rid, "golden@1")]
    assert result.reasons == [
        f"release {rid} has no completed eval run on golden@1: "
        f"run `lockgate eval run --release {rid} --dataset golden@1`"
    ]
    services.environments.point(team.erin, "default", ROUTE, "dev", rid)
    with pytest.raises(GateRefused, match="has no completed eval run on golden@1"):
        services.environments.promote(team.dan, "default", ROUTE, "stage")


def test_latency_budget_and_extra_policy_rules(
    instance: Instance, services: Services, team: Team, admin: Actor, stub: StubUpstream
) -> None:
    rid = release(services, team, "1.0.0", 'reply:"{{ question }}"')
    run_eval(services, instance, team.erin, rid, "golden", stub)
    tight = GateSpec(route=ROUTE, datasets=["golden"], thresholds=Thresholds(p95_latency_ms=0.001))
    services.gates.set(admin, "default", tight)
    [reason] = services.gates.evaluate(team.vic, "default", rid, "stage").decision.deny
    assert reason.startswith("p95 latency on golden@1 is ") and "over the budget of 0.001 ms" in reason

    extra = {
        "freeze.rego": 'package lockgate.gate\n\nimport rego.v1\n\ndeny contains "prod is frozen" if '
        '{ input.environment == "prod" }\n'
    }
    services.gates.set(admin, "default", GateSpec(route=ROUTE, datasets=["golden"]), extra)
    assert services.gates.evaluate(team.vic, "default", rid, "stage").decision.allow
    assert services.gates.evaluate(team.vic, "default", rid, "prod").decision.deny == ["prod is frozen"]


def test_an_unreachable_opa_server_denies(
    instance: Instance, services: Services, team: Team, admin: Actor, stub: StubUpstream
) -> None:
    rid = release(services, team, "1.0.0", 'reply:"{{ question }}"')
    run_eval(services, instance, team.erin, rid, "golden", stub)
    services.gates.set(admin, "default", GateSpec(route=ROUTE, datasets=["golden"], opa_url=OPA))
    services.environments.point(team.erin, "default", ROUTE, "dev", rid)
    with pytest.raises(GateRefused, match="could not be evaluated"):
        services.environments.promote(team.dan, "default", ROUTE, "stage")
    with pytest.raises(NotFound):
        services.environments.pointer("default", ROUTE, "stage")


def test_refused_attempts_leave_evidence_too(
    instance: Instance, services: Services, team: Team, admin: Actor, stub: StubUpstream
) -> None:
    services.gates.set(admin, "default", GateSpec(route=ROUTE, datasets=["golden"]))
    rid = release(services, team, "1.0.0", 'reply:"{{ question }}"')
    run_eval(services, instance, team.erin, rid, "golden", stub)
    services.environments.point(team.erin, "default", ROUTE, "dev", rid)
    with pytest.raises(Forbidden):
        services.environments.promote(team.erin, "default", ROUTE, "stage")  # an editor, not a deployer
    services.environments.promote(team.dan, "default", ROUTE, "stage")
    with pytest.raises(Forbidden, match="approval"):
        services.environments.promote(team.dan, "default", ROUTE, "prod")
    records = services.evidence.list(team.vic, "default", release_id=rid)
    assert [(r.environment, r.decision, r.record["requested_by"]) for r in records] == [
        ("stage", "refused", "erin"),
        ("stage", "allow", "dan"),
        ("prod", "refused", "dan"),
    ]
    assert "approval" in records[2].record["reasons"][0]
    assert all(services.evidence.verify(team.vic, "default", r.id).ok for r in records)
