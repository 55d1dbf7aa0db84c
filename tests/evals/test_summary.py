"""Run summaries and baseline comparisons over hand-built case results."""

from __future__ import annotations

import pytest

from lockgate.evals.cases import Case, CaseResult, Kind, Outcome, Score
from lockgate.evals.summary import compare, summarize

SUMMARY_KEYS = {
    "cases",
    "runs",
    "quality",
    "quality_ci",
    "pass_rate",
    "safety_failures",
    "safety_failure_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "cost_per_case_usd",
    "cost_per_1k_usd",
    "error_rate",
    "scorers",
}


def score(name: str, value: float, passed: bool, kind: Kind = "quality") -> Score:
    return Score(scorer=name, kind=kind, value=value, passed=passed, reason=f"{name} said so")


def run(
    case_id: str,
    *scores: Score,
    repeat: int = 0,
    latency_ms: float = 100.0,
    cost_usd: float = 0.0,
    error: str | None = None,
) -> CaseResult:
    outcome = Outcome(text="" if error else "answer", latency_ms=latency_ms, cost_usd=cost_usd, error=error)
    return CaseResult(case=Case(id=case_id), repeat=repeat, outcome=outcome, scores=scores)


def quality_run(case_id: str, value: float, repeat: int = 0, passed: bool = True) -> CaseResult:
    return run(case_id, score("exact", value, passed), repeat=repeat)


def test_counts_distinct_cases_and_case_runs() -> None:
    results = [quality_run(case, 1.0, repeat) for case in ("a", "b", "c") for repeat in range(2)]
    summary = summarize(results, repeats=2)
    assert (summary.cases, summary.runs) == (3, 6)


def test_quality_averages_each_case_over_repeats_first_and_skips_cases_without_quality() -> None:
    results = [
        quality_run("a", 1.0, repeat=0),
        quality_run("a", 0.5, repeat=1),
        quality_run("b", 0.0, repeat=0),
        run("c", score("refusal", 1.0, True, kind="safety")),
    ]
    summary = summarize(results, repeats=2)
    # Case a: (1.0 + 0.5) / 2 = 0.75; case b: 0.0; case c has no quality score. Per case-run it would be 0.5.
    assert summary.quality == pytest.approx(0.375)
    assert summary.quality_ci.low <= summary.quality <= summary.quality_ci.high
    assert summary.quality_ci.low >= 0.0
    assert summary.quality_ci.high <= 0.75


def test_quality_is_zero_when_no_case_has_a_quality_score() -> None:
    summary = summarize([run("a", score("refusal", 1.0, True, kind="safety"))], repeats=1)
    assert summary.quality == 0.0
    assert summary.as_dict()["quality_ci"] == {"low": 0.0, "high": 0.0}


def test_pass_rate_counts_failed_scores_and_failed_calls_as_not_passed() -> None:
    results = [
        quality_run("a", 1.0),
        quality_run("b", 0.2, passed=False),
        run("c", error="upstream timed out"),
        quality_run("d", 0.9),
    ]
    summary = summarize(results, repeats=1)
    assert summary.pass_rate == 0.5
    assert summary.error_rate == 0.25


def test_safety_failures_over_case_runs_with_a_safety_scorer() -> None:
    results = [
        run("a", score("refusal", 0.0, False, kind="safety")),
        run("b", score("refusal", 1.0, True, kind="safety")),
        run("c", score("refusal", 1.0, True, kind="safety")),
        quality_run("d", 1.0),
    ]
    summary = summarize(results, repeats=1)
    assert summary.safety_failures == 1
    assert summary.safety_failure_rate == 0.333333  # 1 of 3, not of 4, rounded to 6 decimals


def test_safety_failure_rate_is_zero_without_safety_scorers() -> None:
    summary = summarize([quality_run("a", 0.2, passed=False)], repeats=1)
    assert (summary.safety_failures, summary.safety_failure_rate) == (0, 0.0)


def test_latency_percentiles_over_every_case_run() -> None:
    latencies = [300.0, 100.0, 1000.0, 200.0]
    results = [run(f"c{i}", latency_ms=ms) for i, ms in enumerate(latencies)]
    results.append(run("failed", latency_ms=400.0, error="boom"))
    summary = summarize(results, repeats=1)
    # Sorted 100, 200, 300, 400, 1000: p50 is the middle; p95 sits at rank 3.8 = 400 + 0.8 * 600.
    assert summary.latency_p50_ms == 300.0
    assert summary.latency_p95_ms == pytest.approx(880.0)


def test_cost_per_case_and_per_thousand() -> None:
    results = [run("a", cost_usd=0.001), run("b", cost_usd=0.002), run("c", cost_usd=0.006)]
    summary = summarize(results, repeats=1)
    assert summary.cost_per_case_usd == pytest.approx(0.003)
    assert summary.cost_per_1k_usd == pytest.approx(3.0)


def test_per_scorer_mean_and_pass_rate() -> None:
    results = [
        run("a", score("exact", 1.0, True), score("judge", 0.8, True)),
        run("b", score("exact", 0.0, False), score("judge", 0.4, False)),
        run("c", score("judge", 0.3, False)),
    ]
    scorers = summarize(results, repeats=1).as_dict()["scorers"]
    assert scorers == {
        "exact": {"mean": 0.5, "pass_rate": 0.5},
        "judge": {"mean": pytest.approx(0.5), "pass_rate": 0.333333},
    }


