"""Shadow traffic: a share of live calls, sent again to a rollout's candidate, off the client's path.

The client only ever gets the current release's answer; the mirrored call runs afterwards in a task of
its own through the same pipeline (so it is rendered, invoked, checked and accounted like any call),
non-streaming, pinned to the candidate and marked ``shadow``: its request log row and its cost are the
platform's experiment, kept apart from the tenant's spend. At most ``limit`` mirrored calls are in flight
per worker; beyond that they are skipped and counted, never queued behind client traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import orjson

from lockgate.gateway.pipeline import Call, Handler
from lockgate.gateway.routebook import ServingRelease
from lockgate.ops.metrics import GatewayMetrics
from lockgate.wire import ChatCompletionRequest, validate

log = logging.getLogger(__name__)


class Mirror:
    def __init__(self, metrics: GatewayMetrics, limit: int = 64) -> None:
        self._metrics = metrics
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()
        self.handler: Handler | None = None
        """The whole pipeline; set once the gateway has composed it."""

    def send(self, call: Call, body: dict[str, Any], candidate: ServingRelease, rollout_id: str) -> None:
        if self.handler is None:
            return
        if len(self._tasks) >= self._limit:
            self._metrics.shadow_dropped.inc()
            return
        mirrored = {key: value for key, value in body.items() if key != "stream_options"}
        mirrored["stream"] = False
        shadow = Call(
            request_id=f"shd_{uuid.uuid4().hex}",
            endpoint=call.endpoint,
            raw=orjson.dumps(mirrored),
            body=mirrored,
            request=validate(mirrored, ChatCompletionRequest),
            authorization=None,
            principal=call.principal,
            environment=call.environment,
            session=call.session,
            release=candidate,
            rollout_id=rollout_id,
            arm="shadow",
            shadow=True,
        )
        task = asyncio.get_running_loop().create_task(self._run(self.handler, shadow))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 10.0) -> None:
        """Let mirrored calls in flight finish (on shutdown), up to ``timeout`` seconds."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout)

    @staticmethod
    async def _run(handler: Handler, call: Call) -> None:
        try:
            await handler(call)
        except Exception:
            # Accounted (and logged as a failed request) by the pipeline; the client never waits on it.
            log.debug("mirrored call %s failed", call.request_id, exc_info=True)
