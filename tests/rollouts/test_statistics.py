"""Rollout statistics against scipy, textbook examples, Monte Carlo estimates and their own invariants."""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import pytest
from scipy import stats

from lockgate.rollouts import statistics as rollout_stats
from lockgate.rollouts.statistics import (
    Alternative,
    TestResult,
    mann_whitney_u,
    min_sample_size,
    prob_b_beats_a,
    sample_ratio_mismatch,
    thompson_weights,
    two_proportion_z,
    welch_t,
)

ALTERNATIVES: tuple[Alternative, ...] = get_args(Alternative)
SEEDS = (1, 7, 42, 2024)


def _scipy_p_from_z(z: float, alternative: Alternative) -> float:
    if alternative == "two-sided":
        return float(2.0 * stats.norm.sf(abs(z)))
    if alternative == "greater":
        return float(stats.norm.sf(z))
    return float(stats.norm.cdf(z))


# --- two_proportion_z -------------------------------------------------------------------------------


@pytest.mark.parametrize("alternative", ALTERNATIVES)
@pytest.mark.parametrize("seed", SEEDS)
def test_two_proportion_z_matches_the_pooled_z_test(seed: int, alternative: Alternative) -> None:
    rng = np.random.default_rng(seed)
    n_a, n_b = int(rng.integers(200, 5000)), int(rng.integers(200, 5000))
    s_a = int(rng.binomial(n_a, 0.1))
    s_b = int(rng.binomial(n_b, 0.12))

    result = two_proportion_z(s_a, n_a, s_b, n_b, alternative)

    pooled = (s_a + s_b) / (n_a + n_b)
    z = (s_b / n_b - s_a / n_a) / math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    assert result.statistic == pytest.approx(z, rel=1e-12)
    assert result.p_value == pytest.approx(_scipy_p_from_z(z, alternative), rel=1e-9, abs=1e-300)
    assert result.effect == pytest.approx(s_b / n_b - s_a / n_a, rel=1e-12)
    assert (result.n_a, result.n_b) == (n_a, n_b)


def test_two_proportion_z_on_the_physicians_health_study() -> None:
    # The aspirin arm of the Physicians' Health Study as tabulated in Agresti, "An Introduction to
    # Categorical Data Analysis" (section 2.2): myocardial infarction in 189 of 11,034 on placebo and
    # 104 of 11,037 on aspirin, a difference of proportions of 0.0171 - 0.0094 = 0.0077.
    result = two_proportion_z(189, 11_034, 104, 11_037)
    assert result.effect == pytest.approx(-0.0077, abs=5e-5)
    # Independent check: for a 2x2 table, z squared is Pearson's chi-square without Yates' correction,
    # and the two-sided p-values are the same.
    chi2, p_value, _, _ = stats.chi2_contingency([[189, 11_034 - 189], [104, 11_037 - 104]], correction=False)
    assert result.statistic**2 == pytest.approx(chi2, rel=1e-10)
    assert result.statistic < 0  # fewer infarctions on aspirin
    assert result.p_value == pytest.approx(p_value, rel=1e-8)
    assert result.p_value < 1e-5
    # The one-sided tests split the two-sided p-value in the direction of the difference.
    assert two_proportion_z(189, 11_034, 104, 11_037, "less").p_value == pytest.approx(p_value / 2, rel=1e-8)
    assert two_proportion_z(189, 11_034, 104, 11_037, "greater").p_value == pytest.approx(1 - p_value / 2)


@pytest.mark.parametrize(("s_a", "s_b"), [(0, 0), (50, 80)])
def test_two_proportion_z_without_variance_is_no_evidence(s_a: int, s_b: int) -> None:
    n_a, n_b = (50, 80) if s_a else (30, 40)  # all successes (50/50, 80/80) or none (0/30, 0/40)
    for alternative in ALTERNATIVES:
        result = two_proportion_z(s_a, n_a, s_b, n_b, alternative)
        assert result == TestResult(0.0, 1.0, 0.0, n_a, n_b)