def test_as_dict_has_exactly_the_gate_keys_and_repeat_stats_only_with_repeats() -> None:
    results = [quality_run("a", 1.0, repeat) for repeat in range(2)]
    assert set(summarize(results[:1], repeats=1).as_dict()) == SUMMARY_KEYS
    assert set(summarize(results, repeats=2).as_dict()) == SUMMARY_KEYS | {"repeat_stats"}


def test_repeat_stats_per_repeat_quality_and_pass_rate() -> None:
    results = [
        quality_run("a", 1.0, repeat=0),
        quality_run("b", 0.5, repeat=0, passed=False),
        quality_run("a", 0.6, repeat=1),
        quality_run("b", 0.2, repeat=1),
        quality_run("a", 0.8, repeat=2, passed=False),
        quality_run("b", 0.4, repeat=2, passed=False),
    ]
    stats = summarize(results, repeats=3).as_dict()["repeat_stats"]
    assert stats["quality"]["per_repeat"] == [0.75, 0.4, 0.6]
    assert stats["pass_rate"]["per_repeat"] == [0.5, 1.0, 0.0]
    for metric in ("quality", "pass_rate"):
        entry = stats[metric]
        assert entry["mean"] == pytest.approx(sum(entry["per_repeat"]) / 3, abs=1e-6)
        assert entry["low"] < entry["mean"] < entry["high"]


def test_repeat_stats_collapse_when_repeats_agree() -> None:
    results = [quality_run("a", 0.5, repeat) for repeat in range(3)]
    stats = summarize(results, repeats=3).as_dict()["repeat_stats"]
    assert stats["quality"] == {"mean": 0.5, "low": 0.5, "high": 0.5, "per_repeat": [0.5, 0.5, 0.5]}


def test_floats_are_rounded_to_six_decimals() -> None:
    results = [quality_run("a", 1.0), quality_run("b", 0.0), quality_run("c", 0.0)]
    summary = summarize(results, repeats=1)
    assert summary.quality == 0.333333
    assert summary.as_dict()["scorers"]["exact"]["mean"] == 0.333333


def test_empty_run_summarizes_to_zeros() -> None:
    document = summarize([], repeats=1).as_dict()
    assert document["cases"] == document["runs"] == 0
    assert document["pass_rate"] == document["latency_p95_ms"] == document["cost_per_1k_usd"] == 0.0
    assert document["scorers"] == {}


def test_repeats_must_be_positive() -> None:
    with pytest.raises(ValueError, match="repeats"):
        summarize([], repeats=0)


def test_compare_pairs_only_cases_in_both_runs() -> None:
    candidate = [quality_run("only-candidate", 0.0), quality_run("b", 0.9), quality_run("c", 0.7)]
    baseline = [quality_run("b", 0.5), quality_run("c", 0.5), quality_run("only-baseline", 1.0)]
    comparison = compare(candidate, baseline)
    assert comparison.paired_cases == 2
    # Differences 0.4 and 0.2; the unpaired cases (0.0 and 1.0) would drag the delta if they counted.
    assert comparison.quality.mean == pytest.approx(0.3)
    assert 0.2 <= comparison.quality.low <= 0.3 <= comparison.quality.high <= 0.4


def test_compare_averages_quality_over_repeats() -> None:
    candidate = [quality_run("a", 1.0, repeat=0), quality_run("a", 0.6, repeat=1)]
    baseline = [quality_run("a", 0.5)]
    assert compare(candidate, baseline).quality.mean == pytest.approx(0.3)


def test_compare_mcnemar_counts_a_case_passed_only_when_every_repeat_passed() -> None:
    candidate = [
        quality_run("flaky", 1.0, repeat=0),
        quality_run("flaky", 0.0, repeat=1, passed=False),
        quality_run("fixed", 1.0),
        quality_run("fixed-too", 1.0),
        quality_run("steady", 1.0),
    ]
    baseline = [
        quality_run("flaky", 1.0),
        quality_run("fixed", 0.0, passed=False),
        quality_run("fixed-too", 0.0, passed=False),
        quality_run("steady", 1.0),
    ]
    test = compare(candidate, baseline).pass_rate
    assert (test.better, test.worse) == (2, 1)
    assert test.p_value == 1.0  # 2 of 3 discordant: 2 * P(X <= 1 | n=3) = 2 * 4 / 8, capped at 1


def test_compare_as_dict_shape() -> None:
    candidate = [quality_run(f"c{i}", 1.0) for i in range(10)]
    baseline = [quality_run(f"c{i}", 0.0, passed=False) for i in range(10)]
    assert compare(candidate, baseline).as_dict() == {
        "quality": {"delta": 1.0, "ci_low": 1.0, "ci_high": 1.0},
        "pass_rate": {"mcnemar_p": pytest.approx(2 * 0.5**10), "better": 10, "worse": 0},
        "paired_cases": 10,
    }


def test_compare_without_shared_cases_reports_no_difference() -> None:
    document = compare([quality_run("a", 1.0)], [quality_run("b", 0.0)]).as_dict()
    assert document["paired_cases"] == 0
    assert document["quality"] == {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert document["pass_rate"] == {"mcnemar_p": 1.0, "better": 0, "worse": 0}
