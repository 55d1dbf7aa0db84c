"""The statistics an eval run is judged by: percentiles, confidence intervals and paired tests.

Everything here is a thin, typed layer over numpy and scipy so the formulas are the textbook ones:

- ``percentile`` interpolates linearly between order statistics (numpy's default);
- ``mean_ci`` is the Student-t interval of a mean, used across repeats of a run;
- ``bootstrap_ci`` is the percentile bootstrap of a mean, used across cases, whose scores are
  bounded and rarely normal; it is seeded so a report re-rendered from the same results is identical;
- ``paired_bootstrap`` resamples (candidate, baseline) pairs, which is the bootstrap of their differences;
- ``mcnemar`` is the exact test on discordant pass/fail pairs (a two-sided binomial test at p = 0.5).

Point estimates use ``statistics.fmean`` (correctly rounded), so identical values average to
themselves. Degenerate inputs never raise: no values gives zeros, a single value (or no spread)
gives a zero-width interval at the mean, no discordant pairs gives p = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean

# numpy and scipy.stats are imported where they are used: together they are a large part of the
# server's start-up, and only finishing an eval run computes intervals.


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with the bounds of its confidence interval."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class McNemar:
    """Discordant pairs of a paired pass/fail comparison and the exact two-sided p-value."""

    better: int
    worse: int
    p_value: float


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; 0.0 for no values."""
    import numpy as np

    if not values:
        return 0.0
    return float(np.percentile(np.asarray(values, dtype=float), q))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t confidence interval of the mean of ``values``."""
    import numpy as np

    _check_confidence(confidence)
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Interval(0.0, 0.0, 0.0)
    mean = fmean(data)
    if np.ptp(data) == 0:
        return Interval(mean, mean, mean)
    from scipy import stats

    low, high = stats.t.interval(confidence, data.size - 1, loc=mean, scale=float(stats.sem(data)))
    return Interval(mean, float(low), float(high))


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """Percentile-bootstrap confidence interval of the mean; the same seed gives the same interval."""
    import numpy as np

    _check_confidence(confidence)
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Interval(0.0, 0.0, 0.0)
    mean = fmean(data)
    if data.size == 1:
        return Interval(mean, mean, mean)
    from scipy import stats

    result = stats.bootstrap(
        (data,),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return Interval(mean, float(result.confidence_interval.low), float(result.confidence_interval.high))


def paired_bootstrap(
    candidate: Sequence[float],
    baseline: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of mean(candidate - baseline), resampling the pairs together."""
    import numpy as np

    _check_paired(len(candidate), len(baseline))
    differences = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    return bootstrap_ci(differences.tolist(), confidence, resamples, seed)


def mcnemar(candidate_pass: Sequence[bool], baseline_pass: Sequence[bool]) -> McNemar:
    """Exact McNemar test: ``better`` counts cases only the candidate passes, ``worse`` the reverse."""
    _check_paired(len(candidate_pass), len(baseline_pass))
    pairs = list(zip(candidate_pass, baseline_pass, strict=True))
    better = sum(1 for cand, base in pairs if cand and not base)
    worse = sum(1 for cand, base in pairs if base and not cand)
    discordant = better + worse
    if discordant == 0:
        return McNemar(better, worse, 1.0)
    from scipy import stats

    p_value = float(stats.binomtest(better, discordant, 0.5, alternative="two-sided").pvalue)
    return McNemar(better, worse, p_value)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _check_paired(candidate: int, baseline: int) -> None:
    if candidate != baseline:
        raise ValueError(
            f"candidate and baseline must be paired: {candidate} candidate vs {baseline} baseline values"
        )
