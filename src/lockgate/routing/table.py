"""The routing table: public model names, their deployments and fallbacks, built once from config."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lockgate.config.schema import GatewayConfig
from lockgate.providers.base import Provider, ProviderSettings
from lockgate.routing.breaker import CircuitBreaker, CircuitState


@dataclass(frozen=True, slots=True)
class Needs:
    """Capabilities a request requires of a deployment."""

    tools: bool = False
    response_format: bool = False
    n: bool = False
    embeddings: bool = False

    def met_by(self, provider: Provider[ProviderSettings]) -> bool:
        return (
            (not self.tools or provider.supports_tools)
            and (not self.response_format or provider.supports_response_format)
            and (not self.n or provider.supports_n)
            and (not self.embeddings or provider.supports_embeddings)
        )


@dataclass(frozen=True, slots=True, eq=False)
class Deployment:
    name: str
    model: str
    upstream_model: str
    provider: Provider[ProviderSettings]
    weight: float
    timeout: float
    input_price_per_1m: float
    output_price_per_1m: float
    context_window: int | None
    breaker: CircuitBreaker

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_price_per_1m + output_tokens * self.output_price_per_1m) / 1_000_000

    def describe(self) -> dict[str, Any]:
        """What answers through this deployment, as configured. Secret fields dump masked, and a URL's
        user and password are dropped: this goes into eval runs and evidence that viewers read."""
        settings = {
            key: _without_userinfo(value)
            for key, value in self.provider.settings.model_dump(mode="json").items()
        }
        return {
            "name": self.name,
            "model": self.model,
            "upstream_model": self.upstream_model,
            "provider": self.provider.name,
            "settings": settings,
            "timeout": self.timeout,
            "input_price_per_1m": self.input_price_per_1m,
            "output_price_per_1m": self.output_price_per_1m,
            "context_window": self.context_window,
        }


def _without_userinfo(value: Any) -> Any:
    if isinstance(value, str) and "@" in value and "://" in value:
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None:
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port is not None else host
            return urlunsplit(parts._replace(netloc=netloc))
    return value


@dataclass(frozen=True, slots=True)
class ModelRoute:
    name: str
    deployments: tuple[Deployment, ...]
    fallbacks: tuple[str, ...]


class RoutingTable:
    def __init__(self, routes: Mapping[str, ModelRoute], rng: random.Random | None = None) -> None:
        self._routes = dict(routes)
        self._rng = rng or random.Random()

    @classmethod
    def build(
        cls,
        config: GatewayConfig,
        providers: Mapping[str, Provider[ProviderSettings]],
        on_circuit_change: Callable[[str, CircuitState], None] | None = None,
    ) -> RoutingTable:
        routing = config.routing
        routes: dict[str, ModelRoute] = {}
        for model in config.models:
            deployments = []
            for spec in model.deployments:
                name = spec.display_name
                notify = (lambda state, n=name: on_circuit_change(n, state)) if on_circuit_change else None
                deployments.append(
                    Deployment(
                        name=name,
                        model=model.name,
                        upstream_model=spec.model,
                        provider=providers[spec.provider],
                        weight=spec.weight,
                        timeout=spec.timeout,
                        input_price_per_1m=spec.input_price_per_1m,
                        output_price_per_1m=spec.output_price_per_1m,
                        context_window=spec.context_window,
                        breaker=CircuitBreaker(routing.failure_threshold, routing.cooldown, on_change=notify),
                    )
                )
            routes[model.name] = ModelRoute(model.name, tuple(deployments), tuple(model.fallbacks))
        return cls(routes)

    def get(self, name: str) -> ModelRoute | None:
        return self._routes.get(name)

    def names(self) -> list[str]:
        return sorted(self._routes)

    def deployments(self) -> list[Deployment]:
        return [d for route in self._routes.values() for d in route.deployments]

    def plan(self, route: ModelRoute, needs: Needs, extra: tuple[str, ...] = ()) -> list[Deployment]:
        """Deployments to try in order: the model's own (weighted shuffle), then each fallback model's.

        ``extra`` fallbacks (a release's chain) come before the model's configured ones.
        """
        ordered: list[Deployment] = []
        seen: set[str] = set()
        for name in (route.name, *extra, *route.fallbacks):
            candidate = self._routes.get(name)
            if candidate is None or name in seen:
                continue
            seen.add(name)
            ordered.extend(d for d in self._weighted_order(candidate.deployments) if needs.met_by(d.provider))
        return ordered

    def _weighted_order(self, deployments: tuple[Deployment, ...]) -> list[Deployment]:
        if len(deployments) == 1:
            return [deployments[0]]
        # Efraimidis-Spirakis: sort by u**(1/w), a weighted random permutation in one pass.
        keyed = [(self._rng.random() ** (1.0 / d.weight), d) for d in deployments]
        keyed.sort(key=lambda pair: pair[0], reverse=True)
        return [d for _, d in keyed]
