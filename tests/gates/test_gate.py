"""Route gates: what they require, how they fail closed, and the evidence every attempt leaves."""

from __future__ import annotations

import pytest

from lockgate.control.environments import GateRefused
from lockgate.service_errors import Forbidden, Invalid, NotFound
from lockgate.control.plane import ControlPlane
from lockgate.control.releases import ReleaseRequest
from lockgate.evals.cases import Case
from lockgate.evals.datasets import DatasetSpec
from lockgate.gates.gate import GateSpec, Thresholds
from lockgate.instance import Instance
from lockgate.security.rbac import Actor
from tests.control.test_golden_path import ROUTE, Team, card, prompt
from tests.support.evals import run_eval
from tests.support.processes import StubUpstream

CASES = [
    Case(id=f"c{i}", variables={"product": "lockgate", "question": f"q{i}"}, facts=[f"q{i}"])
    for i in range(6)
]


@pytest.fixture
def control(instance: Instance) -> ControlPlane:
    return instance.control()


@pytest.fixture
def team(control: ControlPlane, admin: Actor) -> Team:
    team = Team(control, admin)
    control.registry.register(team.erin, "default", card("support-llm"))
    control.registry.set_alias(team.erin, "default", "support-llm", "champion", "1")
    control.datasets.push(
        team.erin, "default", DatasetSpec(name="golden", scorers=[{"type": "contains"}]), CASES
    )
    return team


def release(control: ControlPlane, team: Team, version: str, template: str) -> str:
    control.prompts.push(team.erin, "default", prompt(version, template))
    request = ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@{version}", output_contract={"type": "string"})
    return control.releases.create(team.erin, "default", request).id


def to_stage(control: ControlPlane, team: Team, release_id: str) -> None:
    control.environments.point(team.erin, "default", ROUTE, "dev", release_id)
    control.environments.promote(team.dan, "default", ROUTE, "stage")


def test_an_ungated_route_promotes_with_a_warning_in_its_evidence(control: ControlPlane, team: Team) -> None:
    rid = release(control, team, "1.0.0", 'reply:"{{ question }}"')
    to_stage(control, team, rid)
    [record] = control.evidence.list("default", release_id=rid)
    assert record.decision == "allow"
    assert any("has no gate" in warning for warning in record.record["warnings"])


def test_setting_a_gate_is_checked_and_needs_a_deployer(
    control: ControlPlane, team: Team, admin: Actor
) -> None:
    with pytest.raises(Forbidden):
        control.gates.set(team.erin, "default", GateSpec(route=ROUTE, datasets=["golden"]))
    with pytest.raises(NotFound, match="unknown dataset 'nope'"):
        control.gates.set(team.dan, "default", GateSpec(route=ROUTE, datasets=["nope"]))
    with pytest.raises(Invalid):
        control.gates.set(
            team.dan, "default", GateSpec(route=ROUTE, datasets=["golden"]), {"x.rego": "package"}
        )
    assert control.gates.get("default", ROUTE) is None
    stored = control.gates.set(team.dan, "default", GateSpec(route=ROUTE, datasets=["golden"]))
    assert control.gates.get("default", ROUTE) == stored


def test_gate_compares_with_the_baseline_and_fails_closed(
    instance: Instance, control: ControlPlane, team: Team, stub: StubUpstream
) -> None:
    control.gates.set(team.dan, "default", GateSpec(route=ROUTE, datasets=["golden"]))
    good = release(control, team, "1.0.0", 'reply:"{{ question }}"')
    run_eval(instance, control, team.erin, good, "golden", stub)
    to_stage(control, team, good)

    # Half the answers lose their fact: a drop of 0.5 against the baseline in stage.
    worse = release(control, team, "1.0.1", 'reply:"{% if question[-1] in "024" %}{{ question }}{% endif %}"')
    assert control.gates.missing_runs("default", worse, "stage") == [(worse, "golden@1")]
    summary = run_eval(instance, control, team.erin, worse, "golden", stub)
    assert summary["quality"] == 0.5
    decision = control.gates.evaluate("default", worse, "stage").decision
    assert not decision.allow
    assert decision.deny == [
        f"quality on golden@1 is 0.500, below baseline 1.000 ({good}) by 0.500; the allowed drop is 0.020"
    ]

    # A new dataset version: neither release has a run on it, and the gate says so for both.
    control.datasets.push(
        team.erin, "default", DatasetSpec(name="golden", scorers=[{"type": "icontains"}]), CASES
    )
    assert control.gates.missing_runs("default", worse, "stage") == [(worse, "golden@2"), (good, "golden@2")]
    reasons = control.gates.evaluate("default", worse, "stage").decision.deny
    assert any(f"release {worse} has no completed eval run on golden@2" in r for r in reasons)
    assert any(f"baseline release {good} (serving stage)" in r for r in reasons)


def test_latency_budget_and_extra_policy_rules(
    instance: Instance, control: ControlPlane, team: Team, stub: StubUpstream
) -> None:
    rid = release(control, team, "1.0.0", 'reply:"{{ question }}"')
    run_eval(instance, control, team.erin, rid, "golden", stub)
    tight = GateSpec(route=ROUTE, datasets=["golden"], thresholds=Thresholds(p95_latency_ms=0.001))
    control.gates.set(team.dan, "default", tight)
    [reason] = control.gates.evaluate("default", rid, "stage").decision.deny
    assert reason.startswith("p95 latency on golden@1 is ") and "over the budget of 0.001 ms" in reason

    extra = {
        "freeze.rego": 'package lockgate.gate\n\nimport rego.v1\n\ndeny contains "prod is frozen" if '
        '{ input.environment == "prod" }\n'
    }
    control.gates.set(team.dan, "default", GateSpec(route=ROUTE, datasets=["golden"]), extra)
    assert control.gates.evaluate("default", rid, "stage").decision.allow
    assert control.gates.evaluate("default", rid, "prod").decision.deny == ["prod is frozen"]


def test_an_unreachable_opa_server_denies(
    instance: Instance, control: ControlPlane, team: Team, stub: StubUpstream
) -> None:
    rid = release(control, team, "1.0.0", 'reply:"{{ question }}"')
    run_eval(instance, control, team.erin, rid, "golden", stub)
    spec = GateSpec(route=ROUTE, datasets=["golden"], opa_url="http://127.0.0.1:9")
    control.gates.set(team.dan, "default", spec)
    control.environments.point(team.erin, "default", ROUTE, "dev", rid)
    with pytest.raises(GateRefused, match="could not be evaluated"):
        control.environments.promote(team.dan, "default", ROUTE, "stage")
    with pytest.raises(NotFound):
        control.environments.pointer("default", ROUTE, "stage")


def test_refused_attempts_leave_evidence_too(control: ControlPlane, team: Team) -> None:
    rid = release(control, team, "1.0.0", 'reply:"{{ question }}"')
    control.environments.point(team.erin, "default", ROUTE, "dev", rid)
    with pytest.raises(Forbidden):
        control.environments.promote(team.erin, "default", ROUTE, "stage")  # an editor, not a deployer
    control.environments.promote(team.dan, "default", ROUTE, "stage")
    with pytest.raises(Forbidden, match="approval"):
        control.environments.promote(team.dan, "default", ROUTE, "prod")
    records = control.evidence.list("default", release_id=rid)
    assert [(r.environment, r.decision, r.record["requested_by"]) for r in records] == [
        ("stage", "refused", "erin"),
        ("stage", "allow", "dan"),
        ("prod", "refused", "dan"),
    ]
    assert "approval" in records[2].record["reasons"][0]
    assert all(control.evidence.verify("default", r.id).ok for r in records)