def test_two_proportion_z_refuses_bad_counts() -> None:
    with pytest.raises(ValueError, match="at least one trial"):
        two_proportion_z(0, 0, 1, 10)
    with pytest.raises(ValueError, match="at least one trial"):
        two_proportion_z(1, 10, 0, 0)
    with pytest.raises(ValueError, match=r"successes_b \(11\) cannot exceed n_b \(10\)"):
        two_proportion_z(1, 10, 11, 10)
    with pytest.raises(ValueError, match="successes_a must not be negative"):
        two_proportion_z(-1, 10, 1, 10)
    with pytest.raises(ValueError, match="integer count"):
        two_proportion_z(1.5, 10, 1, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alternative must be one of"):
        two_proportion_z(1, 10, 1, 10, "bigger")  # type: ignore[arg-type]


def test_two_proportion_z_accepts_numpy_integers() -> None:
    result = two_proportion_z(np.int64(10), np.int64(100), np.int64(20), np.int64(100))  # type: ignore[arg-type]
    assert result == two_proportion_z(10, 100, 20, 100)


# --- welch_t ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("alternative", ALTERNATIVES)
@pytest.mark.parametrize("seed", SEEDS)
def test_welch_t_matches_scipy(seed: int, alternative: Alternative) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(100.0, 15.0, size=int(rng.integers(5, 60))).tolist()
    b = rng.normal(104.0, 30.0, size=int(rng.integers(5, 60))).tolist()

    result = welch_t(a, b, alternative)

    # scipy's statistic is mean(first) - mean(second): pass the candidate first.
    expected = stats.ttest_ind(b, a, equal_var=False, alternative=alternative)
    assert result.statistic == pytest.approx(float(expected.statistic), rel=1e-9)
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-9)
    assert result.effect == pytest.approx(float(np.mean(b) - np.mean(a)), rel=1e-9)
    assert (result.n_a, result.n_b) == (len(a), len(b))


# scipy warns that the constant side's variance is "nearly identical" data; it is exactly 0 here.
@pytest.mark.filterwarnings("ignore:Precision loss occurred in moment calculation:RuntimeWarning")
def test_welch_t_with_one_constant_side_matches_scipy() -> None:
    a = [5.0, 5.0, 5.0, 5.0]
    b = [5.5, 6.1, 4.9, 6.3, 5.8]
    result = welch_t(a, b, "greater")
    expected = stats.ttest_ind(b, a, equal_var=False, alternative="greater")
    assert result.statistic == pytest.approx(float(expected.statistic), rel=1e-9)
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-9)


def test_welch_t_without_spread_on_either_side() -> None:
    for alternative in ALTERNATIVES:
        assert welch_t([3.0, 3.0], [3.0, 3.0, 3.0], alternative) == TestResult(0.0, 1.0, 0.0, 2, 3)
    higher = welch_t([3.0, 3.0], [4.0, 4.0])
    assert (higher.statistic, higher.p_value, higher.effect) == (math.inf, 0.0, 1.0)
    assert welch_t([3.0, 3.0], [4.0, 4.0], "greater").p_value == 0.0
    # A one-sided alternative pointing away from the difference has no evidence at all.
    assert welch_t([3.0, 3.0], [4.0, 4.0], "less").p_value == 1.0
    lower = welch_t([3.0, 3.0], [2.0, 2.0], "less")
    assert (lower.statistic, lower.p_value) == (-math.inf, 0.0)


