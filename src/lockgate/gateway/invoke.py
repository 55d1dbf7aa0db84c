"""The last stage: send the call to a deployment, retrying and falling back until one answers.

Deployments are tried in the routing table's order (the model's own, then each fallback model's),
skipping those whose circuit is open. Transient failures (429, 5xx, connection errors, timeouts) are
retried on the same deployment with full-jitter exponential backoff, honouring ``Retry-After``; a
deployment that refuses us moves on at once; a failure caused by the request itself goes straight back
to the client. A stream that fails before its first chunk falls back like any call; after the first
chunk the client already has bytes, so the failure ends the stream with an error event instead.
"""

from __future__ import annotations

import asyncio
import base64
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec

from lockgate.config.schema import RoutingConfig
from lockgate.errors import (
    GatewayError,
    InvalidRequest,
    NoHealthyDeployment,
    UpstreamBadGateway,
    UpstreamTimeout,
)
from lockgate.gateway.pipeline import Call, Reply
from lockgate.ops.metrics import GatewayMetrics
from lockgate.providers.base import ChatInvocation, EmbeddingInvocation, FailureKind, ProviderFailure
from lockgate.routing.table import Deployment, Needs, RoutingTable
from lockgate.wire import ChatCompletionRequest, EmbeddingRequest, RequestT

Attempt = Callable[[Deployment], Awaitable[Reply]]


class Invoker:
    def __init__(
        self,
        table: RoutingTable,
        routing: RoutingConfig,
        metrics: GatewayMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self._table = table
        self._routing = routing
        self._metrics = metrics
        self._rng = rng or random.Random()

    async def __call__(self, call: Call) -> Reply:
        request = call.request
        if isinstance(request, EmbeddingRequest):
            needs = Needs(embeddings=True)
            return await self._run(call, needs, lambda d: self._embed(call, request, d))
        needs = Needs(
            tools=bool(request.tools),
            response_format=request.response_format is not None and request.response_format.type != "text",
            n=(request.n or 1) > 1,
        )
        if request.stream:
            return await self._run(call, needs, lambda d: self._open_stream(call, request, d))
        return await self._run(call, needs, lambda d: self._chat(call, request, d))

    async def _run(self, call: Call, needs: Needs, attempt: Attempt) -> Reply:
        assert call.route is not None
        plan = self._table.plan(call.route, needs, call.fallbacks)
        if not plan:
            raise InvalidRequest(
                f"No deployment of '{call.model}' supports this request "
                "(tools, response_format, n > 1 or embeddings).",
                code="unsupported_parameter",
            )
        last: ProviderFailure | None = None
        for deployment in plan:
            for retry in range(self._routing.retries + 1):
                if not deployment.breaker.allow():
                    break
                call.attempts += 1
                call.deployment = deployment
                call.fallback = deployment.model != call.route.name
                try:
                    reply = await attempt(deployment)
                except ProviderFailure as failure:
                    self._metrics.attempts.labels(deployment.name, failure.kind.value).inc()
                    if failure.kind is FailureKind.CLIENT:
                        raise InvalidRequest(failure.message, code="upstream_rejected_request") from None
                    deployment.breaker.failure()
                    last = failure
                    if not failure.retryable or retry == self._routing.retries:
                        break
                    await asyncio.sleep(self._backoff(retry, failure.retry_after))
                    continue
                deployment.breaker.success()
                self._metrics.attempts.labels(deployment.name, "ok").inc()
                return reply
        call.deployment = None if last is None else call.deployment
        raise _exhausted(call, last)

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        ceiling = min(self._routing.backoff_max, self._routing.backoff_initial * 2**retry)
        delay = self._rng.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._routing.backoff_max))
        return delay

    async def _chat(self, call: Call, request: ChatCompletionRequest, deployment: Deployment) -> Reply:
        body = await deployment.provider.chat(_chat_invocation(call, request, deployment))
        body["model"] = call.model
        return Reply(body=body)

    async def _embed(self, call: Call, request: EmbeddingRequest, deployment: Deployment) -> Reply:
        # Upstreams differ in base64 support, so always ask for floats and encode here if asked to.
        upstream = _upstream_body(call.body, deployment)
        upstream.pop("encoding_format", None)
        body = await deployment.provider.embed(
            EmbeddingInvocation(upstream, _retarget(request, deployment), deployment.timeout, call.request_id)
        )
        body["model"] = call.model
        if request.encoding_format == "base64":
            for item in body.get("data") or ():
                item["embedding"] = _base64_floats(item.get("embedding") or [])
        return Reply(body=body)

    async def _open_stream(self, call: Call, request: ChatCompletionRequest, deployment: Deployment) -> Reply:
        chunks = deployment.provider.chat_stream(_chat_invocation(call, request, deployment))
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        return Reply(stream=self._continue(call, deployment, first, chunks))

    async def _continue(
        self,
        call: Call,
        deployment: Deployment,
        first: dict[str, Any] | None,
        rest: AsyncIterator[dict[str, Any]],
    ) -> AsyncIterator[dict[str, Any]]:
        try:
            if first is not None:
                first["model"] = call.model
                yield first
                async for chunk in rest:
                    chunk["model"] = call.model
                    yield chunk
        except ProviderFailure as failure:
            deployment.breaker.failure()
            self._metrics.attempts.labels(deployment.name, failure.kind.value).inc()
            raise _terminal_error(failure, call.request_id) from None
        finally:
            close = getattr(rest, "aclose", None)
            if close is not None:
                await close()


def _chat_invocation(call: Call, request: ChatCompletionRequest, deployment: Deployment) -> ChatInvocation:
    """The body and its typed view, both naming the deployment's upstream model."""
    body = _upstream_body(call.body, deployment)
    return ChatInvocation(body, _retarget(request, deployment), deployment.timeout, call.request_id)


def _retarget(request: RequestT, deployment: Deployment) -> RequestT:
    return msgspec.structs.replace(request, model=deployment.upstream_model)


def _base64_floats(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def _upstream_body(body: dict[str, Any], deployment: Deployment) -> dict[str, Any]:
    forwarded = dict(body)
    forwarded["model"] = deployment.upstream_model
    return forwarded


def _exhausted(call: Call, last: ProviderFailure | None) -> GatewayError:
    if last is None:
        return NoHealthyDeployment(
            f"Every deployment of '{call.model}' is resting after repeated failures; retry shortly. "
            f"(request id {call.request_id})"
        )
    return _terminal_error(last, call.request_id)


def _terminal_error(failure: ProviderFailure, request_id: str) -> GatewayError:
    if failure.kind is FailureKind.TIMEOUT:
        return UpstreamTimeout(f"The upstream did not answer in time. (request id {request_id})")
    return UpstreamBadGateway(f"The upstream failed: {failure.message} (request id {request_id})")
