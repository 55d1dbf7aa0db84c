"""Anthropic's Messages API (``POST /v1/messages``) served behind the OpenAI wire format.

This module owns the transport only: settings, headers and the HTTP calls. Every mapping between the
two dialects lives in ``anthropic_translate``, so it can be read and tested without a server.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, Literal

import orjson
from pydantic import Field

from lockgate.config.values import EnvSecret, EnvStr
from lockgate.providers.anthropic_translate import StreamTranslator, build_request, translate_response
from lockgate.providers.base import ChatInvocation, FailureKind, Provider, ProviderFailure, ProviderSettings
from lockgate.providers.http import HttpUpstream

_MESSAGES_PATH = "/v1/messages"
# Upstream JSON that lacks the documented shape is an upstream fault to retry, not a gateway crash.
_MALFORMED = (KeyError, TypeError, AttributeError, ValueError)


class AnthropicSettings(ProviderSettings):
    kind: Literal["anthropic"] = "anthropic"
    base_url: EnvStr = Field(default="https://api.anthropic.com", description="Without the /v1 prefix")
    api_key: EnvSecret
    anthropic_version: str = "2023-06-01"
    default_max_tokens: int = Field(
        default=4096, gt=0, description="Anthropic requires max_tokens on every call"
    )
    max_connections: int = Field(default=512, gt=0)


class AnthropicProvider(Provider[AnthropicSettings]):
    kind = "anthropic"
    Settings = AnthropicSettings

    supports_tools = True
    supports_response_format = False
    supports_n = False
    supports_embeddings = False

    def __init__(self, name: str, settings: AnthropicSettings) -> None:
        super().__init__(name, settings)
        key = settings.api_key.get_secret_value()
        headers = {"x-api-key": key, "anthropic-version": settings.anthropic_version}
        self.http = HttpUpstream(
            settings.base_url, headers, secrets=[key], max_connections=settings.max_connections
        )

    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()

    async def chat(self, call: ChatInvocation) -> dict[str, Any]:
        payload = build_request(call.chat, self.settings.default_max_tokens)
        answer = await self.http.post_json(_MESSAGES_PATH, payload, call.timeout)
        if not isinstance(answer.get("content"), list):
            raise ProviderFailure("upstream answer has no content", kind=FailureKind.TRANSIENT)
        try:
            return translate_response(answer, created=int(time.time()), fallback_model=call.chat.model)
        except _MALFORMED:
            raise ProviderFailure("upstream sent a malformed message", kind=FailureKind.TRANSIENT) from None

    async def chat_stream(self, call: ChatInvocation) -> AsyncIterator[dict[str, Any]]:
        payload = build_request(call.chat, self.settings.default_max_tokens)
        payload["stream"] = True
        translator = StreamTranslator(created=int(time.time()), model=call.chat.model, scrub=self.http.scrub)
        # aclosing: an early exit (error event, client gone) hands the connection back at once.
        async with aclosing(self.http.post_sse(_MESSAGES_PATH, payload, call.timeout)) as events:
            async for event in events:
                for chunk in _feed(translator, _decode(event.data)):
                    yield chunk
                if translator.finished:
                    return
        raise ProviderFailure("upstream stream ended before message_stop", kind=FailureKind.TRANSIENT)


def _decode(data: str) -> dict[str, Any]:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderFailure("upstream sent an event that is not JSON", kind=FailureKind.TRANSIENT) from None
    if not isinstance(event, dict):
        raise ProviderFailure("upstream sent an event that is not an object", kind=FailureKind.TRANSIENT)
    return event


def _feed(translator: StreamTranslator, event: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        return translator.feed(event)
    except _MALFORMED:
        raise ProviderFailure("upstream sent a malformed event", kind=FailureKind.TRANSIENT) from None
