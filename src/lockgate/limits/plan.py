"""Which counters a call is admitted against, and how much it reserves on each.

For each of the tenant's rules whose scope matches the call, one check per limit the rule sets
(requests and tokens a minute, concurrent calls); for each budget that covers the call (the tenant's,
its key's team's, its key's), one check on the current period. Scope values: absent means every
matching call shares one counter, ``each`` gives each key (team, model) its own, a value restricts the
rule to calls with that value.

A call reserves its worst case, so that what it actually uses can never exceed what was admitted:

- **tokens**: an upper bound of the input (every byte of the JSON request counts as a token, since a
  byte-level tokenizer never makes more tokens than bytes, plus 16 a message and 2,048 an image for
  the chat template and images) plus ``n`` x the output limit;
- **output limit**: the call's ``max_tokens``; above a rule's ``max_tokens`` it is refused; without one,
  the tightest rule's ``max_tokens`` or the configured default is set on the call, so the upstream
  cannot answer longer than was reserved;
- **cost**: those tokens at the highest input and output prices of every deployment the call may reach
  (its model's and its fallbacks'), in whole nano-dollars rounded up.

Per-call caps (``max_tokens``, ``max_cost_usd``) are checked here, before any counter is touched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec
import orjson

from lockgate.errors import InvalidRequest
from lockgate.gateway.pipeline import Call
from lockgate.limits.book import StoredBudget, StoredRule, TenantLimits
from lockgate.limits.counters import Check
from lockgate.limits.spec import EACH, period_bounds
from lockgate.routing.table import RoutingTable
from lockgate.wire import ChatCompletionRequest

NANO = 1_000_000_000
"""Budgets count nano-dollars: whole numbers, so every sum is exact."""
MESSAGE_OVERHEAD = 16
IMAGE_TOKENS = 2048
WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class Plan:
    checks: tuple[Check, ...]
    output_limit: int | None
    """The ``max_tokens`` the call must carry (set on it when it had none)."""
    input_tokens: int
    output_tokens: int


def plan(
    call: Call,
    limits: TenantLimits,
    table: RoutingTable,
    default_max_tokens: int,
    now: datetime,
) -> Plan:
    principal = call.principal
    assert principal is not None
    model = call.model
    values = {"key": principal.key_id, "team": principal.team, "model": model}
    rules = [r for r in limits.rules if _matches(r, values)]
    covering = [b for b in limits.budgets if _covers(b, values)]
    chat = call.request if isinstance(call.request, ChatCompletionRequest) else None
    requested = chat.output_limit if chat is not None else None
    caps = [r.rule.max_tokens for r in rules if r.rule.max_tokens is not None]
    cap = min(caps) if caps else None
    if requested is not None and cap is not None and requested > cap:
        field = "max_completion_tokens" if chat is not None and chat.max_completion_tokens else "max_tokens"
        raise InvalidRequest(
            f"{field} is {requested}, above this key's limit of {cap} tokens per call.",
            param=field,
            code="max_tokens_exceeded",
        )
    counted = any(r.rule.tokens_per_minute or r.rule.max_cost_usd for r in rules) or bool(covering)
    output_limit = requested
    if chat is not None and requested is None and (cap is not None or counted):
        output_limit = cap if cap is not None else default_max_tokens
    input_tokens = _input_bound(call)
    output_tokens = (chat.n or 1) * (output_limit or 0) if chat is not None else 0
    worst = _worst_cost_nano(call, table, input_tokens, output_tokens)
    for r in rules:
        if r.rule.max_cost_usd is not None and worst > r.rule.max_cost_usd * NANO:
            raise InvalidRequest(
                f"This call could cost up to ${worst / NANO:.6f}, above the limit of "
                f"${r.rule.max_cost_usd:g} per call; lower max_tokens.",
                param="max_tokens",
                code="max_cost_exceeded",
            )
    checks: list[Check] = []
    for r in rules:
        suffix = _suffix(r.rule.scope.key, r.rule.scope.team, r.rule.scope.model, values)
        if r.rule.requests_per_minute is not None:
            checks.append(
                Check(
                    f"w:{r.id}:{suffix}:r",
                    "window",
                    "requests",
                    r.rule.requests_per_minute,
                    1,
                    WINDOW,
                    name=r.rule.name,
                )
            )
        if r.rule.tokens_per_minute is not None:
            checks.append(
                Check(
                    f"w:{r.id}:{suffix}:t",
                    "window",
                    "tokens",
                    r.rule.tokens_per_minute,
                    input_tokens + output_tokens,
                    WINDOW,
                    name=r.rule.name,
                )
            )
        if r.rule.concurrent is not None:
            checks.append(
                Check(
                    f"c:{r.id}:{suffix}", "concurrency", "concurrent", r.rule.concurrent, 1, name=r.rule.name
                )
            )
    checks.extend(budget_check(b, values, now, worst) for b in covering)
    return Plan(tuple(checks), output_limit, input_tokens, output_tokens)


def budget_check(stored: StoredBudget, values: dict[str, str | None], now: datetime, amount: int) -> Check:
    """The check of ``stored`` for a call (or a store row) with these key/team values, this period."""
    budget = stored.budget
    start, end = period_bounds(budget.period, now)
    suffix = _suffix(budget.scope.key, budget.scope.team, None, values)
    limit = round(budget.amount_usd * NANO)
    soft = round(limit * budget.soft_ratio) if budget.soft_ratio is not None else None
    return Check(
        f"b:{stored.id}:{suffix}:{int(start.timestamp())}",
        "budget",
        "budget",
        limit,
        amount,
        ends_at=end.timestamp(),
        soft=soft,
        name=budget.name,
    )


def used(checks: Sequence[Check], tokens: int, cost_usd: float) -> list[float]:
    """What a settled call used of each check: 1 request, its tokens, its slot, its cost."""
    spent = math.ceil(cost_usd * NANO - 1e-6) if cost_usd > 0 else 0
    amounts: list[float] = []
    for check in checks:
        if check.what == "tokens":
            amounts.append(tokens)
        elif check.what == "budget":
            amounts.append(spent)
        else:
            amounts.append(1)
    return amounts


def with_output_limit(call: Call, output_limit: int) -> None:
    """Make the call carry ``max_tokens`` (the upstream may not answer longer than was reserved)."""
    assert isinstance(call.request, ChatCompletionRequest)
    call.body = {**call.body, "max_tokens": output_limit}
    call.body.pop("max_completion_tokens", None)
    call.request = msgspec.structs.replace(call.request, max_tokens=output_limit, max_completion_tokens=None)


def _matches(stored: StoredRule, values: dict[str, str | None]) -> bool:
    scope = stored.rule.scope
    return all(
        wanted is None or wanted == EACH or wanted == values[field]
        for field, wanted in (("key", scope.key), ("team", scope.team), ("model", scope.model))
    ) and not (scope.team == EACH and values["team"] is None)


def _covers(stored: StoredBudget, values: dict[str, str | None]) -> bool:
    scope = stored.budget.scope
    if scope.key is not None:
        return scope.key in (EACH, values["key"])
    if scope.team is not None:
        return values["team"] is not None and scope.team in (EACH, values["team"])
    return True


def _suffix(key: str | None, team: str | None, model: str | None, values: dict[str, str | None]) -> str:
    """The counter's split: ``*`` where every call shares it, the call's value where it splits."""
    parts = []
    for field, wanted in (("key", key), ("team", team), ("model", model)):
        parts.append("*" if wanted is None else str(values[field]) if wanted == EACH else wanted)
    return ":".join(parts)


def _input_bound(call: Call) -> int:
    raw = call.raw if call.release is None else orjson.dumps(call.body)
    bound = len(raw)
    if isinstance(call.request, ChatCompletionRequest):
        messages = call.body.get("messages") or ()
        bound += MESSAGE_OVERHEAD * (len(messages) + 1)
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                bound += IMAGE_TOKENS * sum(
                    1 for part in content if isinstance(part, dict) and part.get("type") == "image_url"
                )
    else:
        inputs = call.body.get("input")
        bound += MESSAGE_OVERHEAD * (len(inputs) if isinstance(inputs, list) else 1)
    return bound


def _worst_cost_nano(call: Call, table: RoutingTable, input_tokens: int, output_tokens: int) -> int:
    models = [call.model, *(call.route.fallbacks if call.route is not None else ()), *call.fallbacks]
    prices_in, prices_out = [0.0], [0.0]
    for name in dict.fromkeys(models):
        route = table.get(name)
        for deployment in route.deployments if route is not None else ():
            prices_in.append(deployment.input_price_per_1m)
            prices_out.append(deployment.output_price_per_1m)
    worst = (input_tokens * max(prices_in) + output_tokens * max(prices_out)) / 1_000_000
    return math.ceil(worst * NANO)
