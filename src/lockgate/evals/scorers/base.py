"""The scorer contract: what every scorer exposes, the fields every spec shares, and failed calls.

A scorer is built from a spec, a mapping stored with its dataset. Each family module declares its spec
as a pydantic model (``extra="forbid"``, discriminated on ``type``) whose ``build`` method returns the
scorer, so validating a spec and building its scorer stay in one place.

``BaseScorer`` owns what every scorer does alike: a failed call scores 0 with the call's error as the
reason (latency and cost scorers opt out, they still measure what they can), values are clipped to
[0, 1], and ``passed`` applies the threshold unless the verdict failed outright (a broken safety rule,
a judge that gave no verdict), which no threshold can pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from lockgate.evals.cases import Case, Kind, Outcome, Score, ScoringContext

SNIPPET_CHARS = 80


class Scorer(Protocol):
    """Turns one (case, outcome) into a ``Score``; ``name`` is what reports show."""

    name: str
    kind: Kind
    weight: float
    threshold: float

    async def score(self, case: Case, outcome: Outcome) -> Score: ...


class SpecError(ValueError):
    """A spec that validates but cannot be built here (say, a judge with no model service)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name
        self.message = message


class ScorerSpec(BaseModel, ABC):
    """Fields every scorer spec has; ``threshold`` defaults to 1 unless a family says otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    name: str | None = Field(default=None, min_length=1, max_length=100)
    weight: float = Field(default=1.0, ge=0)
    threshold: float = Field(default=1.0, ge=0, le=1)

    @property
    def scorer_name(self) -> str:
        return self.name or self.type

    @abstractmethod
    def build(self, context: ScoringContext) -> Scorer:
        """The scorer this spec describes; raises ``SpecError`` when ``context`` lacks a service."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A scorer's finding before the threshold is applied. ``failed`` fails it whatever the threshold."""

    value: float
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    failed: bool = False


SpecT = TypeVar("SpecT", bound=ScorerSpec)


class BaseScorer(ABC, Generic[SpecT]):
    kind: Kind = "quality"
    scores_failed_calls: ClassVar[bool] = False

    def __init__(self, spec: SpecT) -> None:
        self.spec = spec
        self.name = spec.scorer_name
        self.weight = spec.weight
        self.threshold = spec.threshold

    async def score(self, case: Case, outcome: Outcome) -> Score:
        if outcome.error is not None and not self.scores_failed_calls:
            verdict = Verdict(0.0, f"call failed: {outcome.error}", failed=True)
        else:
            verdict = await self.evaluate(case, outcome)
        value = min(1.0, max(0.0, verdict.value))
        passed = not verdict.failed and value >= self.threshold
        return Score(self.name, self.kind, value, passed, verdict.reason, self.weight, verdict.details)

    @abstractmethod
    async def evaluate(self, case: Case, outcome: Outcome) -> Verdict:
        """Judge a successful call (or any call, for scorers with ``scores_failed_calls``)."""


def unscorable(what: str) -> Verdict:
    """The case lacks what the scorer compares against: a dataset problem, so the score fails."""
    return Verdict(0.0, f"nothing to compare: {what}", failed=True)


def shorten(text: str, limit: int = SNIPPET_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """``text`` quoted for a reason, on one line and cut to ``limit`` characters."""
    return repr(shorten(text, limit))