def test_welch_t_refuses_too_few_or_non_finite_values() -> None:
    with pytest.raises(ValueError, match="a needs at least 2 values, got 1"):
        welch_t([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="b needs at least 2 values, got 0"):
        welch_t([1.0, 2.0], [])
    with pytest.raises(ValueError, match="only finite"):
        welch_t([1.0, math.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="alternative"):
        welch_t([1.0, 2.0], [1.0, 2.0], "two_sided")  # type: ignore[arg-type]


# --- mann_whitney_u ---------------------------------------------------------------------------------


def _common_language_effect(a: list[float], b: list[float]) -> float:
    """P(b > a) + P(b = a) / 2 - 0.5 by comparing every pair."""
    wins = sum(1.0 if y > x else 0.5 if y == x else 0.0 for x in a for y in b)
    return wins / (len(a) * len(b)) - 0.5


@pytest.mark.parametrize("alternative", ALTERNATIVES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tied", [False, True])
def test_mann_whitney_u_matches_scipy(seed: int, alternative: Alternative, tied: bool) -> None:
    rng = np.random.default_rng(seed)
    a = rng.lognormal(0.0, 1.0, size=int(rng.integers(5, 80)))
    b = rng.lognormal(0.3, 1.0, size=int(rng.integers(5, 80)))
    if tied:  # coarse latencies: many ties, which the variance must correct for
        a, b = np.round(a), np.round(b)

    result = mann_whitney_u(a.tolist(), b.tolist(), alternative)

    # scipy reports U of its first sample: pass the candidate first.
    expected = stats.mannwhitneyu(b, a, method="asymptotic", use_continuity=True, alternative=alternative)
    assert result.statistic == pytest.approx(float(expected.statistic), rel=1e-12)
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-9)
    assert result.effect == pytest.approx(_common_language_effect(a.tolist(), b.tolist()), abs=1e-12)
    assert (result.n_a, result.n_b) == (a.size, b.size)


def test_mann_whitney_u_statistic_is_u_of_b() -> None:
    # b is entirely above a: every one of the 3 x 4 pairs is a win for b.
    result = mann_whitney_u([1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], "greater")
    assert result.statistic == 12.0
    assert result.effect == 0.5
    assert mann_whitney_u([4.0, 5.0, 6.0, 7.0], [1.0, 2.0, 3.0]).statistic == 0.0


def test_mann_whitney_u_with_every_value_tied_is_no_evidence() -> None:
    for alternative in ALTERNATIVES:
        result = mann_whitney_u([2.0, 2.0, 2.0], [2.0, 2.0], alternative)
        assert result == TestResult(3.0, 1.0, 0.0, 3, 2)


def test_mann_whitney_u_refuses_empty_samples() -> None:
    with pytest.raises(ValueError, match="a needs at least 1 value, got 0"):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError, match="b needs at least 1 value, got 0"):
        mann_whitney_u([1.0], [])
    with pytest.raises(ValueError, match="only finite"):
        mann_whitney_u([1.0], [math.inf])


# --- min_sample_size --------------------------------------------------------------------------------


def _formula(p1: float, p2: float, alpha: float, power: float, tails: int) -> float:
    """Fleiss' per-arm sample size, without continuity correction, written out independently."""
    z_alpha = stats.norm.ppf(1 - alpha / tails)
    z_beta = stats.norm.ppf(power)
    p_bar = (p1 + p2) / 2
    root = z_alpha * math.sqrt(2 * p_bar * (1 - p_bar)) + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return float(root**2 / (p2 - p1) ** 2)


def test_min_sample_size_for_a_two_point_lift_on_ten_percent() -> None:
    # 10% -> 12%, alpha 0.05 two-sided, power 0.8: the formula gives 3840.8, i.e. 3,841 per arm.
    assert _formula(0.10, 0.12, 0.05, 0.8, 2) == pytest.approx(3840.8, abs=0.05)
    assert min_sample_size(0.10, 0.02) == 3841
    assert min_sample_size(0.10, 0.02) == math.ceil(_formula(0.10, 0.12, 0.05, 0.8, 2))


def test_min_sample_size_matches_r_power_prop_test() -> None:
    # R's documentation of stats::power.prop.test (which solves this same formula) gives, as an example,
    # power.prop.test(p1 = .50, p2 = .75, power = .90) => n = 76.7 per group.
    assert _formula(0.50, 0.75, 0.05, 0.9, 2) == pytest.approx(76.7, abs=0.05)
    assert min_sample_size(0.50, 0.25, power=0.9) == 77


@pytest.mark.parametrize(
    ("baseline", "effect", "alpha", "power", "alternative"),
    [
        (0.10, 0.02, 0.05, 0.8, "two-sided"),
        (0.02, -0.005, 0.01, 0.9, "two-sided"),
        (0.30, 0.05, 0.05, 0.8, "greater"),
        (0.05, -0.01, 0.10, 0.95, "less"),
        (0.0, 0.01, 0.05, 0.8, "greater"),
    ],
)
def test_min_sample_size_is_the_smallest_n_with_the_power(
    baseline: float, effect: float, alpha: float, power: float, alternative: Alternative
) -> None:
    n = min_sample_size(baseline, effect, alpha, power, alternative)
    tails = 2 if alternative == "two-sided" else 1
    assert n == math.ceil(_formula(baseline, baseline + effect, alpha, power, tails))

    # The normal-approximation power of the z-test (ignoring the far tail) reaches the target at n and
    # not at n - 1.
    p1, p2 = baseline, baseline + effect
    p_bar = (p1 + p2) / 2
    sigma_0 = math.sqrt(2 * p_bar * (1 - p_bar))
    sigma_1 = math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))

    def achieved(size: int) -> float:
        z_alpha = stats.norm.ppf(1 - alpha / tails)
        return float(stats.norm.cdf((abs(effect) * math.sqrt(size) - z_alpha * sigma_0) / sigma_1))

    assert achieved(n) >= power
    assert achieved(n - 1) < power


