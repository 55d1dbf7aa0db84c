"""OpenAI-compatible HTTP upstreams: OpenAI, vLLM, Ollama, TGI, llama.cpp server, LiteLLM, Groq, ...

The client's body is forwarded as it came (vendor extensions included) with only ``model`` replaced.
Streams always ask the upstream for usage so every request is accounted for; the usage chunk is passed
to the client only when it asked for one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, Literal

import orjson
from pydantic import Field

from lockgate.config.values import EnvSecret, EnvSecretText, EnvStr
from lockgate.providers.base import (
    ChatInvocation,
    EmbeddingInvocation,
    FailureKind,
    Provider,
    ProviderFailure,
    ProviderSettings,
)
from lockgate.providers.http import HttpUpstream


class OpenAICompatibleSettings(ProviderSettings):
    kind: Literal["openai"] = "openai"
    base_url: EnvStr = Field(description="Base URL including the version prefix, e.g. http://host:8000/v1")
    api_key: EnvSecret | None = None
    organization: str | None = None
    max_connections: int = Field(default=512, gt=0)
    headers: dict[str, EnvSecretText] = Field(
        default_factory=dict,
        description="Extra headers; values may hold credentials and are treated as secrets.",
    )


class OpenAICompatibleProvider(Provider[OpenAICompatibleSettings]):
    kind = "openai"
    Settings = OpenAICompatibleSettings

    supports_tools = True
    supports_response_format = True
    supports_n = True
    supports_embeddings = True

    def __init__(self, name: str, settings: OpenAICompatibleSettings) -> None:
        super().__init__(name, settings)
        headers = {name: value.get_secret_value() for name, value in settings.headers.items()}
        secrets = [value for value in headers.values() if len(value) >= 8]
        if settings.api_key is not None:
            key = settings.api_key.get_secret_value()
            headers["authorization"] = f"Bearer {key}"
            secrets.append(key)
        if settings.organization:
            headers["openai-organization"] = settings.organization
        self.http = HttpUpstream(
            settings.base_url, headers, secrets=secrets, max_connections=settings.max_connections
        )

    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()

    async def chat(self, call: ChatInvocation) -> dict[str, Any]:
        answer = await self.http.post_json("/chat/completions", call.body, call.timeout)
        if not isinstance(answer.get("choices"), list):
            raise ProviderFailure("upstream answer has no choices", kind=FailureKind.TRANSIENT)
        return answer

    async def chat_stream(self, call: ChatInvocation) -> AsyncIterator[dict[str, Any]]:
        body = dict(call.body)
        body["stream"] = True
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        async with aclosing(self.http.post_sse("/chat/completions", body, call.timeout)) as events:
            async for event in events:
                if event.data == "[DONE]":
                    return
                yield _chunk(event.data, self.http.scrub)

    async def embed(self, call: EmbeddingInvocation) -> dict[str, Any]:
        answer = await self.http.post_json("/embeddings", call.body, call.timeout)
        if not isinstance(answer.get("data"), list):
            raise ProviderFailure("upstream answer has no data", kind=FailureKind.TRANSIENT)
        return answer


def _chunk(data: str, scrub: Callable[[str], str]) -> dict[str, Any]:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderFailure("upstream sent an event that is not JSON", kind=FailureKind.TRANSIENT) from None
    if not isinstance(chunk, dict):
        raise ProviderFailure("upstream sent an event that is not an object", kind=FailureKind.TRANSIENT)
    if "error" in chunk:
        detail = chunk["error"].get("message") if isinstance(chunk["error"], dict) else chunk["error"]
        raise ProviderFailure(f"upstream stream failed: {scrub(str(detail))}", kind=FailureKind.TRANSIENT)
    return chunk
