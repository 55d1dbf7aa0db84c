"""What a rollout strategy file says: the strategy of a route's environment and how it is judged.

```yaml
route: support-answer
environment: prod
strategy: canary                 # canary | shadow | ab | bandit
canary:
  stages:                        # share of subjects on the candidate; each stage needs its duration and
    - {weight: 5, min_duration: 60, min_requests: 50}    # requests per arm before it may advance
    - {weight: 25}
    - {weight: 50}
    - {weight: 100}
analysis:
  interval: 10                   # seconds between analyses
  min_requests: 20               # per arm, before any verdict but "inconclusive"
  thresholds:                    # relative to the current release (the baseline arm)
    max_error_rate_ratio: 2.0
    max_error_rate_increase: 0.01
    max_p95_latency_ratio: 1.5
    max_cost_ratio: 1.5
    max_contract_violation_increase: 0.01
    max_quality_drop: 0.05
  failure_limit: 0               # failed analyses tolerated per metric before rolling back
```

Every field has a default, so ``strategy: canary`` alone is a complete file (5 -> 25 -> 50 -> 100).
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lockgate.service_errors import Invalid

Strategy = Literal["canary", "shadow", "ab", "bandit"]
METRICS = ("error_rate", "p95_latency", "cost_per_request", "contract_violations", "quality")


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stage(Frozen):
    weight: float = Field(gt=0, le=100, description="Percent of subjects sent to the candidate")
    min_duration: float = Field(default=60.0, ge=0, description="Seconds the stage lasts at least")
    min_requests: int = Field(default=50, ge=0, description="Requests per arm the stage needs at least")


def _default_stages() -> list[Stage]:
    return [Stage(weight=5), Stage(weight=25), Stage(weight=50), Stage(weight=100)]


class Canary(Frozen):
    stages: list[Stage] = Field(default_factory=_default_stages, min_length=1, max_length=20)

    @model_validator(mode="after")
    def _rising_to_all(self) -> Self:
        weights = [stage.weight for stage in self.stages]
        if weights != sorted(weights) or len(set(weights)) != len(weights):
            raise ValueError("stage weights must rise from stage to stage")
        if weights[-1] != 100:
            raise ValueError("the last stage must send 100% to the candidate")
        return self


class Shadow(Frozen):
    share: float = Field(default=100.0, gt=0, le=100, description="Percent of calls mirrored")
    min_duration: float = Field(default=300.0, ge=0)
    min_requests: int = Field(default=100, ge=0, description="Mirrored calls needed at least")


class AB(Frozen):
    share: float = Field(default=50.0, gt=0, lt=100, description="Percent of subjects on the candidate")
    min_duration: float = Field(default=3600.0, ge=0)
    min_requests: int = Field(default=500, ge=1, description="Requests per arm needed at least")
    metric: Literal["success", "latency", "quality"] = "success"
    alpha: float = Field(default=0.05, gt=0, lt=0.5)


class Bandit(Frozen):
    reward: Literal["success", "feedback", "quality"] = "success"
    burn_in: int = Field(default=100, ge=0, description="Requests per arm at an even split first")
    min_share: float = Field(default=0.05, ge=0, le=0.5, description="No arm gets less than this")
    horizon: float = Field(default=3600.0, gt=0, description="Seconds before the bandit decides")
    decide_at: float = Field(default=0.95, gt=0.5, lt=1, description="P(candidate better) that promotes")


class Thresholds(Frozen):
    max_error_rate_ratio: float = Field(default=2.0, gt=0)
    max_error_rate_increase: float = Field(default=0.01, ge=0)
    max_p95_latency_ratio: float = Field(default=1.5, gt=0)
    max_cost_ratio: float = Field(default=1.5, gt=0)
    max_contract_violation_increase: float = Field(default=0.01, ge=0)
    max_quality_drop: float = Field(default=0.05, ge=0, le=1)


class OnlineQuality(Frozen):
    sample: float = Field(default=0.1, gt=0, le=1, description="Share of live answers scored")
    scorers: list[dict[str, Any]] = Field(min_length=1, description="Scorer specs, as in a dataset file")

    @field_validator("scorers")
    @classmethod
    def _known_scorers(cls, scorers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Refused when the strategy is saved, not found broken by the first sampled answer.
        from lockgate.evals.scorers.specs import validate_scorer_specs

        try:
            return validate_scorer_specs(scorers)
        except Invalid as exc:
            raise ValueError(str(exc)) from None


class Analysis(Frozen):
    interval: float = Field(default=10.0, gt=0, le=3600)
    min_requests: int = Field(default=20, ge=1, description="Per arm, before any verdict")
    thresholds: Thresholds = Field(default_factory=Thresholds)
    failure_limit: int = Field(default=0, ge=0, description="Failed analyses tolerated per metric")
    online_quality: OnlineQuality | None = None


class RolloutSpec(Frozen):
    """How a route's environment takes a new release: the strategy, its settings and its analysis."""

    strategy: Strategy
    canary: Canary = Field(default_factory=Canary)
    shadow: Shadow = Field(default_factory=Shadow)
    ab: AB = Field(default_factory=AB)
    bandit: Bandit = Field(default_factory=Bandit)
    analysis: Analysis = Field(default_factory=Analysis)
    policies: dict[str, str] = Field(
        default_factory=dict, description="Extra Rego modules of package lockgate.rollout: name -> source"
    )
    replace_default_policy: bool = False

    def first_share(self) -> float:
        """The candidate's share (0..1) when the rollout starts."""
        if self.strategy == "canary":
            return self.canary.stages[0].weight / 100
        if self.strategy == "shadow":
            return self.shadow.share / 100
        if self.strategy == "ab":
            return self.ab.share / 100
        return 0.5  # a bandit starts even


def parse_strategy(raw: Any, where: str) -> RolloutSpec:
    """The spec, with the first problem named ``where: field.path: message``."""
    if not isinstance(raw, dict):
        raise Invalid(f"{where}: a rollout strategy is a mapping with at least `strategy`")
    try:
        return RolloutSpec.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = ".".join(str(part) for part in error["loc"]) or "(root)"
        raise Invalid(f"{where}: {path}: {str(error['msg']).removeprefix('Value error, ')}") from None
