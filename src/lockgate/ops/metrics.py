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
        self.log_written = Counter("lockgate_request_log_written", "Request records written", registry=r)
        self.log_dropped = Counter("lockgate_request_log_dropped", "Request records dropped", registry=r)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)