def test_min_sample_size_one_sided_needs_fewer_and_smaller_effects_need_more() -> None:
    assert min_sample_size(0.10, 0.02, alternative="greater") < min_sample_size(0.10, 0.02)
    # The formula is symmetric in the two rates: 12% -> 10% needs what 10% -> 12% does.
    assert min_sample_size(0.12, -0.02, alternative="less") == min_sample_size(
        0.10, 0.02, alternative="greater"
    )
    assert min_sample_size(0.10, 0.01) > min_sample_size(0.10, 0.02)
    assert min_sample_size(0.10, 0.02, power=0.9) > min_sample_size(0.10, 0.02)


def test_min_sample_size_refuses_impossible_designs() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        min_sample_size(0.1, 0.0)
    with pytest.raises(ValueError, match="baseline_rate must be a proportion"):
        min_sample_size(1.5, 0.1)
    with pytest.raises(ValueError, match=r"baseline_rate \+ min_detectable_effect"):
        min_sample_size(0.95, 0.1)
    with pytest.raises(ValueError, match="'greater' detects an increase"):
        min_sample_size(0.1, -0.02, alternative="greater")
    with pytest.raises(ValueError, match="'less' detects a decrease"):
        min_sample_size(0.1, 0.02, alternative="less")
    with pytest.raises(ValueError, match="alpha must be strictly between 0 and 1"):
        min_sample_size(0.1, 0.02, alpha=0.0)
    with pytest.raises(ValueError, match="power must be strictly between 0 and 1"):
        min_sample_size(0.1, 0.02, power=1.0)
    with pytest.raises(ValueError, match="finite"):
        min_sample_size(math.nan, 0.02)


# --- prob_b_beats_a ---------------------------------------------------------------------------------


def _monte_carlo(s_a: int, n_a: int, s_b: int, n_b: int, prior: tuple[float, float], seed: int) -> float:
    rng = np.random.default_rng(seed)
    draws = 1_000_000
    p_a = rng.beta(prior[0] + s_a, prior[1] + n_a - s_a, size=draws)
    p_b = rng.beta(prior[0] + s_b, prior[1] + n_b - s_b, size=draws)
    return float(np.mean(p_b > p_a))


@pytest.mark.parametrize(
    ("s_a", "n_a", "s_b", "n_b", "prior"),
    [
        (10, 100, 15, 100, (1.0, 1.0)),  # exact sum
        (120, 1000, 100, 1000, (1.0, 1.0)),  # exact sum, b worse
        (3, 20, 7, 25, (2.0, 5.0)),  # exact sum, informative integer prior
        (10, 100, 15, 100, (0.5, 0.5)),  # Jeffreys prior: non-integer alpha, integration
        (40, 90, 52, 110, (1.0, 0.5)),  # integer alpha_b, non-integer betas: still the exact sum
        (20_000, 200_000, 20_300, 200_000, (1.0, 1.0)),  # alpha_b over 10,000: integration
    ],
)
def test_prob_b_beats_a_matches_monte_carlo(
    s_a: int, n_a: int, s_b: int, n_b: int, prior: tuple[float, float]
) -> None:
    expected = _monte_carlo(s_a, n_a, s_b, n_b, prior, seed=s_a + s_b)
    assert prob_b_beats_a(s_a, n_a, s_b, n_b, prior) == pytest.approx(expected, abs=0.005)


