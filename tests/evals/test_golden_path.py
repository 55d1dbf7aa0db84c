"""The delivery rule end to end: register -> prompt -> release -> eval -> gate -> promote through dev,
stage and prod (with approval) -> evidence that verifies, in the store and as an exported bundle.
Evals run as on the server: queued through the service, executed by an eval worker through a gateway.

A second release whose prompt drops the required JSON format is then evaluated the same way and the
gate refuses it, naming the metric, the dataset, the value, the baseline and the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from lockgate.control.environments import GateRefused
from lockgate.control.releases import Release, ReleaseRequest
from lockgate.evals.cases import Case
from lockgate.evals.datasets import DatasetSpec
from lockgate.gates.evidence_format import verify_bundle
from lockgate.gates.gate import GateSpec
from lockgate.instance import Instance
from lockgate.security.rbac import Actor
from lockgate.services import Services
from tests.control.test_golden_path import ROUTE, Team, card, prompt
from tests.support.evals import run_eval
from tests.support.processes import StubUpstream

ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
TOPICS = ["refunds", "invoices", "passwords", "exports", "webhooks", "quotas", "billing", "sso"]


@dataclass(frozen=True)
class Evaluated:
    summary: dict[str, Any]


def golden_cases() -> list[Case]:
    return [
        Case(
            id=f"q-{topic}",
            variables={"product": "lockgate", "question": f"How do I manage {topic}?"},
            facts=[topic],
        )
        for topic in TOPICS
    ]


def evaluate(
    services: Services, instance: Instance, actor: Actor, release: Release, stub: StubUpstream
) -> Evaluated:
    """Queue the golden dataset on ``release`` and let an eval worker run it through the gateway."""
    summary = run_eval(services, instance, actor, release.id, "support-golden", stub, against="stage")
    return Evaluated(summary)


@pytest.fixture
def team(services: Services, admin: Actor) -> Team:
    return Team(services, admin)


def test_golden_path_with_gate_and_evidence(
    instance: Instance, services: Services, team: Team, admin: Actor, stub: StubUpstream
) -> None:
    services.registry.register(team.erin, "default", card("support-llm"))
    services.registry.set_alias(team.erin, "default", "support-llm", "champion", "1")
    services.prompts.push(team.erin, "default", prompt("1.0.0", 'reply:{"answer": "{{ question }}"}'))
    good = services.releases.create(
        team.erin, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0")
    )
    spec = DatasetSpec(
        name="support-golden",
        scorers=[
            {"type": "json_schema", "schema": ANSWER_SCHEMA},
            {"type": "contains", "threshold": 1.0},
        ],
    )
    services.datasets.push(team.erin, "default", spec, golden_cases())
    services.gates.set(admin, "default", GateSpec(route=ROUTE, datasets=["support-golden"]))

    # No eval yet: the gate refuses and says which command to run.
    services.environments.point(team.erin, "default", ROUTE, "dev", good.id)
    with pytest.raises(GateRefused, match="has no completed eval run on support-golden@1"):
        services.environments.promote(team.dan, "default", ROUTE, "stage")

    evaluated = evaluate(services, instance, team.erin, good, stub)
    assert evaluated.summary["quality"] == 1.0
    assert evaluated.summary["pass_rate"] == 1.0
    services.environments.promote(team.dan, "default", ROUTE, "stage")
    services.environments.approve(team.april, "default", good.id, "prod")
    services.environments.promote(team.dan, "default", ROUTE, "prod")
    assert services.environments.pointer("default", ROUTE, "prod").release_id == good.id

    records = services.evidence.list(team.vic, "default", release_id=good.id)
    assert [(r.environment, r.decision) for r in records] == [
        ("stage", "deny"),  # no eval yet
        ("stage", "allow"),
        ("prod", "allow"),
    ]
    prod = next(r for r in records if r.environment == "prod")
    assert prod.record["approvers"] == ["april"]
    assert prod.record["requested_by"] == "dan"
    assert prod.record["git_commit"] == good.content.git_commit
    assert {ref["dataset"] for ref in prod.record["reports"]} == {"support-golden@1"}
    assert {ref["format"] for ref in prod.record["reports"]} == {"json", "html", "junit"}
    assert services.evidence.verify(team.vic, "default", prod.id).ok

    bundle = services.evidence.export(team.vic, "default", prod.id)
    assert verify_bundle(bundle).ok
    for position in range(0, len(bundle), max(1, len(bundle) // 300)):
        altered = bytearray(bundle)
        altered[position] ^= 0x01
        assert not verify_bundle(bytes(altered)).ok, f"flipping byte {position} went unnoticed"

    # A worse release: the prompt no longer asks for JSON, so every answer breaks the output contract.
    services.prompts.push(team.erin, "default", prompt("1.0.1", "reply:{{ question }}"))
    worse = services.releases.create(
        team.erin, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.1")
    )
    worse_eval = evaluate(services, instance, team.erin, worse, stub)
    assert worse_eval.summary["quality"] < 0.6
    services.environments.point(team.erin, "default", ROUTE, "dev", worse.id)
    with pytest.raises(GateRefused) as refused:
        services.environments.promote(team.dan, "default", ROUTE, "stage")
    reason = next(r for r in refused.value.reasons if r.startswith("quality"))
    quality = float(worse_eval.summary["quality"])
    for part in ("support-golden@1", f"{quality:.3f}", "1.000", good.id, "0.020"):
        assert part in reason, f"{part!r} missing from {reason!r}"
    assert services.environments.pointer("default", ROUTE, "stage").release_id == good.id
    denied = services.evidence.list(team.vic, "default", release_id=worse.id)
    assert [(r.environment, r.decision) for r in denied] == [("stage", "deny")]
    assert reason in denied[0].record["reasons"]
    assert services.evidence.verify(team.vic, "default", denied[0].id).ok
