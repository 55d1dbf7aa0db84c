"""Aggregate one run's case results into the metrics that gates, reports and evidence read.

``summarize`` turns every case-run of a run into a ``RunSummary`` whose ``as_dict()`` is the exact
document the Rego gate policies see, so its keys are a contract. Decisions:

- quality is averaged per case first (mean over repeats), then across cases, so a case run five
  times weighs as much as a case run once; cases no quality scorer applies to are left out;
- its interval is a case-level bootstrap (scores are bounded and skewed); the spread across repeats,
  when there are several, is a Student-t interval in ``repeat_stats``;
- latency and cost are taken over every case-run, failed calls included, since users pay for those too;
- every float is rounded to 6 decimals so the document (and any hash of it) is stable.

``compare`` pairs a candidate run with a baseline run on the cases both ran: the quality delta gets a
paired bootstrap interval (rounded like the summary) and the pass rate an exact McNemar test (its
p-value kept unrounded: small p-values are the ones that matter).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from lockgate.evals.cases import CaseResult
from lockgate.evals.stats import (
    Interval,
    McNemar,
    bootstrap_ci,
    mcnemar,
    mean_ci,
    paired_bootstrap,
    percentile,
)

DECIMALS = 6


@dataclass(frozen=True, slots=True)
class ScorerStats:
    """One scorer across the run: its mean value and the share of case-runs it passed."""

    mean: float
    pass_rate: float


@dataclass(frozen=True, slots=True)
class RepeatStats:
    """A metric computed per repeat, with the t-interval of its mean across repeats."""

    mean: float
    low: float
    high: float
    per_repeat: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run's metrics; ``as_dict()`` is the document the gate policies read."""

    cases: int
    runs: int
    quality: float
    quality_ci: Interval
    pass_rate: float
    safety_failures: int
    safety_failure_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    cost_per_case_usd: float
    cost_per_1k_usd: float
    error_rate: float
    scorers: Mapping[str, ScorerStats]
    repeat_stats: Mapping[str, RepeatStats] | None = None

    def as_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "cases": self.cases,
            "runs": self.runs,
            "quality": self.quality,
            "quality_ci": {"low": self.quality_ci.low, "high": self.quality_ci.high},
            "pass_rate": self.pass_rate,
            "safety_failures": self.safety_failures,
            "safety_failure_rate": self.safety_failure_rate,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "cost_per_case_usd": self.cost_per_case_usd,
            "cost_per_1k_usd": self.cost_per_1k_usd,
            "error_rate": self.error_rate,
            "scorers": {
                name: {"mean": stat.mean, "pass_rate": stat.pass_rate} for name, stat in self.scorers.items()
            },
        }
        if self.repeat_stats is not None:
            document["repeat_stats"] = {
                metric: {
                    "mean": stat.mean,
                    "low": stat.low,
                    "high": stat.high,
                    "per_repeat": list(stat.per_repeat),
                }
                for metric, stat in self.repeat_stats.items()
            }
        return document


@dataclass(frozen=True, slots=True)
class Comparison:
    """A candidate run against a baseline on the cases both ran."""

    quality: Interval
    pass_rate: McNemar
    paired_cases: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "quality": {"delta": self.quality.mean, "ci_low": self.quality.low, "ci_high": self.quality.high},
            "pass_rate": {
                "mcnemar_p": self.pass_rate.p_value,
                "better": self.pass_rate.better,
                "worse": self.pass_rate.worse,
            },
            "paired_cases": self.paired_cases,
        }


