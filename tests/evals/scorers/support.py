"""Scoring one answer with one scorer spec, as the runner does, and scripted judge models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lockgate.evals.cases import Case, Outcome, Score, ScoringContext
from lockgate.evals.scorers import build_scorers


async def score(
    spec: dict[str, Any],
    text: str = "",
    *,
    scoring: ScoringContext | None = None,
    error: str | None = None,
    latency_ms: float = 100.0,
    cost_usd: float = 0.0,
    **case: Any,
) -> Score:
    [scorer] = build_scorers([spec], scoring or ScoringContext())
    outcome = Outcome(text, latency_ms, cost_usd, error=error)
    return await scorer.score(Case(id="case-1", **case), outcome)


@dataclass
class ScriptedModel:
    """A ``complete`` that answers every call with ``reply`` and remembers what it was sent."""

    reply: str
    calls: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = field(default_factory=list)

    async def __call__(
        self, model: str, messages: Sequence[dict[str, Any]], extra_body: dict[str, Any]
    ) -> str:
        self.calls.append((model, list(messages), extra_body))
        return self.reply

    @property
    def prompt(self) -> str:
        """Everything the judge was shown in the last call."""
        return "\n".join(message["content"] for message in self.calls[-1][1])

    @property
    def scoring(self) -> ScoringContext:
        return ScoringContext(complete=self)
