"""Latency and cost scorers: budgets per case, scored even when the call failed.

Within budget scores 1; over it, the fraction of the budget the call would have needed to stay in
(``max / actual``), so a report can tell a near miss from a blow-out. The default threshold of 1 passes
only calls within budget.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from lockgate.evals.cases import Case, Kind, Outcome, ScoringContext
from lockgate.evals.scorers.base import BaseScorer, ScorerSpec, Verdict


def within(actual: float, budget: float) -> float:
    return 1.0 if actual <= budget else budget / actual


class LatencySpec(ScorerSpec):
    type: Literal["latency"]
    max_ms: float = Field(gt=0)

    def build(self, context: ScoringContext) -> LatencyScorer:
        return LatencyScorer(self)


class LatencyScorer(BaseScorer[LatencySpec]):
    kind: Kind = "latency"
    scores_failed_calls: ClassVar[bool] = True

    async def evaluate(self, case: Case, outcome: Outcome) -> Verdict:
        value = within(outcome.latency_ms, self.spec.max_ms)
        reason = f"{outcome.latency_ms:.0f} ms (budget {self.spec.max_ms:g} ms)"
        return Verdict(value, reason, {"latency_ms": outcome.latency_ms})


class CostSpec(ScorerSpec):
    type: Literal["cost"]
    max_usd: float = Field(ge=0)

    def build(self, context: ScoringContext) -> CostScorer:
        return CostScorer(self)


class CostScorer(BaseScorer[CostSpec]):
    kind: Kind = "cost"
    scores_failed_calls: ClassVar[bool] = True

    async def evaluate(self, case: Case, outcome: Outcome) -> Verdict:
        value = within(outcome.cost_usd, self.spec.max_usd)
        reason = f"${outcome.cost_usd:.6f} (budget ${self.spec.max_usd:g})"
        return Verdict(value, reason, {"cost_usd": outcome.cost_usd})
