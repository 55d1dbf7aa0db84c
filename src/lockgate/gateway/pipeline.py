"""The request pipeline: a call passes through stages, onion style, and comes back as a reply.

A stage may enrich the call, answer early (refuse, serve from cache) or wrap what comes back (time it,
account for it, watch a stream). The chain is composed once at start-up.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

from lockgate.gateway.routebook import ServingRelease
from lockgate.routing.table import Deployment, ModelRoute
from lockgate.security.keyring import Principal
from lockgate.wire import ChatCompletionRequest, EmbeddingRequest

Endpoint = Literal["chat.completions", "embeddings"]


@dataclass(slots=True)
class Call:
    request_id: str
    endpoint: Endpoint
    raw: bytes
    body: dict[str, Any]
    request: ChatCompletionRequest | EmbeddingRequest
    authorization: str | None
    started: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None
    route: ModelRoute | None = None
    deployment: Deployment | None = None
    attempts: int = 0
    fallback: bool = False
    environment: str | None = None
    release: ServingRelease | None = None
    route_name: str | None = None
    fallbacks: tuple[str, ...] = ()
    session: str | None = None
    """The ``x-lockgate-session`` header: keeps a caller on one rollout arm when there is no ``user``."""
    rollout_id: str | None = None
    arm: str | None = None
    """``baseline`` or ``candidate`` during a rollout; ``shadow`` for a mirrored call."""
    shadow: bool = False
    variables: dict[str, Any] | None = None
    """A ``route:`` call's prompt variables, as the caller sent them (set by ResolveRelease)."""
    settle: Callable[[int, float], None] | None = None
    """Set by the limits stage: called by the Account stage, once, with the call's tokens and cost."""
    cache: str | None = None
    """``exact`` or ``semantic`` when the answer came from the response cache (no upstream was called)."""
    cache_header: str | None = None
    """The ``x-lockgate-cache`` request header (``bypass``, ``refresh``, ``max-age=N``)."""
    cache_control: str | None = None
    """The ``Cache-Control`` request header (``no-store``, ``no-cache``, ``max-age=N``)."""

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def chat(self) -> ChatCompletionRequest:
        assert isinstance(self.request, ChatCompletionRequest)
        return self.request

    @property
    def streaming(self) -> bool:
        return isinstance(self.request, ChatCompletionRequest) and self.request.stream


@dataclass(slots=True)
class Reply:
    """A complete answer (``body``) or a stream of OpenAI chunk objects (``stream``)."""

    body: dict[str, Any] | None = None
    stream: AsyncIterator[dict[str, Any]] | None = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Awaitable[Reply]]


class Stage(Protocol):
    async def __call__(self, call: Call, call_next: Handler) -> Reply: ...


def compose(stages: Sequence[Stage], terminal: Handler) -> Handler:
    handler = terminal
    for stage in reversed(stages):
        handler = partial(stage, call_next=handler)
    return handler
