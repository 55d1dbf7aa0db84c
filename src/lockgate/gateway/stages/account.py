"""Account for every request: latency, time to first token, tokens, cost, status, and a log record.

This stage is outermost so that refusals (401, 403, 404) are recorded too. Token counts come from the
provider; when it sends none they are estimated (about four characters a token) and flagged as such.
For a stream the accounting happens when the stream ends, however it ends: the iterator is wrapped, not
buffered. The usage chunk the gateway always asks upstream for is passed on only if the client asked.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson

from lockgate.errors import GatewayError
from lockgate.gateway.pipeline import Call, Handler, Reply
from lockgate.ops.metrics import GatewayMetrics
from lockgate.ops.records import RequestRecord
from lockgate.ops.request_log import RequestLog
from lockgate.wire import ChatCompletionRequest

CLIENT_CLOSED = 499


class Account:
    def __init__(self, request_log: RequestLog, metrics: GatewayMetrics) -> None:
        self._log = request_log
        self._metrics = metrics

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        try:
            reply = await call_next(call)
        except GatewayError as error:
            self._finish(call, error.status, type(error).__name__, None, None, None)
            raise
        except BaseException as error:
            self._finish(call, 500, type(error).__name__, None, None, None)
            raise
        if reply.stream is not None:
            reply.stream = self._watch(call, reply.stream)
            return reply
        body = reply.body or {}
        self._finish(call, 200, None, body.get("usage"), None, body)
        return reply

    async def _watch(
        self, call: Call, chunks: AsyncIterator[dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        request = call.request
        forward_usage = isinstance(request, ChatCompletionRequest) and request.wants_stream_usage
        usage: dict[str, Any] | None = None
        ttft: float | None = None
        text: list[str] = []
        status, error_type = 200, None
        last: dict[str, Any] = {}
        try:
            async for chunk in chunks:
                last = chunk
                if chunk.get("usage"):
                    usage = chunk["usage"]
                    if not chunk.get("choices") and not forward_usage:
                        continue
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if ttft is None:
                            ttft = time.perf_counter() - call.started
                        text.append(content)
                yield chunk
            if forward_usage and usage is None:
                # The upstream ignored stream_options (llama.cpp's server does): the client asked, so answer.
                prompt_tokens, completion_tokens, _ = _tokens(call, None, None, "".join(text), 200)
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                }
                base: dict[str, Any] = {k: last[k] for k in ("id", "object", "created", "model") if k in last}
                yield {**base, "choices": [], "usage": usage}
                usage = None  # still an estimate: record it as one
        except GatewayError as error:
            status, error_type = error.status, type(error).__name__
            raise
        except BaseException as error:  # includes the client going away (cancellation)
            status, error_type = CLIENT_CLOSED, type(error).__name__
            raise
        finally:
            self._finish(call, status, error_type, usage, ttft, None, streamed="".join(text))

    def _finish(
        self,
        call: Call,
        status: int,
        error_type: str | None,
        usage: dict[str, Any] | None,
        ttft: float | None,
        body: dict[str, Any] | None,
        streamed: str | None = None,
    ) -> None:
        latency = time.perf_counter() - call.started
        principal, deployment = call.principal, call.deployment
        input_tokens, output_tokens, estimated = _tokens(call, usage, body, streamed, status)
        cost = deployment.cost(input_tokens, output_tokens) if deployment is not None else 0.0
        tenant = principal.tenant if principal is not None else "-"
        model = call.model if call.route is not None else "-"
        m = self._metrics
        m.requests.labels(call.endpoint, model, tenant, str(status)).inc()
        m.latency.labels(call.endpoint, model).observe(latency)
        if ttft is not None:
            m.ttft.labels(model).observe(ttft)
        # A cache hit called no upstream: its tokens are in the log row (with cost 0), not in the counters.
        if (input_tokens or output_tokens) and call.cache is None:
            m.tokens.labels(model, tenant, "input").inc(input_tokens)
            m.tokens.labels(model, tenant, "output").inc(output_tokens)
        if cost:
            # A mirrored (shadow) call is the platform's experiment, not the tenant's spend.
            (m.shadow_cost.labels(model, tenant) if call.shadow else m.cost.labels(model, tenant)).inc(cost)
        record = RequestRecord(
            id=call.request_id,
            created_at=datetime.now(UTC),
            endpoint=call.endpoint,
            stream=call.streaming,
            status_code=status,
            latency_ms=latency * 1000.0,
            tenant_id=principal.tenant_id if principal is not None else None,
            key_id=principal.key_id if principal is not None else None,
            team=principal.team if principal is not None else None,
            model=call.model if call.route is not None else None,
            deployment=deployment.name if deployment is not None else None,
            error_type=error_type,
            ttft_ms=ttft * 1000.0 if ttft is not None else None,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            usage_estimated=estimated,
            cost_usd=cost,
            attempts=call.attempts,
            fallback=call.fallback,
            route=call.route_name,
            release_id=call.release.id if call.release is not None else None,
            rollout_id=call.rollout_id,
            arm=call.arm,
            shadow=call.shadow,
            cache=call.cache,
        )
        if self._log.stores_content and principal is not None:
            record.request_body = call.raw
            record.response_body = streamed if body is None else orjson.dumps(body).decode()
        self._log.submit(record)
        if call.settle is not None:
            settle, call.settle = call.settle, None  # once, however the call ended
            settle(input_tokens + output_tokens, cost)


def _tokens(
    call: Call, usage: dict[str, Any] | None, body: dict[str, Any] | None, streamed: str | None, status: int
) -> tuple[int, int, bool]:
    if usage and isinstance(usage.get("prompt_tokens"), int):
        return int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0), False
    if call.deployment is None or (status >= 400 and not streamed):
        return 0, 0, False
    output = streamed or ""
    if body is not None:
        output = "".join(
            str((c.get("message") or {}).get("content") or "") for c in body.get("choices") or ()
        )
    return estimate_tokens(prompt_text(call)), estimate_tokens(output), True


def prompt_text(call: Call) -> str:
    request = call.request
    if isinstance(request, ChatCompletionRequest):
        return " ".join(m.content if isinstance(m.content, str) else "" for m in request.messages)
    return " ".join(request.texts) if request.is_text else ""


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0
