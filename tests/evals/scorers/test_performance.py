"""Latency and cost budgets."""

from __future__ import annotations

from tests.evals.scorers.support import score


async def test_latency_within_and_over_budget() -> None:
    spec = {"type": "latency", "max_ms": 1000}
    within = await score(spec, "ok", latency_ms=1000)
    assert (within.kind, within.value, within.passed, within.reason) == (
        "latency",
        1.0,
        True,
        "1000 ms (budget 1000 ms)",
    )
    over = await score(spec, "ok", latency_ms=2500)
    assert (over.value, over.passed) == (0.4, False)
    assert (await score({**spec, "threshold": 0.4}, "ok", latency_ms=2500)).passed


async def test_cost_within_and_over_budget() -> None:
    spec = {"type": "cost", "max_usd": 0.002}
    within = await score(spec, "ok", cost_usd=0.0015)
    assert (within.kind, within.value, within.passed) == ("cost", 1.0, True)
    over = await score(spec, "ok", cost_usd=0.008)
    assert (over.value, over.passed) == (0.25, False)
    free_only = await score({"type": "cost", "max_usd": 0}, "ok", cost_usd=0.001)
    assert (free_only.value, free_only.passed) == (0.0, False)