@pytest.mark.parametrize(
    ("s_a", "n_a", "s_b", "n_b", "prior"),
    [
        (10, 100, 15, 100, (1.0, 1.0)),
        (0, 0, 3, 3, (1.0, 1.0)),
        (7, 50, 3, 20, (0.5, 0.5)),
        (20_000, 200_000, 20_300, 200_000, (1.0, 1.0)),
    ],
)
def test_prob_b_beats_a_is_symmetric(
    s_a: int, n_a: int, s_b: int, n_b: int, prior: tuple[float, float]
) -> None:
    # Continuous posteriors tie with probability 0, so exactly one of the two orders holds.
    forward = prob_b_beats_a(s_a, n_a, s_b, n_b, prior)
    backward = prob_b_beats_a(s_b, n_b, s_a, n_a, prior)
    assert forward + backward == pytest.approx(1.0, abs=1e-9)


def test_prob_b_beats_a_of_identical_arms_is_one_half() -> None:
    assert prob_b_beats_a(30, 100, 30, 100) == pytest.approx(0.5, abs=1e-12)
    assert prob_b_beats_a(0, 0, 0, 0) == pytest.approx(0.5, abs=1e-12)
    assert prob_b_beats_a(30, 100, 30, 100, prior=(0.5, 0.5)) == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize(
    ("alpha_a", "beta_a", "alpha_b", "beta_b"),
    [
        (11.0, 91.0, 16.0, 86.0),
        (1.0, 1.0, 1.0, 1.0),
        (2.0, 30.0, 9.0, 4.0),
        (501.0, 9501.0, 561.0, 9441.0),
        (3.5, 10.25, 12.0, 7.5),  # the sum only needs alpha_b to be an integer
        (20_001.0, 180_001.0, 20_301.0, 179_701.0),  # past the exact path's cut-off, still exact here
    ],
)
def test_exact_sum_and_integration_agree(
    alpha_a: float, beta_a: float, alpha_b: float, beta_b: float
) -> None:
    exact = rollout_stats._prob_b_beats_a_exact(alpha_a, beta_a, int(alpha_b), beta_b)
    integrated = rollout_stats._prob_b_beats_a_integrated(alpha_a, beta_a, alpha_b, beta_b)
    assert exact == pytest.approx(integrated, abs=1e-8)


def test_prob_b_beats_a_takes_the_documented_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: float) -> float:
        raise AssertionError("wrong path")

    with monkeypatch.context() as patch:
        patch.setattr(rollout_stats, "_prob_b_beats_a_integrated", refuse)
        prob_b_beats_a(10, 100, 15, 100)  # integer posteriors
        prob_b_beats_a(10, 100, 9_999, 20_000)  # alpha_b exactly 10,000
    with monkeypatch.context() as patch:
        patch.setattr(rollout_stats, "_prob_b_beats_a_exact", refuse)
        prob_b_beats_a(10, 100, 15, 100, prior=(0.5, 0.5))  # non-integer alpha_b
        prob_b_beats_a(10, 100, 10_000, 20_000)  # alpha_b 10,001


def test_prob_b_beats_a_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"successes_a \(5\) cannot exceed n_a \(4\)"):
        prob_b_beats_a(5, 4, 1, 4)
    with pytest.raises(ValueError, match="prior alpha must be a positive finite number"):
        prob_b_beats_a(1, 4, 1, 4, prior=(0.0, 1.0))
    with pytest.raises(ValueError, match="prior beta must be a positive finite number"):
        prob_b_beats_a(1, 4, 1, 4, prior=(1.0, math.inf))
    with pytest.raises(ValueError, match="n_b must not be negative"):
        prob_b_beats_a(1, 4, 0, -1)


# --- sample_ratio_mismatch --------------------------------------------------------------------------


