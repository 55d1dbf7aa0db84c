"""Run statistics against hand-computed examples and the properties every interval must keep."""

from __future__ import annotations

import math

import pytest

from lockgate.evals.stats import Interval, bootstrap_ci, mcnemar, mean_ci, paired_bootstrap, percentile

# Student t quantile t(0.975, df=2), from a printed t table.
T_975_DF2 = 4.302653


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0, 1.0), (50, 2.5), (95, 3.85), (100, 4.0), (25, 1.75)],
)
def test_percentile_interpolates_linearly(q: float, expected: float) -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], q) == pytest.approx(expected)


def test_percentile_of_nothing_is_zero_and_of_one_value_is_that_value() -> None:
    assert percentile([], 95) == 0.0
    assert percentile([7.5], 95) == 7.5


def test_mean_ci_is_the_student_t_interval() -> None:
    interval = mean_ci([1.0, 2.0, 3.0])
    half_width = T_975_DF2 * 1.0 / math.sqrt(3)  # sample sd of 1, 2, 3 is 1
    assert interval.mean == pytest.approx(2.0)
    assert interval.low == pytest.approx(2.0 - half_width, abs=1e-5)
    assert interval.high == pytest.approx(2.0 + half_width, abs=1e-5)


def test_mean_ci_narrows_with_more_data_and_widens_with_confidence() -> None:
    few = mean_ci([0.2, 0.8, 0.4, 0.6])
    many = mean_ci([0.2, 0.8, 0.4, 0.6] * 10)
    loose = mean_ci([0.2, 0.8, 0.4, 0.6], confidence=0.5)
    assert few.low < few.mean < few.high
    assert many.high - many.low < few.high - few.low
    assert loose.high - loose.low < few.high - few.low


@pytest.mark.parametrize("values", [[0.7], [0.7, 0.7, 0.7]])
def test_mean_ci_without_spread_is_a_point(values: list[float]) -> None:
    interval = mean_ci(values)
    assert interval.mean == pytest.approx(0.7)
    assert interval.low == interval.mean == interval.high


def test_mean_ci_of_nothing_is_zero() -> None:
    assert mean_ci([]) == Interval(0.0, 0.0, 0.0)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95.0, -0.5])
def test_confidence_outside_zero_one_is_refused(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=confidence)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=confidence)


def test_bootstrap_of_two_points_spans_both() -> None:
    # Resampled means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4: the 95% interval is [0, 1].
    assert bootstrap_ci([0.0, 1.0]) == Interval(0.5, 0.0, 1.0)
    # ... and the 40% interval only holds the middle value.
    assert bootstrap_ci([0.0, 1.0], confidence=0.4) == Interval(0.5, 0.5, 0.5)


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    values = [0.1, 0.9, 0.35, 0.6, 0.72, 0.05, 0.5, 0.44]
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_bootstrap_contains_the_mean_inside_the_data_range_and_narrows_with_more_data() -> None:
    values = [0.1, 0.9, 0.35, 0.6, 0.72, 0.05, 0.5, 0.44]
    few, many = bootstrap_ci(values), bootstrap_ci(values * 20)
    assert few.mean == pytest.approx(sum(values) / len(values))
    assert min(values) <= few.low < few.mean < few.high <= max(values)
    assert many.high - many.low < (few.high - few.low) / 2


def test_bootstrap_of_one_value_or_nothing_is_a_point() -> None:
    assert bootstrap_ci([0.3]) == Interval(0.3, 0.3, 0.3)
    assert bootstrap_ci([]) == Interval(0.0, 0.0, 0.0)


def test_bootstrap_needs_resamples() -> None:
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci([1.0, 2.0], resamples=0)


def test_paired_bootstrap_resamples_pairs_not_each_side() -> None:
    # Every candidate is exactly 0.1 above its baseline: pairing removes all the spread between cases.
    baseline = [0.0, 0.4, 0.8]
    candidate = [0.1, 0.5, 0.9]
    delta = paired_bootstrap(candidate, baseline)
    assert delta.mean == pytest.approx(0.1)
    assert delta.low == pytest.approx(0.1)
    assert delta.high == pytest.approx(0.1)


def test_paired_bootstrap_interval_covers_mixed_differences() -> None:
    delta = paired_bootstrap([0.9, 0.2, 0.8, 0.7], [0.5, 0.6, 0.5, 0.5])  # differences .4, -.4, .3, .2
    assert delta.mean == pytest.approx(0.125)
    assert -0.4 <= delta.low < 0.125 < delta.high <= 0.4


def test_paired_bootstrap_refuses_unpaired_lengths() -> None:
    with pytest.raises(ValueError, match="3 candidate vs 2 baseline"):
        paired_bootstrap([0.1, 0.2, 0.3], [0.1, 0.2])


def test_mcnemar_all_discordant_pairs_one_way() -> None:
    result = mcnemar([True] * 10, [False] * 10)
    assert (result.better, result.worse) == (10, 0)
    assert result.p_value == pytest.approx(2 * 0.5**10)


def test_mcnemar_is_symmetric() -> None:
    forward = mcnemar([True, True, True, False, True], [False, False, False, True, True])
    backward = mcnemar([False, False, False, True, True], [True, True, True, False, True])
    assert (forward.better, forward.worse) == (3, 1)
    assert (backward.better, backward.worse) == (1, 3)
    # Two-sided exact binomial, 3 of 4 discordant: 2 * P(X <= 1) = 2 * (1 + 4) / 16.
    assert forward.p_value == pytest.approx(0.625)
    assert backward.p_value == pytest.approx(forward.p_value)


def test_mcnemar_ignores_concordant_pairs() -> None:
    small = mcnemar([True, True, False], [False, False, True])
    padded = mcnemar(
        [True, True, False] + [True] * 50 + [False] * 50, [False, False, True] + [True] * 50 + [False] * 50
    )
    assert small == padded


def test_mcnemar_without_discordant_pairs_has_p_one() -> None:
    assert mcnemar([True, False, True], [True, False, True]).p_value == 1.0
    assert mcnemar([], []).p_value == 1.0


def test_mcnemar_refuses_unpaired_lengths() -> None:
    with pytest.raises(ValueError, match="paired"):
        mcnemar([True], [True, False])
