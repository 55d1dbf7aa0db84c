"""The shape of ``lockgate.yaml``. Unknown keys are errors so typos fail loudly."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lockgate.config.values import EnvSecret, EnvSecretText


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeploymentConfig(Strict):
    provider: str = Field(description="Name of an entry under `providers`.")
    model: str = Field(description="The model name the upstream knows.")
    name: str | None = Field(default=None, description="Unique deployment name; defaults to provider/model.")
    weight: float = Field(default=1.0, gt=0)
    timeout: float = Field(
        default=60.0, gt=0, description="Seconds; for streams, the longest silence allowed."
    )
    input_price_per_1m: float = Field(default=0.0, ge=0, description="USD per million input tokens.")
    output_price_per_1m: float = Field(default=0.0, ge=0, description="USD per million output tokens.")
    context_window: int | None = Field(default=None, gt=0)

    @property
    def display_name(self) -> str:
        return self.name or f"{self.provider}/{self.model}"


class ModelConfig(Strict):
    name: str = Field(min_length=1, description="The public model name clients send.")
    deployments: list[DeploymentConfig] = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list, description="Models tried, in order, when all fail.")
    description: str | None = None


class TenantConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    allowed_models: list[str] | None = Field(default=None, description="None means every model.")


class RoutingConfig(Strict):
    retries: int = Field(default=2, ge=0, le=10, description="Extra attempts per deployment.")
    backoff_initial: float = Field(default=0.05, gt=0, description="Seconds; doubled per attempt, jittered.")
    backoff_max: float = Field(default=2.0, gt=0)
    failure_threshold: int = Field(default=3, ge=1, description="Consecutive failures that open a circuit.")
    cooldown: float = Field(default=30.0, gt=0, description="Seconds a circuit stays open before a probe.")


class ServerConfig(Strict):
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    metrics_token: EnvSecret | None = Field(
        default=None,
        description="Bearer token a scraper sends for /metrics and /readyz details (a ${ENV_VAR}).",
    )
    change_poll_interval: float = Field(
        default=0.25,
        gt=0,
        le=300,
        description="Seconds between polls of the store's change versions (keys, routes); with redis.url, "
        "change notices make workers poll at once and this is the fallback.",
    )


class ControlConfig(Strict):
    gates_required: bool = Field(
        default=True, description="Stage and prod refuse releases of routes that no gate guards there."
    )
    opa_urls: list[str] = Field(
        default_factory=list, description="OPA servers a gate may name as opa_url; any other is refused."
    )
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0, description="Control API request limit.")


class RequestLogConfig(Strict):
    store_content: bool = Field(default=False, description="Keep prompt and completion text.")
    content_retention_days: float = Field(default=7.0, gt=0)
    batch_size: int = Field(default=500, gt=0)
    flush_interval: float = Field(default=0.2, gt=0, description="Seconds between batch writes.")
    queue_size: int = Field(
        default=100_000,
        gt=0,
        description="Records waiting to be written (about 0.7 KB each, plus stored text) before new ones "
        "are dropped and counted; what rides out a store outage.",
    )


class RedisConfig(Strict):
    """Redis, for state shared by several replicas (limits, budgets, the cache, change notices)."""

    url: EnvSecretText | None = Field(
        default=None,
        description="redis://[user:password@]host:port/db, e.g. ${LOCKGATE_REDIS_URL}; none: in process",
    )
    prefix: str = Field(
        default="lockgate:", min_length=1, max_length=64, description="Prefix of every key and channel."
    )
    timeout: float = Field(
        default=1.0, gt=0, le=10, description="Seconds an operation may take before it counts as failed."
    )


class CacheTargetConfig(Strict):
    """The cache settings of one route or one model, over the defaults under `cache`."""

    enabled: bool = Field(default=True, description="false: this route's or model's calls are never cached.")
    semantic: bool = Field(
        default=False, description="Also answer from a stored answer to a similar last user message."
    )
    nondeterministic: bool | None = Field(
        default=None,
        description="Cache calls that sample (temperature not 0 and no seed); none: `cache.nondeterministic` "
        "for exact matches, false for semantic ones.",
    )
    ttl: float | None = Field(default=None, gt=0, description="Seconds; none: `cache.ttl`.")
    threshold: float | None = Field(
        default=None, gt=0, le=1, description="Cosine similarity; none: `cache.semantic.threshold`."
    )
    isolation: Literal["tenant", "key"] | None = Field(
        default=None, description="Who shares entries; none: `cache.isolation`."
    )
    variable: str | None = Field(
        default=None,
        description="Routes: the prompt variable compared by meaning when a call sends no messages of its "
        "own; none: the call's only variable.",
    )


class SemanticCacheConfig(Strict):
    enabled: bool = Field(
        default=False, description="Master switch; the routes and models that opt in say `semantic: true`."
    )
    threshold: float = Field(
        default=0.9, gt=0, le=1, description="Least cosine similarity of the last user messages for a hit."
    )
    model: str | None = Field(
        default=None,
        description="A gateway embeddings model (in `models`); none: the local all-MiniLM-L6-v2.",
    )
    max_entries: int = Field(default=1000, gt=0, description="Vectors kept per scope; the oldest go first.")
    max_vectors: int = Field(
        default=100_000,
        gt=0,
        description="Vectors kept per worker in all scopes (about 1.5 KB each); the least used scopes go.",
    )
    timeout: float = Field(
        default=1.0, gt=0, description="Seconds an embedding may take before the lookup is skipped."
    )


class CacheConfig(Strict):
    """The response cache of chat completions (docs/caching.md)."""

    enabled: bool = False
    backend: Literal["memory", "redis"] = Field(
        default="memory", description="memory: per worker process; redis: shared, needs `redis.url`."
    )
    ttl: float = Field(default=3600.0, gt=0, description="Seconds an answer is kept.")
    max_entries: int = Field(default=10_000, gt=0, description="memory backend: answers kept per worker.")
    max_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="memory backend: bytes of answers kept per worker."
    )
    nondeterministic: bool = Field(
        default=False, description="Exact-cache calls that sample (temperature not 0 and no seed) too."
    )
    isolation: Literal["tenant", "key"] = Field(
        default="tenant", description="tenant: a tenant's keys share entries; key: each key has its own."
    )
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)
    routes: dict[str, CacheTargetConfig] = Field(
        default_factory=dict, description="Route name -> settings for its `route:NAME` calls."
    )
    models: dict[str, CacheTargetConfig] = Field(
        default_factory=dict, description="Public model name -> settings for plain calls of that model."
    )


class LimitsConfig(Strict):
    """How limit rules and budgets (set through the control API) are counted."""

    backend: Literal["memory", "redis"] = Field(
        default="memory",
        description="memory: this server's workers share counters; redis: every replica shares them.",
    )
    on_backend_error: Literal["closed", "open"] = Field(
        default="closed",
        description="When the counters cannot be reached: refuse limited calls (503) or let them through.",
    )
    default_max_tokens: int = Field(
        default=4096, gt=0, description="max_tokens set on a counted call that has none and no rule cap."
    )
    reservation_hold: float = Field(
        default=600.0, gt=0, description="Seconds before an unsettled reservation (a lost call) is released."
    )
    reconcile_interval: float = Field(
        default=30.0, gt=0, description="Seconds between raising budget counters to the spend in the store."
    )
    alert_webhook: EnvSecretText | None = Field(
        default=None, description="URL that gets a JSON POST when a budget passes its soft cap (a ${VAR})."
    )


class GatewayConfig(Strict):
    providers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Provider name -> settings; `kind` picks the provider class."
    )
    models: list[ModelConfig] = Field(default_factory=list)
    tenants: list[TenantConfig] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)

    @field_validator("providers")
    @classmethod
    def _providers_have_kind(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, spec in value.items():
            if not isinstance(spec, dict) or "kind" not in spec:
                raise LocatedValueError(
                    f"providers.{name}", "needs a `kind` (openai, anthropic, llama_cpp, ...)"
                )
        return value

    @model_validator(mode="after")
    def _references_resolve(self) -> GatewayConfig:
        names = [m.name for m in self.models]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _located(f"models[{i}].name", f"duplicate model name {name!r}")
        deployment_names: set[str] = set()
        for i, model in enumerate(self.models):
            for j, deployment in enumerate(model.deployments):
                if deployment.provider not in self.providers:
                    raise _located(
                        f"models[{i}].deployments[{j}].provider", f"unknown provider {deployment.provider!r}"
                    )
                if deployment.display_name in deployment_names:
                    raise _located(
                        f"models[{i}].deployments[{j}].name",
                        f"duplicate deployment {deployment.display_name!r}",
                    )
                deployment_names.add(deployment.display_name)
            for k, fallback in enumerate(model.fallbacks):
                if fallback == model.name or fallback not in names:
                    raise _located(f"models[{i}].fallbacks[{k}]", f"unknown or self fallback {fallback!r}")
        for i, tenant in enumerate(self.tenants):
            for k, allowed in enumerate(tenant.allowed_models or []):
                if allowed not in names:
                    raise _located(f"tenants[{i}].allowed_models[{k}]", f"unknown model {allowed!r}")
        return self

    @model_validator(mode="after")
    def _cache_references_resolve(self) -> GatewayConfig:
        cache, names = self.cache, {m.name for m in self.models}
        if cache.enabled and cache.backend == "redis" and self.redis.url is None:
            raise _located("cache.backend", "the redis backend needs `redis.url`")
        if cache.semantic.model is not None and cache.semantic.model not in names:
            raise _located("cache.semantic.model", f"unknown model {cache.semantic.model!r}")
        for name in cache.models:
            if name not in names:
                raise _located(f"cache.models.{name}", f"unknown model {name!r}")
        return self


class LocatedValueError(ValueError):
    """A cross-field error that knows which field it is about."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _located(path: str, message: str) -> LocatedValueError:
    return LocatedValueError(path, message)
