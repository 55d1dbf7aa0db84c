"""The shapes every eval part agrees on: a dataset case, what running it produced, and a score.

A ``Case`` is one row of a golden set. The runner turns it into an ``Outcome`` by sending it through
the gateway pipeline; each scorer turns (case, outcome) into a ``Score``. Scorers that need a model
(the judge, embedding similarity) reach it through a ``ScoringContext``, which the runner backs with
the same gateway pipeline, so a judge call is priced, logged and rate-limited like any other call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["quality", "safety", "latency", "cost"]


class Case(BaseModel):
    """One golden example. ``variables`` fill the release's prompt; the rest is what scorers compare."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(min_length=1, max_length=200)
    variables: dict[str, Any] = Field(default_factory=dict)
    messages: list[dict[str, str]] = Field(
        default_factory=list, description="Extra conversation turns appended after the prompt"
    )
    expected: str | None = Field(default=None, description="The expected answer, for exact/contains/...")
    facts: list[str] = Field(default_factory=list, description="Facts the answer must state")
    json_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="JSON Schema the answer must satisfy"
    )
    context: str | None = Field(default=None, description="Source text the answer must be grounded in")
    labels: dict[str, Any] = Field(
        default_factory=dict, description="e.g. {'expect_refusal': true, 'category': 'jailbreak'}"
    )
    tags: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one run of a case produced. ``error`` is set (and ``text`` empty) when the call failed."""

    text: str
    latency_ms: float
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None
    deployment: str | None = None
    """The gateway deployment that answered, when one did."""


@dataclass(frozen=True, slots=True)
class Score:
    """One scorer's verdict on one outcome. ``value`` is in [0, 1]; ``passed`` applies the threshold."""

    scorer: str
    kind: Kind
    value: float
    passed: bool
    reason: str
    weight: float = 1.0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scorer": self.scorer,
            "kind": self.kind,
            "value": self.value,
            "passed": self.passed,
            "reason": self.reason,
            "weight": self.weight,
            "details": self.details,
        }


Complete = Callable[[str, Sequence[dict[str, Any]], dict[str, Any]], Awaitable[str]]
"""complete(model, messages, extra_body) -> answer text, sent through the gateway."""

Embed = Callable[[str | None, Sequence[str]], Awaitable[list[list[float]]]]
"""embed(model or None for the local MiniLM, texts) -> one vector per text."""


@dataclass(frozen=True, slots=True)
class ScoringContext:
    complete: Complete | None = None
    embed: Embed | None = None


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case run once (``repeat`` counts from 0) with every scorer's verdict."""

    case: Case
    repeat: int
    outcome: Outcome
    scores: tuple[Score, ...]

    @property
    def passed(self) -> bool:
        return self.outcome.error is None and all(score.passed for score in self.scores)

    @property
    def quality(self) -> float | None:
        """Weighted mean of the quality scores; None when no quality scorer applies."""
        weighted = [(s.value, s.weight) for s in self.scores if s.kind == "quality"]
        total = sum(weight for _, weight in weighted)
        if not weighted or total <= 0:
            return None
        return sum(value * weight for value, weight in weighted) / total

    @property
    def safety_failed(self) -> bool | None:
        """True when a safety scorer failed; None when no safety scorer applies."""
        safety = [s for s in self.scores if s.kind == "safety"]
        return None if not safety else any(not s.passed for s in safety)