def summarize(results: Sequence[CaseResult], repeats: int) -> RunSummary:
    """The run's metrics over every case-run in ``results`` (``repeats`` is the run's setting)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    case_quality = list(_case_quality(results).values())
    mean_cost = fmean(r.outcome.cost_usd for r in results) if results else 0.0
    latencies = [r.outcome.latency_ms for r in results]
    safety = [r.safety_failed for r in results if r.safety_failed is not None]
    return RunSummary(
        cases=len({r.case.id for r in results}),
        runs=len(results),
        quality=_round(fmean(case_quality) if case_quality else 0.0),
        quality_ci=_round_interval(bootstrap_ci(case_quality)),
        pass_rate=_round(_pass_rate(results)),
        safety_failures=sum(safety),
        safety_failure_rate=_round(_ratio(sum(safety), len(safety))),
        latency_p50_ms=_round(percentile(latencies, 50)),
        latency_p95_ms=_round(percentile(latencies, 95)),
        cost_per_case_usd=_round(mean_cost),
        cost_per_1k_usd=_round(mean_cost * 1000),
        error_rate=_round(_ratio(sum(r.outcome.error is not None for r in results), len(results))),
        scorers=_scorer_stats(results),
        repeat_stats=_repeat_stats(results, repeats) if repeats > 1 else None,
    )


def compare(candidate: Sequence[CaseResult], baseline: Sequence[CaseResult]) -> Comparison:
    """Pair the runs by case id (each case averaged over its repeats) and test the differences."""
    candidate_quality, baseline_quality = _case_quality(candidate), _case_quality(baseline)
    candidate_passed, baseline_passed = _case_passed(candidate), _case_passed(baseline)
    paired = sorted(candidate_passed.keys() & baseline_passed.keys())
    scored = [case for case in paired if case in candidate_quality and case in baseline_quality]
    delta = paired_bootstrap([candidate_quality[c] for c in scored], [baseline_quality[c] for c in scored])
    test = mcnemar([candidate_passed[c] for c in paired], [baseline_passed[c] for c in paired])
    return Comparison(
        quality=_round_interval(delta),
        pass_rate=test,
        paired_cases=len(paired),
    )


def _case_quality(results: Sequence[CaseResult]) -> dict[str, float]:
    """Each case's mean quality across its repeats; cases without any quality score are absent."""
    by_case: dict[str, list[float]] = defaultdict(list)
    for result in results:
        if result.quality is not None:
            by_case[result.case.id].append(result.quality)
    return {case: fmean(values) for case, values in by_case.items()}


def _case_passed(results: Sequence[CaseResult]) -> dict[str, bool]:
    """Whether each case passed on every one of its repeats."""
    passed: dict[str, bool] = {}
    for result in results:
        passed[result.case.id] = passed.get(result.case.id, True) and result.passed
    return passed


def _pass_rate(results: Sequence[CaseResult]) -> float:
    return _ratio(sum(r.passed for r in results), len(results))


def _scorer_stats(results: Sequence[CaseResult]) -> dict[str, ScorerStats]:
    by_scorer: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for result in results:
        for score in result.scores:
            by_scorer[score.scorer].append((score.value, score.passed))
    return {
        name: ScorerStats(
            mean=_round(fmean(value for value, _ in verdicts)),
            pass_rate=_round(_ratio(sum(passed for _, passed in verdicts), len(verdicts))),
        )
        for name, verdicts in sorted(by_scorer.items())
    }


def _repeat_stats(results: Sequence[CaseResult], repeats: int) -> dict[str, RepeatStats]:
    """Quality and pass rate of each repeat taken on its own; repeats without results are skipped."""
    by_repeat = [[r for r in results if r.repeat == repeat] for repeat in range(repeats)]
    present = [rows for rows in by_repeat if rows]
    quality = [fmean(values) for rows in present if (values := list(_case_quality(rows).values()))]
    return {
        "quality": _repeat_interval(quality),
        "pass_rate": _repeat_interval([_pass_rate(rows) for rows in present]),
    }


def _repeat_interval(per_repeat: list[float]) -> RepeatStats:
    interval = _round_interval(mean_ci(per_repeat))
    return RepeatStats(interval.mean, interval.low, interval.high, tuple(_round(v) for v in per_repeat))


def _ratio(count: int, total: int) -> float:
    return count / total if total else 0.0


def _round(value: float) -> float:
    return round(value, DECIMALS)


def _round_interval(interval: Interval) -> Interval:
    return Interval(_round(interval.mean), _round(interval.low), _round(interval.high))
