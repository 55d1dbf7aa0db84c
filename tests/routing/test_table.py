"""The routing table: order of deployments, capability filtering, weights and prices."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from lockgate.config.loader import LoadedConfig, load_mapping
from lockgate.providers.anthropic import AnthropicProvider, AnthropicSettings
from lockgate.providers.base import Provider, ProviderSettings
from lockgate.providers.openai_compat import OpenAICompatibleProvider, OpenAICompatibleSettings
from lockgate.routing.breaker import CircuitState
from lockgate.routing.table import Deployment, ModelRoute, Needs, RoutingTable


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> LoadedConfig:
    monkeypatch.setenv("LG_TEST_ANTHROPIC_KEY", "sk-ant-test")
    data: dict[str, Any] = {
        "providers": {
            "oa1": {"kind": "openai", "base_url": "http://oa1.test/v1"},
            "oa2": {"kind": "openai", "base_url": "http://oa2.test/v1"},
            "claude": {"kind": "anthropic", "api_key": "${LG_TEST_ANTHROPIC_KEY}"},
        },
        "models": [
            {
                "name": "main",
                "deployments": [
                    {"provider": "oa1", "model": "m", "input_price_per_1m": 1.5, "output_price_per_1m": 6},
                    {"provider": "claude", "model": "c", "name": "main-claude"},
                ],
                "fallbacks": ["second", "third"],
            },
            {"name": "second", "deployments": [{"provider": "oa2", "model": "s"}], "fallbacks": ["main"]},
            {"name": "third", "deployments": [{"provider": "claude", "model": "t"}]},
            {
                "name": "weighted",
                "deployments": [
                    {"provider": "oa1", "model": "heavy", "weight": 3},
                    {"provider": "oa2", "model": "light", "weight": 1},
                ],
            },
        ],
        "routing": {"failure_threshold": 2, "cooldown": 7},
    }
    return load_mapping(data)


def providers_for(config: LoadedConfig) -> dict[str, Provider[ProviderSettings]]:
    built: dict[str, Provider[ProviderSettings]] = {}
    for name, settings in config.providers.items():
        if isinstance(settings, AnthropicSettings):
            built[name] = AnthropicProvider(name, settings)  # type: ignore[assignment]
        else:
            assert isinstance(settings, OpenAICompatibleSettings)
            built[name] = OpenAICompatibleProvider(name, settings)  # type: ignore[assignment]
    return built


def seeded(table: RoutingTable, seed: int) -> RoutingTable:
    routes: dict[str, ModelRoute] = {}
    for name in table.names():
        route = table.get(name)
        assert route is not None
        routes[name] = route
    return RoutingTable(routes, rng=random.Random(seed))


@pytest.fixture
def table(config: LoadedConfig) -> RoutingTable:
    return seeded(RoutingTable.build(config.gateway, providers_for(config)), 1234)


def route(table: RoutingTable, name: str) -> ModelRoute:
    found = table.get(name)
    assert found is not None
    return found


def names(plan: list[Deployment]) -> list[str]:
    return [d.name for d in plan]


def test_build_names_routes_and_deployments(table: RoutingTable) -> None:
    assert table.names() == ["main", "second", "third", "weighted"]
    assert table.get("nope") is None
    main = route(table, "main")
    assert [d.name for d in main.deployments] == ["oa1/m", "main-claude"]
    assert main.fallbacks == ("second", "third")
    first = main.deployments[0]
    assert (first.model, first.upstream_model, first.provider.name) == ("main", "m", "oa1")
    assert isinstance(main.deployments[1].provider, AnthropicProvider)
    assert len(table.deployments()) == 6


def test_plan_puts_own_deployments_before_fallbacks_in_order(table: RoutingTable) -> None:
    for _ in range(20):
        plan = names(table.plan(route(table, "main"), Needs()))
        assert sorted(plan[:2]) == ["main-claude", "oa1/m"]
        assert plan[2:] == ["oa2/s", "claude/t"]


def test_plan_visits_each_model_once_despite_fallback_cycles(table: RoutingTable) -> None:
    plan = names(table.plan(route(table, "second"), Needs()))
    assert plan[0] == "oa2/s"
    assert sorted(plan[1:]) == ["main-claude", "oa1/m"]
    assert len(plan) == len(set(plan))


@pytest.mark.parametrize(
    ("needs", "expected"),
    [
        (Needs(n=True), ["oa1/m", "oa2/s"]),
        (Needs(embeddings=True), ["oa1/m", "oa2/s"]),
        (Needs(response_format=True), ["oa1/m", "oa2/s"]),
        (Needs(tools=True), ["oa1/m", "main-claude", "oa2/s", "claude/t"]),
    ],
    ids=["n", "embeddings", "response_format", "tools"],
)
def test_plan_skips_deployments_lacking_a_capability(
    table: RoutingTable, needs: Needs, expected: list[str]
) -> None:
    plan = table.plan(route(table, "main"), needs)
    assert sorted(names(plan)) == sorted(expected)
    assert all(needs.met_by(d.provider) for d in plan)
    assert names(plan)[-1] == expected[-1]


def test_plan_can_be_empty(table: RoutingTable) -> None:
    assert table.plan(route(table, "third"), Needs(embeddings=True)) == []


def test_needs_met_by_flags(config: LoadedConfig) -> None:
    built = providers_for(config)
    anthropic, openai = built["claude"], built["oa1"]
    assert Needs().met_by(anthropic)
    assert Needs(tools=True).met_by(anthropic)
    for flag in ("n", "embeddings", "response_format"):
        assert not Needs(**{flag: True}).met_by(anthropic)
        assert Needs(**{flag: True}).met_by(openai)


def test_weighted_order_follows_weights(table: RoutingTable) -> None:
    weighted = route(table, "weighted")
    firsts = Counter(table.plan(weighted, Needs())[0].upstream_model for _ in range(2000))
    share = firsts["heavy"] / 2000
    assert 0.70 <= share <= 0.80, firsts
    assert firsts["heavy"] + firsts["light"] == 2000


def test_equal_weights_are_roughly_even(table: RoutingTable) -> None:
    main = route(table, "main")
    firsts = Counter(table.plan(main, Needs())[0].name for _ in range(2000))
    assert 0.45 <= firsts["oa1/m"] / 2000 <= 0.55, firsts


def test_same_seed_same_order(config: LoadedConfig) -> None:
    built = RoutingTable.build(config.gateway, providers_for(config))
    a, b = seeded(built, 7), seeded(built, 7)
    plans_a = [names(a.plan(route(a, "weighted"), Needs())) for _ in range(50)]
    plans_b = [names(b.plan(route(b, "weighted"), Needs())) for _ in range(50)]
    assert plans_a == plans_b
    assert len({tuple(p) for p in plans_a}) == 2


def test_deployment_cost(table: RoutingTable) -> None:
    priced = route(table, "main").deployments[0]
    assert priced.cost(0, 0) == 0
    assert priced.cost(1_000_000, 0) == pytest.approx(1.5)
    assert priced.cost(0, 1_000_000) == pytest.approx(6.0)
    assert priced.cost(1000, 500) == pytest.approx((1000 * 1.5 + 500 * 6) / 1_000_000)
    assert priced.cost(1000, 500) == pytest.approx(0.0045)
    assert route(table, "main").deployments[1].cost(10_000, 10_000) == 0


def test_breakers_use_routing_settings_and_report_by_name(config: LoadedConfig) -> None:
    seen: list[tuple[str, CircuitState]] = []
    table = RoutingTable.build(
        config.gateway, providers_for(config), on_circuit_change=lambda n, s: seen.append((n, s))
    )
    deployments = {d.name: d for d in table.deployments()}
    breaker = deployments["main-claude"].breaker
    assert (breaker.threshold, breaker.cooldown) == (2, 7.0)
    breaker.failure()
    breaker.failure()
    deployments["oa2/s"].breaker.failure()
    assert seen == [("main-claude", CircuitState.OPEN)]
    assert deployments["oa1/m"].breaker.state is CircuitState.CLOSED
