"""What is recorded about each request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    id: str
    created_at: datetime
    endpoint: str
    stream: bool
    status_code: int
    latency_ms: float
    tenant_id: str | None = None
    key_id: str | None = None
    team: str | None = None
    model: str | None = None
    deployment: str | None = None
    error_type: str | None = None
    ttft_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    attempts: int = 0
    fallback: bool = False
    route: str | None = None
    release_id: str | None = None
    rollout_id: str | None = None
    arm: str | None = None
    shadow: bool = False
    cache: str | None = None
    request_body: bytes | None = None
    response_body: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "tenant_id": self.tenant_id,
            "key_id": self.key_id,
            "team": self.team,
            "endpoint": self.endpoint,
            "model": self.model,
            "deployment": self.deployment,
            "stream": self.stream,
            "status_code": self.status_code,
            "error_type": self.error_type,
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "usage_estimated": self.usage_estimated,
            "cost_usd": self.cost_usd,
            "attempts": self.attempts,
            "fallback": self.fallback,
            "route": self.route,
            "release_id": self.release_id,
            "rollout_id": self.rollout_id,
            "arm": self.arm,
            "shadow": self.shadow,
            "cache": self.cache,
        }
