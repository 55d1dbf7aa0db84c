"""The statistics a rollout is judged by: the candidate release's live traffic against the current one's.

Every comparison takes the control (the current release) as ``a`` and the candidate as ``b``; an
``alternative`` of ``"greater"`` asks whether ``b`` is greater than ``a``, ``"less"`` whether it is smaller.
Effects are always ``b`` minus ``a``.

- ``two_proportion_z``: the pooled two-proportion z-test (error rates, success rates);
- ``welch_t``: Welch's unequal-variance t-test (latencies, scores, costs);
- ``mann_whitney_u``: the Mann-Whitney U test with tie correction and the normal approximation with
  continuity correction, for skewed metrics where a t-test's mean is misleading;
- ``min_sample_size``: requests per arm a two-proportion z-test needs to detect a given change;
- ``prob_b_beats_a``: the Bayesian P(p_b > p_a) under Beta-Bernoulli posteriors;
- ``sample_ratio_mismatch``: the chi-square check that traffic was split as configured, since a broken
  split invalidates every other comparison;
- ``thompson_weights``: Thompson-sampling traffic shares for a multi-armed rollout.

The formulas are the textbook ones and are checked against scipy in the tests. Invalid inputs
(empty samples, counts out of range, unknown alternatives) raise ``ValueError`` naming the argument;
degenerate but valid inputs (no spread, no observations) return the conventional answer documented on
each function rather than NaN.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# numpy and scipy are imported where they are used: together they are a large part of the server's
# start-up, and only a running rollout analysis needs them.

Alternative = Literal["two-sided", "greater", "less"]

_ALTERNATIVES: tuple[str, ...] = get_args(Alternative)

# prob_b_beats_a sums one term per unit of b's posterior alpha; beyond this many it integrates instead.
_EXACT_SUM_MAX_TERMS = 10_000

# Mass of b's posterior left outside the integration interval of prob_b_beats_a, on each side.
_TAIL_MASS = 1e-13


@dataclass(frozen=True, slots=True)
class TestResult:
    """One comparison of a control (``a``) with a candidate (``b``).

    ``effect`` is ``b`` minus ``a``: a difference of proportions or of means, or for Mann-Whitney the
    common-language effect size P(b > a) + P(b = a) / 2 - 0.5.
    """

    __test__ = False  # not a pytest test class, whatever its name

    statistic: float
    p_value: float
    effect: float
    n_a: int
    n_b: int


def two_proportion_z(
    successes_a: int, n_a: int, successes_b: int, n_b: int, alternative: Alternative = "two-sided"
) -> TestResult:
    """Pooled two-proportion z-test of ``successes_b / n_b`` against ``successes_a / n_a``.

    z = (p_b - p_a) / sqrt(p (1 - p) (1/n_a + 1/n_b)) with the pooled proportion p. When p is 0 or 1
    (both proportions 0, or both 1) there is no variance and no evidence of a difference: the statistic
    is 0.0 and the p-value 1.0.
    """
    _check_alternative(alternative)
    n_a = _count("n_a", n_a)
    n_b = _count("n_b", n_b)
    successes_a = _count("successes_a", successes_a)
    successes_b = _count("successes_b", successes_b)
    if n_a == 0 or n_b == 0:
        raise ValueError(f"both arms need at least one trial, got n_a={n_a} and n_b={n_b}")
    _check_successes("successes_a", successes_a, "n_a", n_a)
    _check_successes("successes_b", successes_b, "n_b", n_b)

    p_a = successes_a / n_a
    p_b = successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    variance = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    if variance <= 0.0:
        return TestResult(0.0, 1.0, p_b - p_a, n_a, n_b)
    z = (p_b - p_a) / math.sqrt(variance)
    return TestResult(z, _normal_p_value(z, alternative), p_b - p_a, n_a, n_b)


def welch_t(a: Sequence[float], b: Sequence[float], alternative: Alternative = "two-sided") -> TestResult:
    """Welch's unequal-variance t-test of mean(b) against mean(a).

    t = (mean_b - mean_a) / sqrt(s_a^2 / n_a + s_b^2 / n_b) with Welch-Satterthwaite degrees of freedom.
    Each side needs at least two values. When neither side has any spread the t statistic is
    degenerate: equal means give statistic 0.0 and p-value 1.0; different means give a statistic of
    +/-inf and the p-value of that limit (0.0 two-sided or in the direction of the difference, 1.0 for a
    one-sided alternative pointing the other way).
    """
    _check_alternative(alternative)
    values_a = _sample("a", a, minimum=2)
    values_b = _sample("b", b, minimum=2)
    mean_a = fmean(values_a.tolist())
    mean_b = fmean(values_b.tolist())
    effect = mean_b - mean_a
    n_a, n_b = int(values_a.size), int(values_b.size)

    spread_a = float(values_a.max() - values_a.min())
    spread_b = float(values_b.max() - values_b.min())
    if spread_a == 0.0 and spread_b == 0.0:
        # No spread: each mean is exactly its (single) value, so this comparison is exact.
        if mean_a == mean_b:
            return TestResult(0.0, 1.0, 0.0, n_a, n_b)
        statistic = math.copysign(math.inf, effect)
        return TestResult(statistic, _limit_p_value(statistic, alternative), effect, n_a, n_b)

    from scipy import stats

    share_a = float(values_a.var(ddof=1)) / n_a
    share_b = float(values_b.var(ddof=1)) / n_b
    standard_error = math.sqrt(share_a + share_b)
    t = effect / standard_error
    df = (share_a + share_b) ** 2 / (share_a**2 / (n_a - 1) + share_b**2 / (n_b - 1))
    if alternative == "two-sided":
        p_value = 2.0 * float(stats.t.sf(abs(t), df))
    elif alternative == "greater":
        p_value = float(stats.t.sf(t, df))
    else:
        p_value = float(stats.t.cdf(t, df))
    return TestResult(t, min(1.0, p_value), effect, n_a, n_b)


def mann_whitney_u(
    a: Sequence[float], b: Sequence[float], alternative: Alternative = "two-sided"
) -> TestResult:
    """Mann-Whitney U test of b against a; the statistic is U of ``b``.

    U_b = R_b - n_b (n_b + 1) / 2 with R_b the sum of b's mid-ranks in the pooled sample. The p-value
    is the normal approximation with tie-corrected variance
    n_a n_b / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1))) and a continuity correction of 0.5 towards the
    mean (scipy's ``method="asymptotic", use_continuity=True``). ``effect`` is U_b / (n_a n_b) - 0.5,
    i.e. P(b > a) + P(b = a) / 2 - 0.5. Each side needs at least one value; when every value is tied
    there is no variance and the p-value is 1.0.
    """
    _check_alternative(alternative)
    values_a = _sample("a", a, minimum=1)
    values_b = _sample("b", b, minimum=1)

    import numpy as np
    from scipy import stats

    n_a, n_b = int(values_a.size), int(values_b.size)
    n = n_a + n_b
    pooled = np.concatenate([values_a, values_b])
    ranks = stats.rankdata(pooled)
    u_b = float(ranks[n_a:].sum()) - n_b * (n_b + 1) / 2.0
    u_a = n_a * n_b - u_b
    effect = u_b / (n_a * n_b) - 0.5

    _, tie_sizes = np.unique(pooled, return_counts=True)
    tie_term = sum(int(t) ** 3 - int(t) for t in tie_sizes)
    # Var(U) = n_a n_b ((n + 1) n (n - 1) - sum(t^3 - t)) / (12 n (n - 1)); the numerator in integers
    # so that "all values tied" is exactly zero.
    numerator = (n + 1) * n * (n - 1) - tie_term
    if numerator <= 0:
        return TestResult(u_b, 1.0, effect, n_a, n_b)
    sigma = math.sqrt(n_a * n_b * numerator / (12.0 * n * (n - 1)))
    mean = n_a * n_b / 2.0

    if alternative == "greater":
        u, factor = u_b, 1.0
    elif alternative == "less":
        u, factor = u_a, 1.0  # by symmetry, the upper tail of U_a is the lower tail of U_b
    else:
        u, factor = max(u_a, u_b), 2.0
    z = (u - mean - 0.5) / sigma
    p_value = factor * float(stats.norm.sf(z))
    return TestResult(u_b, min(1.0, max(0.0, p_value)), effect, n_a, n_b)


def min_sample_size(
    baseline_rate: float,
    min_detectable_effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: Alternative = "two-sided",
) -> int:
    """Trials per arm a two-proportion z-test needs to detect a change of ``min_detectable_effect``.

    With p1 = baseline_rate, p2 = p1 + min_detectable_effect and p = (p1 + p2) / 2:

        n = (z_alpha * sqrt(2 p (1 - p)) + z_beta * sqrt(p1 (1 - p1) + p2 (1 - p2)))^2 / (p2 - p1)^2

    rounded up, where z_alpha is the standard normal quantile at 1 - alpha/2 (two-sided) or 1 - alpha
    (one-sided) and z_beta at ``power``: the pooled variance under H0 and the unpooled one under H1
    (Fleiss' formula without continuity correction; what R's ``power.prop.test`` solves). The change is
    absolute and signed: ``"greater"`` needs a positive one, ``"less"`` a negative one.
    """
    _check_alternative(alternative)
    _check_finite("baseline_rate", baseline_rate)
    _check_finite("min_detectable_effect", min_detectable_effect)
    if not 0.0 <= baseline_rate <= 1.0:
        raise ValueError(f"baseline_rate must be a proportion between 0 and 1, got {baseline_rate}")
    if min_detectable_effect == 0.0:
        raise ValueError("min_detectable_effect must be non-zero: no sample size detects a change of 0")
    target = baseline_rate + min_detectable_effect
    if not 0.0 <= target <= 1.0:
        raise ValueError(
            f"baseline_rate + min_detectable_effect must be a proportion between 0 and 1, got {target}"
        )
    if alternative == "greater" and min_detectable_effect < 0.0:
        raise ValueError(
            f"alternative 'greater' detects an increase; min_detectable_effect is {min_detectable_effect}"
        )
    if alternative == "less" and min_detectable_effect > 0.0:
        raise ValueError(
            f"alternative 'less' detects a decrease; min_detectable_effect is {min_detectable_effect}"
        )
    _check_open_unit("alpha", alpha)
    _check_open_unit("power", power)

    from scipy import stats

    tail = alpha / 2.0 if alternative == "two-sided" else alpha
    z_alpha = float(stats.norm.isf(tail))
    z_beta = float(stats.norm.ppf(power))
    p1, p2 = baseline_rate, target
    mean = (p1 + p2) / 2.0
    spread = z_alpha * math.sqrt(2.0 * mean * (1.0 - mean)) + z_beta * math.sqrt(
        p1 * (1.0 - p1) + p2 * (1.0 - p2)
    )
    if spread <= 0.0:
        # Only a power well below one half can get here; a single trial already meets it.
        return 1
    n = (spread / min_detectable_effect) ** 2
    # The tolerance keeps a result that is an integer up to rounding error from gaining one.
    return max(1, math.ceil(n - 1e-9))


def prob_b_beats_a(
    successes_a: int, n_a: int, successes_b: int, n_b: int, prior: tuple[float, float] = (1.0, 1.0)
) -> float:
    """P(p_b > p_a) with independent Beta(prior + successes, prior + failures) posteriors.

    With posteriors Beta(alpha_a, beta_a) and Beta(alpha_b, beta_b): when alpha_b is an integer of at
    most 10,000 the exact closed form (Evan Miller's sum, "Formulas for Bayesian A/B Testing")

        sum_{i=0}^{alpha_b - 1} B(alpha_a + i, beta_a + beta_b)
                                / ((beta_b + i) B(1 + i, beta_b) B(alpha_a, beta_a))

    is summed in log space with ``scipy.special.betaln``. The sum only needs alpha_b to be an integer;
    the other three parameters may be any positive reals, so every integer prior (the uniform (1, 1)
    default included) takes this path while b's successes stay under 10,000. The formula is exact; in
    floating point ``betaln`` of large arguments leaves up to about 2e-9 of rounding error near the
    10,000-term limit with a million trials, less for smaller ones. Otherwise the probability is the
    integral of pdf_b(x) * cdf_a(x) over x, by ``scipy.integrate.quad`` over the interval holding all
    but 2e-13 of b's posterior mass (within about 1e-9 of the exact sum in the tests).
    """
    successes_a = _count("successes_a", successes_a)
    successes_b = _count("successes_b", successes_b)
    n_a = _count("n_a", n_a)
    n_b = _count("n_b", n_b)
    _check_successes("successes_a", successes_a, "n_a", n_a)
    _check_successes("successes_b", successes_b, "n_b", n_b)
    if len(prior) != 2:
        raise ValueError(f"prior must be (alpha, beta), got {prior!r}")
    prior_alpha, prior_beta = float(prior[0]), float(prior[1])
    for name, value in (("prior alpha", prior_alpha), ("prior beta", prior_beta)):
        if not (math.isfinite(value) and value > 0.0):
            raise ValueError(f"{name} must be a positive finite number, got {value}")

    alpha_a = prior_alpha + successes_a
    beta_a = prior_beta + (n_a - successes_a)
    alpha_b = prior_alpha + successes_b
    beta_b = prior_beta + (n_b - successes_b)
    if alpha_b.is_integer() and alpha_b <= _EXACT_SUM_MAX_TERMS:
        probability = _prob_b_beats_a_exact(alpha_a, beta_a, int(alpha_b), beta_b)
    else:
        probability = _prob_b_beats_a_integrated(alpha_a, beta_a, alpha_b, beta_b)
    return min(1.0, max(0.0, probability))


def sample_ratio_mismatch(observed: Mapping[str, int], expected_weights: Mapping[str, float]) -> TestResult:
    """Chi-square goodness-of-fit test of the arms' observed counts against their configured shares.

    ``expected_weights`` are normalised to shares, so they need not sum to 1; both mappings must name
    the same arms. An arm with weight 0 takes no part in the test if it has no observations; if it has
    any, the split is certainly broken: statistic inf, p-value 0.0. With nothing observed there is no
    evidence of a mismatch: statistic 0.0, p-value 1.0. ``effect`` is the largest absolute difference
    between an arm's observed and expected share, ``n_a`` the total observed and ``n_b`` the number of
    arms. A small p-value (0.001 is a common threshold) means the traffic was not split as configured.
    """
    if set(observed) != set(expected_weights):
        missing = sorted(set(expected_weights) - set(observed))
        unknown = sorted(set(observed) - set(expected_weights))
        raise ValueError(
            f"observed and expected_weights must name the same arms: missing from observed {missing}, "
            f"without a weight {unknown}"
        )
    if not expected_weights:
        raise ValueError("sample_ratio_mismatch needs at least one arm")
    counts = {arm: _count(f"observed[{arm!r}]", count) for arm, count in observed.items()}
    for arm, weight in expected_weights.items():
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"expected_weights[{arm!r}] must be a non-negative finite number, got {weight}")
    total_weight = math.fsum(expected_weights.values())
    if total_weight <= 0.0:
        raise ValueError("expected_weights must have at least one positive weight")

    arms = list(expected_weights)
    total = sum(counts.values())
    expected_share = {arm: expected_weights[arm] / total_weight for arm in arms}
    if total == 0:
        return TestResult(0.0, 1.0, 0.0, 0, len(arms))
    effect = max(abs(counts[arm] / total - expected_share[arm]) for arm in arms)
    if any(counts[arm] > 0 and expected_share[arm] == 0.0 for arm in arms):
        return TestResult(math.inf, 0.0, effect, total, len(arms))

    tested = [arm for arm in arms if expected_share[arm] > 0.0]
    if len(tested) < 2:
        return TestResult(0.0, 1.0, effect, total, len(arms))
    statistic = math.fsum(
        (counts[arm] - total * expected_share[arm]) ** 2 / (total * expected_share[arm]) for arm in tested
    )

    from scipy import stats

    p_value = float(stats.chi2.sf(statistic, len(tested) - 1))
    return TestResult(statistic, p_value, effect, total, len(arms))


def thompson_weights(
    arms: Mapping[str, tuple[float, float]],
    *,
    min_share: float = 0.0,
    draws: int = 10_000,
    seed: int | None = None,
) -> dict[str, float]:
    """Traffic shares by Thompson sampling: how often each arm's posterior draw is the best.

    ``arms`` maps a name to (successes, failures); they may be fractional (graded rewards). Each arm's
    posterior is Beta(1 + successes, 1 + failures); ``draws`` joint draws are taken and an arm's share is
    the fraction of draws in which it is the largest (a Monte Carlo estimate, off by about
    sqrt(s (1 - s) / draws)). Every arm is then raised to at least ``min_share`` and the others scaled
    down proportionally (repeatedly, should scaling take one below the floor), so shares sum to 1.
    ``min_share * len(arms)`` must not exceed 1. The same ``seed`` gives the same shares.
    """
    if not arms:
        raise ValueError("thompson_weights needs at least one arm")
    draws = _count("draws", draws)
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    _check_finite("min_share", min_share)
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be between 0 and 1, got {min_share}")
    if min_share * len(arms) > 1.0 + 1e-12:
        raise ValueError(
            f"min_share {min_share} for {len(arms)} arms asks for {min_share * len(arms):.6g} of the traffic"
        )
    names = list(arms)
    for name in names:
        pair = arms[name]
        if len(pair) != 2:
            raise ValueError(f"arms[{name!r}] must be (successes, failures), got {pair!r}")
        for label, value in zip(("successes", "failures"), pair, strict=True):
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{label} of arm {name!r} must be a non-negative finite number, got {value}")

    import numpy as np

    alphas = np.array([1.0 + float(arms[name][0]) for name in names])
    betas = np.array([1.0 + float(arms[name][1]) for name in names])
    rng = np.random.default_rng(seed)
    samples = rng.beta(alphas, betas, size=(draws, len(names)))
    wins = np.bincount(samples.argmax(axis=1), minlength=len(names))
    shares = [float(count) / draws for count in wins]
    floored = _apply_floor(shares, min_share)
    return dict(zip(names, floored, strict=True))


def _prob_b_beats_a_exact(alpha_a: float, beta_a: float, alpha_b: int, beta_b: float) -> float:
    """Evan Miller's closed form; needs an integer ``alpha_b`` (one term per unit of it)."""
    import numpy as np
    from scipy.special import betaln

    i = np.arange(alpha_b, dtype=float)
    log_terms = (
        betaln(alpha_a + i, beta_a + beta_b)
        - np.log(beta_b + i)
        - betaln(1.0 + i, beta_b)
        - betaln(alpha_a, beta_a)
    )
    return float(np.exp(log_terms).sum())


def _prob_b_beats_a_integrated(alpha_a: float, beta_a: float, alpha_b: float, beta_b: float) -> float:
    """P(p_b > p_a) as the integral of pdf_b(x) * cdf_a(x), over the bulk of b's posterior."""
    from scipy import integrate, stats

    posterior_a = stats.beta(alpha_a, beta_a)
    posterior_b = stats.beta(alpha_b, beta_b)
    low = float(posterior_b.ppf(_TAIL_MASS))
    high = float(posterior_b.isf(_TAIL_MASS))
    # Where the integrand changes fastest: the bulk of each posterior. quad is told about them so that
    # a narrow posterior (millions of trials) is not stepped over.
    breaks = sorted(
        {
            point
            for point in (
                posterior_a.mean(),
                posterior_b.mean(),
                float(posterior_a.ppf(1e-6)),
                float(posterior_a.isf(1e-6)),
            )
            if low < point < high
        }
    )

    def integrand(x: float) -> float:
        return float(posterior_b.pdf(x)) * float(posterior_a.cdf(x))

    value, _ = integrate.quad(integrand, low, high, points=breaks or None, limit=500, epsabs=1e-12)
    # Above ``high``, cdf_a is at most 1 and b has _TAIL_MASS left; below ``low`` at most _TAIL_MASS.
    return float(value) + _TAIL_MASS * float(posterior_a.cdf(high))


def _apply_floor(shares: list[float], floor: float) -> list[float]:
    """Raise every share to at least ``floor`` and scale the others down so the total stays 1."""
    if floor <= 0.0:
        return shares
    count = len(shares)
    if floor * count >= 1.0:
        return [1.0 / count] * count
    pinned: set[int] = set()
    result = list(shares)
    while True:
        free = [i for i in range(count) if i not in pinned]
        free_total = math.fsum(shares[i] for i in free)
        budget = 1.0 - floor * len(pinned)
        below = [i for i in free if free_total <= 0.0 or shares[i] * budget / free_total < floor]
        if not below:
            break
        pinned.update(below)
    free = [i for i in range(count) if i not in pinned]
    free_total = math.fsum(shares[i] for i in free)
    budget = 1.0 - floor * len(pinned)
    for i in range(count):
        result[i] = floor if i in pinned else shares[i] * budget / free_total
    total = math.fsum(result)
    return [share / total for share in result]


def _normal_p_value(z: float, alternative: Alternative) -> float:
    from scipy import stats

    if alternative == "two-sided":
        return min(1.0, 2.0 * float(stats.norm.sf(abs(z))))
    if alternative == "greater":
        return float(stats.norm.sf(z))
    return float(stats.norm.cdf(z))


def _limit_p_value(statistic: float, alternative: Alternative) -> float:
    """The p-value of an infinite statistic: 0 unless a one-sided alternative points the other way."""
    if alternative == "greater":
        return 0.0 if statistic > 0 else 1.0
    if alternative == "less":
        return 0.0 if statistic < 0 else 1.0
    return 0.0


def _check_alternative(alternative: str) -> None:
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(_ALTERNATIVES)}; got {alternative!r}")


def _count(name: str, value: int) -> int:
    """``value`` as a non-negative int (numpy integers accepted); floats and bools are refused."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a count, got {value!r}")
    try:
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer count, got {value!r}") from None
    if count < 0:
        raise ValueError(f"{name} must not be negative, got {count}")
    return count


def _check_successes(name: str, successes: int, total_name: str, total: int) -> None:
    if successes > total:
        raise ValueError(f"{name} ({successes}) cannot exceed {total_name} ({total})")


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")


def _check_open_unit(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")


def _sample(name: str, values: Sequence[float], *, minimum: int) -> npt.NDArray[np.float64]:
    import numpy as np

    data = np.asarray(values, dtype=float)
    if data.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of numbers, got shape {data.shape}")
    if data.size < minimum:
        noun = "value" if minimum == 1 else "values"
        raise ValueError(f"{name} needs at least {minimum} {noun}, got {data.size}")
    if not np.isfinite(data).all():
        raise ValueError(f"{name} must contain only finite numbers")
    return data
