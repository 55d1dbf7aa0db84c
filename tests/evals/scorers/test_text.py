"""Exact match, substring and regular-expression scorers."""

from __future__ import annotations

import pytest

from tests.evals.scorers.support import score


async def test_exact_compares_the_stripped_answer_with_the_expected_one() -> None:
    assert (await score({"type": "exact"}, "  Paris\n", expected="Paris")).passed
    failed = await score({"type": "exact"}, "Paris, France", expected="Paris")
    assert (failed.value, failed.passed) == (0.0, False)
    assert failed.reason == "expected 'Paris', got 'Paris, France'"


async def test_exact_options() -> None:
    assert not (await score({"type": "exact"}, "paris", expected="Paris")).passed
    assert (await score({"type": "exact", "ignore_case": True}, "paris", expected="Paris")).passed
    assert not (await score({"type": "exact", "strip": False}, "Paris\n", expected="Paris")).passed
    assert (await score({"type": "exact", "value": "Rome"}, "Rome", expected="Paris")).passed
    assert not (await score({"type": "exact", "value": "Rome"}, "Paris", expected="Paris")).passed


async def test_exact_without_anything_to_compare_fails_and_says_why() -> None:
    result = await score({"type": "exact", "threshold": 0}, "Paris")
    assert not result.passed
    assert result.reason == "nothing to compare: set `value` on the scorer or `expected` on the case"


async def test_contains_scores_the_fraction_of_facts_found() -> None:
    facts = ["Paris", "Seine", "Eiffel"]
    result = await score({"type": "contains"}, "Paris lies on the Seine.", facts=facts)
    assert result.value == pytest.approx(2 / 3)
    assert not result.passed
    assert result.reason == "missing 'Eiffel'"
    partial = await score({"type": "contains", "threshold": 0.6}, "Paris lies on the Seine.", facts=facts)
    assert partial.passed
    assert (await score({"type": "contains"}, "Paris, the Seine, the Eiffel tower", facts=facts)).value == 1.0


async def test_contains_falls_back_to_the_expected_answer_and_is_case_sensitive() -> None:
    assert (await score({"type": "contains"}, "It is Paris.", expected="Paris")).passed
    assert not (await score({"type": "contains"}, "It is paris.", expected="Paris")).passed
    assert (await score({"type": "icontains"}, "It is PARIS.", expected="Paris")).passed
    assert not (await score({"type": "icontains"}, "It is Rome.", expected="Paris")).passed


async def test_contains_value_overrides_the_case() -> None:
    spec = {"type": "contains", "value": ["refund", "30 days"]}
    assert (await score(spec, "You get a refund within 30 days.", facts=["unrelated"])).passed
    assert (await score(spec, "You get a refund.", facts=["refund"])).value == 0.5


async def test_contains_without_anything_to_look_for_fails() -> None:
    result = await score({"type": "contains"}, "anything")
    assert (result.passed, result.reason) == (
        False,
        "nothing to compare: set `value` on the scorer, or `facts` or `expected` on the case",
    )


async def test_not_contains_scores_the_fraction_absent() -> None:
    spec = {"type": "not_contains", "value": ["password", "internal"]}
    assert (await score(spec, "Here is how to reset it.")).passed
    leaked = await score(spec, "The internal password is hunter2.")
    assert (leaked.value, leaked.passed) == (0.0, False)
    assert leaked.reason == "contains 'password', 'internal'"
    half = await score(spec, "That is internal.")
    assert (half.value, half.passed) == (0.5, False)


async def test_regex_must_match_or_must_not() -> None:
    order = {"type": "regex", "pattern": r"\bORD-\d{5}\b"}
    matched = await score(order, "Your order is ORD-12345.")
    assert (matched.passed, matched.reason) == (True, "matches 'ORD-12345'")
    missed = await score(order, "Your order is ORD-123.")
    assert (missed.value, missed.passed) == (0.0, False)
    no_apology = {"type": "regex", "pattern": r"(?i)\bsorry\b", "must_match": False}
    assert (await score(no_apology, "Done.")).passed
    assert not (await score(no_apology, "Sorry, done.")).passed