def test_srm_even_split_is_not_flagged() -> None:
    result = sample_ratio_mismatch({"control": 5000, "candidate": 5000}, {"control": 0.5, "candidate": 0.5})
    assert result.p_value > 0.001
    assert result == TestResult(0.0, 1.0, 0.0, 10_000, 2)


def test_srm_skewed_split_is_flagged_and_matches_scipy() -> None:
    result = sample_ratio_mismatch({"control": 5000, "candidate": 5400}, {"control": 1, "candidate": 1})
    expected = stats.chisquare([5000, 5400], f_exp=[5200, 5200])
    assert result.p_value < 0.001
    assert result.statistic == pytest.approx(float(expected.statistic), rel=1e-12)
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-9)
    assert result.effect == pytest.approx(5400 / 10_400 - 0.5)
    assert (result.n_a, result.n_b) == (10_400, 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_srm_normalises_weights_and_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights = {"stable": 90.0, "canary": 5.0, "shadow": 5.0}
    counts = rng.multinomial(20_000, [0.9, 0.05, 0.05]).tolist()
    observed = dict(zip(weights, counts, strict=True))

    result = sample_ratio_mismatch(observed, weights)

    expected = stats.chisquare(counts, f_exp=[18_000, 1_000, 1_000])
    assert result.statistic == pytest.approx(float(expected.statistic), rel=1e-9)
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-9)
    assert result.effect == pytest.approx(
        max(abs(c / 20_000 - w / 100) for c, w in zip(counts, weights.values(), strict=True))
    )


def test_srm_zero_weight_arms() -> None:
    weights = {"a": 1.0, "b": 1.0, "off": 0.0}
    # An arm configured off with no traffic takes no part in the test.
    quiet = sample_ratio_mismatch({"a": 480, "b": 520, "off": 0}, weights)
    expected = stats.chisquare([480, 520])
    assert quiet.statistic == pytest.approx(float(expected.statistic))
    assert quiet.p_value == pytest.approx(float(expected.pvalue))
    assert quiet.n_b == 3
    # Any traffic on it is a broken split, whatever the other arms look like.
    leaking = sample_ratio_mismatch({"a": 500, "b": 500, "off": 1}, weights)
    assert (leaking.statistic, leaking.p_value) == (math.inf, 0.0)
    assert leaking.effect == pytest.approx(1 / 1001)  # the off arm: 1/1001 observed against 0 expected


def test_srm_with_nothing_observed_is_no_evidence() -> None:
    assert sample_ratio_mismatch({"a": 0, "b": 0}, {"a": 1, "b": 3}) == TestResult(0.0, 1.0, 0.0, 0, 2)


def test_srm_refuses_bad_inputs() -> None:
    with pytest.raises(
        ValueError, match=r"same arms: missing from observed \['b'\], without a weight \['c'\]"
    ):
        sample_ratio_mismatch({"a": 1, "c": 1}, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="at least one arm"):
        sample_ratio_mismatch({}, {})
    with pytest.raises(ValueError, match="at least one positive weight"):
        sample_ratio_mismatch({"a": 1, "b": 1}, {"a": 0.0, "b": 0.0})
    with pytest.raises(ValueError, match=r"expected_weights\['b'\] must be a non-negative"):
        sample_ratio_mismatch({"a": 1, "b": 1}, {"a": 1.0, "b": -1.0})
    with pytest.raises(ValueError, match=r"observed\['a'\] must not be negative"):
        sample_ratio_mismatch({"a": -1, "b": 1}, {"a": 1.0, "b": 1.0})


# --- thompson_weights -------------------------------------------------------------------------------


def test_thompson_weights_favour_a_clearly_better_arm() -> None:
    shares = thompson_weights({"good": (900.0, 100.0), "bad": (100.0, 900.0)}, seed=3)
    assert shares["good"] > 0.99
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
    assert list(shares) == ["good", "bad"]


def test_thompson_weights_respect_min_share() -> None:
    arms = {"good": (900.0, 100.0), "bad": (100.0, 900.0), "worse": (50.0, 950.0)}
    shares = thompson_weights(arms, min_share=0.3, seed=3)
    assert shares == pytest.approx({"good": 0.4, "bad": 0.3, "worse": 0.3}, abs=1e-12)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)


