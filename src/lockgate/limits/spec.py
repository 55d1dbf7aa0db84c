"""What a limit rule and a budget say, as an administrator writes them (YAML or JSON).

A **limit rule** bounds the calls of one tenant that match its ``scope``::

    name: per-key-default
    scope: {key: each}            # key | team | model: `each` (one counter per value), a value
                                  # (only calls with it), or absent (all matching calls share one counter)
    requests_per_minute: 600
    tokens_per_minute: 200000     # input + output, counted as an upper bound until the call settles
    concurrent: 20                # calls in flight
    max_tokens: 4096              # per call: larger max_tokens is refused; absent max_tokens gets this
    max_cost_usd: 0.50            # per call, worst case at the most expensive deployment it may reach

A **budget** bounds spend over a calendar period (UTC; weeks start on Monday)::

    name: research-monthly
    scope: {team: research}       # {} (the whole tenant), {team: T} or {key: key_...}; `each` splits
    period: month                 # day | week | month
    amount_usd: 250
    soft_ratio: 0.8               # alert once per period at 80% (null: no alert); 100% blocks

Every field but ``name`` is optional in a rule; a rule with no limit at all is refused.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lockgate.service_errors import Invalid

NAME = r"^[a-z0-9][a-z0-9_.-]*$"
ModelT = TypeVar("ModelT", bound=BaseModel)
EACH = "each"
Period = Literal["day", "week", "month"]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleScope(Frozen):
    key: str | None = Field(default=None, min_length=1, max_length=40, description="`each` or a key id")
    team: str | None = Field(default=None, min_length=1, max_length=100, description="`each` or a team")
    model: str | None = Field(default=None, min_length=1, max_length=200, description="`each` or a model")


class LimitRule(Frozen):
    name: str = Field(pattern=NAME, max_length=100)
    scope: RuleScope = Field(default_factory=RuleScope)
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    concurrent: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1, description="Per call; also the default")
    max_cost_usd: float | None = Field(default=None, gt=0, description="Per call, worst case")

    @model_validator(mode="after")
    def _limits_something(self) -> Self:
        limits = (
            self.requests_per_minute,
            self.tokens_per_minute,
            self.concurrent,
            self.max_tokens,
            self.max_cost_usd,
        )
        if all(value is None for value in limits):
            raise ValueError(
                "a rule sets at least one of requests_per_minute, tokens_per_minute, concurrent, "
                "max_tokens, max_cost_usd"
            )
        return self


class BudgetScope(Frozen):
    key: str | None = Field(default=None, min_length=1, max_length=40, description="`each` or a key id")
    team: str | None = Field(default=None, min_length=1, max_length=100, description="`each` or a team")

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.key is not None and self.team is not None:
            raise ValueError("a budget is for the tenant, a team or a key: give at most one of key, team")
        return self


class Budget(Frozen):
    name: str = Field(pattern=NAME, max_length=100)
    scope: BudgetScope = Field(default_factory=BudgetScope)
    period: Period
    amount_usd: float = Field(gt=0, le=1e9)
    soft_ratio: float | None = Field(default=0.8, gt=0, lt=1)


def parse_rule(raw: Any, where: str) -> LimitRule:
    return _parse(LimitRule, raw, where, "a limit rule is a mapping with a name and at least one limit")


def parse_budget(raw: Any, where: str) -> Budget:
    return _parse(Budget, raw, where, "a budget is a mapping with name, period and amount_usd")


def _parse(model: type[ModelT], raw: Any, where: str, shape: str) -> ModelT:
    if not isinstance(raw, dict):
        raise Invalid(f"{where}: {shape}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = ".".join(str(part) for part in error["loc"]) or "(root)"
        message = re.sub(r"^Value error, ", "", str(error["msg"]))
        raise Invalid(f"{where}: {path}: {message}") from None


def period_bounds(period: Period, at: datetime) -> tuple[datetime, datetime]:
    """The UTC period containing ``at``: [start, end)."""
    at = at.astimezone(UTC)
    day = datetime(at.year, at.month, at.day, tzinfo=UTC)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = datetime(at.year, at.month, 1, tzinfo=UTC)
    days = calendar.monthrange(at.year, at.month)[1]
    return start, start + timedelta(days=days)
