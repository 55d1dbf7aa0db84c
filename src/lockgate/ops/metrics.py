"""Prometheus metrics of the gateway. Labels never carry keys, prompts or other secrets.

Each gateway owns its registry (no module-level state). With several worker processes,
``PROMETHEUS_MULTIPROC_DIR`` is set by ``lockgate serve`` and ``render`` merges every worker's samples.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "lockgate_requests", "Requests answered", ["endpoint", "model", "tenant", "status"], registry=r
        )
        self.latency = Histogram(
            "lockgate_request_duration_seconds",
            "Time from request to last byte",
            ["endpoint", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "lockgate_time_to_first_token_seconds",
            "Time to the first streamed chunk",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("lockgate_tokens", "Tokens", ["model", "tenant", "direction"], registry=r)
        self.cost = Counter("lockgate_cost_usd", "Cost in US dollars", ["model", "tenant"], registry=r)
        self.shadow_cost = Counter(
            "lockgate_shadow_cost_usd",
            "Cost of calls mirrored to a rollout's candidate (not the tenant's spend)",
            ["model", "tenant"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "lockgate_shadow_dropped", "Mirrored calls skipped because too many were in flight", registry=r
        )
        self.attempts = Counter(
            "lockgate_upstream_attempts",
            "Calls to upstream deployments",
            ["deployment", "outcome"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "lockgate_circuit_open",
            "1 while a deployment's circuit is open or half-open",
            ["deployment"],
            registry=r,
            multiprocess_mode="max",
        )
        self.contract_violations = Counter(
            "lockgate_output_contract_violations",
            "Answers that broke a release's output contract",
            ["route"],
            registry=r,
        )
        self.releases_unservable = Gauge(
            "lockgate_releases_unservable",
            "Releases a route points at that this worker cannot compile (skipped; see the log)",
            registry=r,
            multiprocess_mode="max",
        )
        self.rollout_analyses = Counter(
            "lockgate_rollout_analyses",
            "Rollout analyses by outcome: pass, inconclusive, fail (rolled back), paused (sample ratio "
            "mismatch), aborted (the environment moved)",
            ["tenant", "route", "environment", "outcome"],
            registry=r,
        )
        self.cache_requests = Counter(
            "lockgate_cache_requests",
            "Chat completions the response cache saw, by outcome: hit, miss, bypass (the caller asked), "
            "skip (not cacheable as sent); kind: exact, or semantic where the call could match by meaning",
            ["tenant", "route_or_model", "kind", "outcome"],
            registry=r,
        )
        self.cache_similarity = Histogram(
            "lockgate_cache_semantic_similarity",
            "Best cosine similarity found by each semantic cache lookup (hit or not)",
            ["route_or_model"],
            buckets=(0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0),
            registry=r,
        )
        self.cache_errors = Counter(
            "lockgate_cache_errors",
            "Cache operations that failed and were served as misses, by part: redis, embedder",
            ["part"],
            registry=r,
        )
        self.limit_decisions = Counter(
            "lockgate_limit_decisions",
            "Admissions against limits and budgets: admitted, refused by what (requests, tokens, "
            "concurrent, budget), or the backend unavailable / a settle lost",
            ["outcome"],
            registry=r,
        )
        self.budget_alerts = Counter(
            "lockgate_budget_alerts",
            "Soft-cap alerts fired (once per budget, scope and period across every process)",
            ["tenant", "budget"],
            registry=r,
        )
        self.log_written = Counter("lockgate_request_log_written", "Request records written", registry=r)
        self.log_dropped = Counter(
            "lockgate_request_log_dropped",
            "Request records dropped: overflow (request_log.queue_size records were already waiting), "
            "refused (the store rejected the row), shutdown (the store was unreachable at shutdown)",
            ["reason"],
            registry=r,
        )
        for reason in ("overflow", "refused", "shutdown"):
            self.log_dropped.labels(reason)  # exported as 0 from the start, so alerts see the series
        self.log_pending = Gauge(
            "lockgate_request_log_pending",
            "Request records waiting in memory to be written (grows while the store is unreachable)",
            registry=r,
            multiprocess_mode="livesum",
        )

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)