def test_thompson_weights_floor_lifts_low_arms_and_scales_the_rest() -> None:
    # Raw shares near (0.59, 0.38, 0.03): lifting the third to 0.25 scales the others to about (0.46, 0.29).
    arms = {"a": (60.0, 40.0), "b": (58.0, 42.0), "c": (50.0, 50.0)}
    raw = thompson_weights(arms, seed=11, draws=50_000)
    floored = thompson_weights(arms, min_share=0.25, seed=11, draws=50_000)
    assert all(share >= 0.25 - 1e-12 for share in floored.values())
    assert sum(floored.values()) == pytest.approx(1.0, abs=1e-12)
    lifted = [arm for arm in arms if raw[arm] < 0.25]
    assert lifted
    kept = [arm for arm in arms if arm not in lifted]
    for arm in lifted:
        assert floored[arm] == pytest.approx(0.25)
    scale = (1 - 0.25 * len(lifted)) / sum(raw[arm] for arm in kept)
    for arm in kept:
        assert floored[arm] == pytest.approx(raw[arm] * scale)
    # The floor for every arm at once is the uniform split.
    assert thompson_weights(arms, min_share=1 / 3, seed=11) == pytest.approx(
        {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    )


def test_floor_cascades_when_scaling_pushes_another_arm_below_it() -> None:
    # Lifting 0.09 to 0.2 scales 0.21 to 0.21 * 0.8 / 0.91 = 0.185 < 0.2, so it is lifted too.
    assert rollout_stats._apply_floor([0.7, 0.21, 0.09], 0.2) == pytest.approx([0.6, 0.2, 0.2], abs=1e-12)
    assert rollout_stats._apply_floor([0.5, 0.3, 0.2], 0.2) == [0.5, 0.3, 0.2]
    assert rollout_stats._apply_floor([1.0, 0.0, 0.0, 0.0], 0.1) == pytest.approx([0.7, 0.1, 0.1, 0.1])
    assert rollout_stats._apply_floor([0.9, 0.1], 0.0) == [0.9, 0.1]


def test_thompson_weights_are_reproducible_with_a_seed() -> None:
    arms = {"a": (12.5, 30.25), "b": (14.0, 29.0), "c": (3.0, 8.0)}  # fractional rewards are fine
    assert thompson_weights(arms, seed=99) == thompson_weights(arms, seed=99)
    assert thompson_weights(arms, seed=99) != thompson_weights(arms, seed=100)


def test_thompson_share_of_two_arms_estimates_prob_b_beats_a() -> None:
    shares = thompson_weights({"a": (10.0, 90.0), "b": (15.0, 85.0)}, draws=200_000, seed=5)
    # Standard error sqrt(0.85 * 0.15 / 200,000) is under 0.001.
    assert shares["b"] == pytest.approx(prob_b_beats_a(10, 100, 15, 100), abs=0.005)


def test_thompson_weights_of_a_single_arm() -> None:
    assert thompson_weights({"only": (0.0, 0.0)}, min_share=0.5, seed=1) == {"only": 1.0}


def test_thompson_weights_refuse_bad_inputs() -> None:
    with pytest.raises(ValueError, match="at least one arm"):
        thompson_weights({})
    with pytest.raises(ValueError, match=r"min_share 0.4 for 3 arms asks for 1.2 of the traffic"):
        thompson_weights({"a": (1.0, 1.0), "b": (1.0, 1.0), "c": (1.0, 1.0)}, min_share=0.4)
    with pytest.raises(ValueError, match="min_share must be between 0 and 1"):
        thompson_weights({"a": (1.0, 1.0)}, min_share=-0.1)
    with pytest.raises(ValueError, match="draws must be at least 1"):
        thompson_weights({"a": (1.0, 1.0)}, draws=0)
    with pytest.raises(ValueError, match="failures of arm 'b' must be a non-negative finite number"):
        thompson_weights({"a": (1.0, 1.0), "b": (1.0, -2.0)})
    with pytest.raises(ValueError, match="successes of arm 'a' must be a non-negative finite number"):
        thompson_weights({"a": (math.nan, 1.0)})
