"""Scorer specs: validation errors name the field, defaults are filled in, missing services are refused."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from lockgate.evals.cases import Case, Outcome, ScoringContext
from lockgate.evals.scorers import build_scorers, validate_scorer_specs
from lockgate.service_errors import Invalid
from tests.evals.scorers.support import ScriptedModel


def problem(specs: list[Any]) -> str:
    with pytest.raises(Invalid) as caught:
        validate_scorer_specs(specs)
    return caught.value.message


def test_the_message_names_the_scorer_and_field() -> None:
    specs = [
        {"type": "exact"},
        {"type": "contains", "value": "a"},
        {"type": "exact", "name": "e2", "threshold": 2},
    ]
    assert problem(specs) == "scorers[2].threshold: Input should be less than or equal to 1"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "bleu"}, "scorers[0].type: unknown scorer type 'bleu'; give one of exact, contains"),
        ({"name": "x"}, "scorers[0].type: give one of exact, contains"),
        ({"type": "exact", "colour": "red"}, "scorers[0].colour: Extra inputs are not permitted"),
        ({"type": "exact", "weight": -1}, "scorers[0].weight: Input should be greater than or equal to 0"),
        ({"type": "contains", "value": []}, "scorers[0].value: List should have at least 1 item"),
        (
            {"type": "contains", "value": ["a", ""]},
            "scorers[0].value[1]: String should have at least 1 character",
        ),
        ({"type": "not_contains"}, "scorers[0].value: not_contains needs the text"),
        ({"type": "regex", "pattern": "(unclosed"}, "scorers[0].pattern: not a valid regular expression"),
        ({"type": "json_schema", "schema": {"type": "text"}}, "scorers[0].schema: not a valid JSON Schema"),
        (
            {"type": "numeric", "tolerance": -0.1},
            "scorers[0].tolerance: Input should be greater than or equal to 0",
        ),
        (
            {"type": "embedding", "threshold": -0.5},
            "scorers[0].threshold: Input should be greater than or equal",
        ),
        ({"type": "judge", "model": "m"}, "scorers[0].rubric: Field required"),
        (
            {"type": "judge", "model": "m", "rubric": "r", "scale": 1},
            "scorers[0].scale: Input should be greater",
        ),
        (
            {"type": "groundedness", "min_overlap": 0},
            "scorers[0].min_overlap: Input should be greater than 0",
        ),
        (
            {"type": "refusal", "expect": "maybe"},
            "scorers[0].expect: Input should be 'refuse', 'answer' or 'label'",
        ),
        ({"type": "latency"}, "scorers[0].max_ms: Field required"),
        ({"type": "latency", "max_ms": 0}, "scorers[0].max_ms: Input should be greater than 0"),
        ({"type": "cost", "max_usd": "cheap"}, "scorers[0].max_usd: Input should be a valid number"),
        (
            {"type": "safety", "judge_model": ""},
            "scorers[0].judge_model: String should have at least 1 character",
        ),
        ("exact", "scorers[0]: Input should be a valid dictionary"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(spec: Any, expected: str) -> None:
    assert problem([spec]).startswith(expected)


def test_every_problem_is_reported_at_once() -> None:
    message = problem([{"type": "exact", "threshold": 3}, {"type": "latency"}])
    assert message == (
        "scorers[0].threshold: Input should be less than or equal to 1; scorers[1].max_ms: Field required"
    )


def test_names_must_be_unique() -> None:
    assert problem([{"type": "exact"}, {"type": "exact", "ignore_case": True}]).startswith(
        "scorers[1].name: 'exact' is already used"
    )
    named = validate_scorer_specs([{"type": "exact"}, {"type": "exact", "name": "exact-nocase"}])
    assert [spec["name"] for spec in named] == ["exact", "exact-nocase"]


def test_scorers_must_be_a_list() -> None:
    with pytest.raises(Invalid, match=r"^scorers: give a list"):
        validate_scorer_specs("exact")  # type: ignore[arg-type]


def test_normalised_specs_carry_their_defaults() -> None:
    specs: list[dict[str, Any]] = [
        {"type": "contains", "value": "Paris"},
        {"type": "embedding"},
        {"type": "json_schema", "schema": {"type": "object"}},
    ]
    assert validate_scorer_specs(specs) == [
        {"type": "contains", "name": "contains", "weight": 1.0, "threshold": 1.0, "value": ["Paris"]},
        {
            "type": "embedding",
            "name": "embedding",
            "weight": 1.0,
            "threshold": 0.7,
            "model": None,
            "value": None,
        },
        {
            "type": "json_schema",
            "name": "json_schema",
            "weight": 1.0,
            "threshold": 1.0,
            "schema": {"type": "object"},
        },
    ]
    # What was stored validates again to the same thing.
    assert validate_scorer_specs(validate_scorer_specs(specs)) == validate_scorer_specs(specs)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "judge", "model": "m", "rubric": "r"}, "model"),
        ({"type": "groundedness", "judge_model": "m"}, "judge_model"),
        ({"type": "safety", "judge_model": "m"}, "judge_model"),
        ({"type": "embedding"}, "type"),
    ],
)
def test_building_needs_the_model_service_a_spec_uses(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid, match=rf"^scorers\[1\]\.{field}: .* none is configured"):
        build_scorers([{"type": "exact"}, spec], ScoringContext())


def test_rule_based_groundedness_and_safety_need_no_service() -> None:
    scorers = build_scorers([{"type": "groundedness"}, {"type": "safety"}], ScoringContext())
    assert [(s.name, s.kind) for s in scorers] == [("groundedness", "quality"), ("safety", "safety")]


def test_built_scorers_expose_name_kind_weight_and_threshold() -> None:
    specs: list[dict[str, Any]] = [
        {"type": "exact", "name": "answer", "weight": 2},
        {"type": "latency", "max_ms": 500, "threshold": 0.5},
        {"type": "cost", "max_usd": 0.01},
        {"type": "safety"},
        {"type": "judge", "model": "judge", "rubric": "helpful"},
    ]
    scorers = build_scorers(specs, ScriptedModel("").scoring)
    assert [(s.name, s.kind, s.weight, s.threshold) for s in scorers] == [
        ("answer", "quality", 2.0, 1.0),
        ("latency", "latency", 1.0, 0.5),
        ("cost", "cost", 1.0, 1.0),
        ("safety", "safety", 1.0, 1.0),
        ("judge", "quality", 1.0, 0.5),
    ]


async def _no_embeddings(model: str | None, texts: Sequence[str]) -> list[list[float]]:
    raise AssertionError("a failed call must not be embedded")


EVERY_SCORER: list[dict[str, Any]] = [
    {"type": "exact"},
    {"type": "contains"},
    {"type": "icontains"},
    {"type": "not_contains", "value": "x"},
    {"type": "regex", "pattern": ".*", "must_match": False},
    {"type": "json_valid"},
    {"type": "json_schema"},
    {"type": "numeric"},
    {"type": "embedding"},
    {"type": "judge", "model": "m", "rubric": "r"},
    {"type": "groundedness"},
    {"type": "refusal", "expect": "answer"},
    {"type": "safety"},
]


@pytest.mark.parametrize("spec", EVERY_SCORER, ids=lambda spec: spec["type"])
async def test_a_failed_call_fails_every_quality_and_safety_scorer(spec: dict[str, Any]) -> None:
    judge = ScriptedModel('{"score": 5, "reason": "fine"}')
    [scorer] = build_scorers([{**spec, "threshold": 0}], ScoringContext(judge, _no_embeddings))
    case = Case(id="c", expected="42", context="ctx", json_schema={"type": "object"})
    result = await scorer.score(case, Outcome("", 0.0, error="upstream timed out"))
    assert (result.value, result.passed, result.reason) == (0.0, False, "call failed: upstream timed out")
    assert judge.calls == []


async def test_latency_and_cost_still_score_a_failed_call() -> None:
    scorers = build_scorers(
        [{"type": "latency", "max_ms": 1000}, {"type": "cost", "max_usd": 0.01}], ScoringContext()
    )
    outcome = Outcome("", 4000.0, 0.0, error="upstream timed out")
    latency, cost = [await scorer.score(Case(id="c"), outcome) for scorer in scorers]
    assert (latency.value, latency.passed) == (0.25, False)
    assert (cost.value, cost.passed) == (1.0, True)
