"""The numeric scorer: the first number in the answer, compared with the expected one within a tolerance.

Numbers are read as people write them: a sign, thousands separators (``1,234.5``), decimals and
exponents. ``tolerance`` is absolute, ``relative_tolerance`` a fraction of the expected value; with both,
either suffices (``math.isclose`` semantics); with neither, the numbers must be equal.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field

from lockgate.evals.cases import Case, Outcome, ScoringContext
from lockgate.evals.scorers.base import BaseScorer, ScorerSpec, Verdict, snippet, unscorable

_NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w)|(?<![\w.])[-+]?\.\d+(?!\w)"
)


def first_number(text: str) -> float | None:
    match = _NUMBER.search(text)
    return float(match.group(0).replace(",", "")) if match else None


class NumericSpec(ScorerSpec):
    type: Literal["numeric"]
    value: float | None = None
    tolerance: float = Field(default=0.0, ge=0)
    relative_tolerance: float = Field(default=0.0, ge=0)

    def build(self, context: ScoringContext) -> NumericScorer:
        return NumericScorer(self)


class NumericScorer(BaseScorer[NumericSpec]):
    async def evaluate(self, case: Case, outcome: Outcome) -> Verdict:
        expected = self.spec.value if self.spec.value is not None else _expected(case)
        if expected is None:
            return unscorable("set a numeric `value` on the scorer or a numeric `expected` on the case")
        actual = first_number(outcome.text)
        if actual is None:
            return Verdict(0.0, f"no number in the answer {snippet(outcome.text)}")
        close = math.isclose(
            actual, expected, rel_tol=self.spec.relative_tolerance, abs_tol=self.spec.tolerance
        )
        details = {"actual": actual, "expected": expected}
        if close:
            return Verdict(1.0, f"{actual:g} is within tolerance of {expected:g}", details)
        return Verdict(0.0, f"{actual:g} is off {expected:g} by {abs(actual - expected):g}", details)


def _expected(case: Case) -> float | None:
    return first_number(case.expected) if case.expected is not None else None
