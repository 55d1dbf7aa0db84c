"""The Anthropic provider against a local aiohttp server replaying recorded-format payloads, and its
pure translation functions."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from lockgate.providers.anthropic import AnthropicProvider, AnthropicSettings
from lockgate.providers.anthropic_translate import (
    build_request,
    translate_messages,
    translate_response,
    translate_tool_choice,
)
from lockgate.providers.base import ChatInvocation, FailureKind, ProviderFailure
from lockgate.wire import ChatCompletionRequest, ChatMessage

FIXTURES = Path(__file__).parent.parent / "fixtures" / "anthropic"
API_KEY = "sk-ant-api03-lockgate-test-key-Zq9"  # echoed by error_401_authentication.json
MODEL = "claude-sonnet-4-5-20250929"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeAnthropic:
    """Records every request and answers with the reply the test chose."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)

    def reply(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.body, self.status, self.headers = body, status, headers or {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert isinstance(body, dict)
        self.received.append(Received(request.path, {k.lower(): v for k, v in request.headers.items()}, body))
        if self.status != 200 or not self.body.startswith(b"event:"):
            return web.Response(
                status=self.status, body=self.body, headers=self.headers, content_type="application/json"
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        for event in self.body.split(b"\n\n"):
            # Half an event per write, so lines (and UTF-8 characters) straddle network reads.
            half = len(event) // 2
            await response.write(event[:half])
            await response.write(event[half:] + b"\n\n")
        await response.write_eof()
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic()
    app = web.Application()
    app.router.add_post("/v1/messages", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


async def make_provider(base_url: str, monkeypatch: pytest.MonkeyPatch) -> AnthropicProvider:
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", API_KEY)
    settings = AnthropicSettings.model_validate({"api_key": "${ANTHROPIC_TEST_KEY}", "base_url": base_url})
    provider = AnthropicProvider("claude", settings)
    await provider.start()
    return provider


@pytest.fixture
async def provider(
    upstream: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AnthropicProvider]:
    provider = await make_provider(upstream.url, monkeypatch)
    yield provider
    await provider.close()


def invocation(body: dict[str, Any]) -> ChatInvocation:
    return ChatInvocation(
        body=body, chat=msgspec.convert(body, ChatCompletionRequest), timeout=5.0, request_id="req-1"
    )


def hello() -> ChatInvocation:
    return invocation({"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]})


async def collect(stream: AsyncIterator[dict[str, Any]], into: list[dict[str, Any]]) -> None:
    async for chunk in stream:
        into.append(chunk)


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"location": {"type": "string"}},
    "required": ["location"],
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a place",
        "parameters": WEATHER_PARAMETERS,
    },
}


async def test_chat_sends_translated_request_and_returns_tool_calls(
    upstream: FakeAnthropic, provider: AnthropicProvider
) -> None:
    upstream.reply(fixture("message_tool_use.json"))
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_completion_tokens": 300,
        "temperature": 1.6,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "user-42",
    }
    before = int(time.time())
    result = await provider.chat(invocation(body))

    [sent] = upstream.received
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == API_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert sent.body == {
        "model": MODEL,
        "system": "You are terse.\n\nUse metric units.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"location": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C and sunny"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather forecast for a place",
                "input_schema": WEATHER_PARAMETERS,
            }
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "max_tokens": 300,
        "temperature": 1.0,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
    }

    assert result["object"] == "chat.completion"
    assert result["id"] == "msg_01Aq9w938a90dw8qLockgate"
    assert result["model"] == MODEL
    assert before <= result["created"] <= int(time.time())
    [choice] = result["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll look up tomorrow's forecast for Paris."
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {
        "location": "Paris, France",
        "unit": "celsius",
        "days": 1,
    }
    assert result["usage"] == {"prompt_tokens": 502, "completion_tokens": 89, "total_tokens": 591}


async def test_chat_text_answer_counts_cached_prompt_tokens(
    upstream: FakeAnthropic, provider: AnthropicProvider
) -> None:
    upstream.reply(fixture("message_text.json"))
    result = await provider.chat(hello())
    assert upstream.received[0].body["max_tokens"] == 4096
    assert "tool_choice" not in upstream.received[0].body
    [choice] = result["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Paris is the capital of France."}
    assert choice["finish_reason"] == "stop"
    assert result["usage"] == {"prompt_tokens": 1521, "completion_tokens": 10, "total_tokens": 1531}


async def test_stream_text(upstream: FakeAnthropic, provider: AnthropicProvider) -> None:
    upstream.reply(fixture("stream_text.sse"))
    chunks = [chunk async for chunk in provider.chat_stream(hello())]

    assert upstream.received[0].body["stream"] is True
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(
        c["object"] == "chat.completion.chunk" and c["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL" for c in chunks
    )
    assert text_of(chunks) == "Bonjour ! Paris est la capitale de la France, célèbre pour ses cafés."
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert finishes[:-1] == [None] * (len(finishes) - 1)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 25, "completion_tokens": 17, "total_tokens": 42}


async def test_stream_tool_calls_reassemble(upstream: FakeAnthropic, provider: AnthropicProvider) -> None:
    upstream.reply(fixture("stream_tool_use.sse"))
    chunks = [
        chunk async for chunk in provider.chat_stream(invocation({**hello().body, "tools": [WEATHER_TOOL]}))
    ]

    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks[:-1]:  # the last chunk carries usage and no choices
        for delta in chunk["choices"][0]["delta"].get("tool_calls") or []:
            call = calls.setdefault(delta["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.get("id", "")
            call["name"] += delta.get("function", {}).get("name", "")
            call["arguments"] += delta["function"]["arguments"]
    assert sorted(calls) == [0, 1]
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert calls[1]["name"] == "get_time"
    assert json.loads(calls[1]["arguments"]) == {"timezone": "America/Los_Angeles"}
    assert text_of(chunks) == "Let me check the weather and the time there."
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == {"prompt_tokens": 600, "completion_tokens": 89, "total_tokens": 689}


async def test_stream_error_event_fails_after_earlier_chunks(
    upstream: FakeAnthropic, provider: AnthropicProvider
) -> None:
    upstream.reply(fixture("stream_overloaded_error.sse"))
    chunks: list[dict[str, Any]] = []
    with pytest.raises(ProviderFailure) as failure:
        await collect(provider.chat_stream(hello()), chunks)
    assert text_of(chunks) == "Once upon a time, in a quiet harbour town"
    assert failure.value.kind is FailureKind.TRANSIENT
    assert failure.value.status == 529
    assert "Overloaded" in failure.value.message


async def test_stream_cut_before_message_stop_fails(
    upstream: FakeAnthropic, provider: AnthropicProvider
) -> None:
    upstream.reply(fixture("stream_text.sse").split(b"event: message_delta")[0])
    chunks: list[dict[str, Any]] = []
    with pytest.raises(ProviderFailure) as failure:
        await collect(provider.chat_stream(hello()), chunks)
    assert text_of(chunks).startswith("Bonjour")
    assert failure.value.kind is FailureKind.TRANSIENT


async def test_stream_refused_before_first_chunk(
    upstream: FakeAnthropic, provider: AnthropicProvider
) -> None:
    upstream.reply(fixture("error_529_overloaded.json"), status=529)
    chunks: list[dict[str, Any]] = []
    with pytest.raises(ProviderFailure) as failure:
        await collect(provider.chat_stream(hello()), chunks)
    assert chunks == []
    assert failure.value.kind is FailureKind.TRANSIENT


ERROR_BODIES = {
    400: "error_400_invalid_request.json",
    401: "error_401_authentication.json",
    529: "error_529_overloaded.json",
}


@pytest.mark.parametrize(
    ("status", "kind", "text"),
    [
        (400, FailureKind.CLIENT, "max_tokens: 100000 > 64000, which is the maximum allowed"),
        (401, FailureKind.DEPLOYMENT, "credentials"),
        (529, FailureKind.TRANSIENT, "Overloaded"),
    ],
)
async def test_error_answers(
    upstream: FakeAnthropic, provider: AnthropicProvider, status: int, kind: FailureKind, text: str
) -> None:
    upstream.reply(fixture(ERROR_BODIES[status]), status=status)
    with pytest.raises(ProviderFailure) as failure:
        await provider.chat(hello())
    assert failure.value.kind is kind
    assert failure.value.status == status
    assert text in failure.value.message
    assert API_KEY not in f"{failure.value} {failure.value!r} {failure.value.message}"


async def test_key_echoed_in_other_errors_is_redacted(
    upstream: FakeAnthropic, provider: AnthropicProvider
) -> None:
    # Only 401/403 bodies are withheld whole; any other error that echoes the key must be scrubbed.
    upstream.reply(
        fixture("error_401_authentication.json").replace(b"authentication_error", b"not_found_error"), 404
    )
    with pytest.raises(ProviderFailure) as failure:
        await provider.chat(hello())
    assert failure.value.kind is FailureKind.DEPLOYMENT
    assert "invalid x-api-key: [redacted]" in failure.value.message
    assert API_KEY not in failure.value.message


async def test_rate_limit_carries_retry_after(upstream: FakeAnthropic, provider: AnthropicProvider) -> None:
    upstream.reply(fixture("error_429_rate_limit.json"), status=429, headers={"retry-after": "7"})
    with pytest.raises(ProviderFailure) as failure:
        await provider.chat(hello())
    assert failure.value.kind is FailureKind.TRANSIENT
    assert failure.value.retry_after == 7.0
    assert "rate limit" in failure.value.message


async def test_connection_refused_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = await make_provider(f"http://127.0.0.1:{port}", monkeypatch)
    try:
        with pytest.raises(ProviderFailure) as failure:
            await provider.chat(hello())
    finally:
        await provider.close()
    assert failure.value.kind is FailureKind.TRANSIENT


# ----------------------------------------------------------------------------------- pure translation


def messages(*raw: dict[str, Any]) -> list[ChatMessage]:
    return msgspec.convert(list(raw), list[ChatMessage])


def test_consecutive_same_role_messages_are_merged() -> None:
    system, out = translate_messages(
        messages(
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "system", "content": "be brief"},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "four"},
        )
    )
    assert system == "be brief"
    assert out == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}],
        },
    ]


def test_tool_results_join_one_user_message() -> None:
    _, out = translate_messages(
        messages(
            {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "09:00"}]},
        )
    )
    assert out == [
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_b",
                    "content": [{"type": "text", "text": "09:00"}],
                },
            ],
        }
    ]


def test_image_data_url_becomes_base64_block() -> None:
    _, out = translate_messages(
        messages(
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}],
            }
        )
    )
    assert out[0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
    ]


def test_arguments_that_are_not_json_are_a_client_error() -> None:
    call = {
        "id": "call_bad",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{location: Paris"},
    }
    with pytest.raises(ProviderFailure) as failure:
        translate_messages(messages({"role": "assistant", "tool_calls": [call]}))
    assert failure.value.kind is FailureKind.CLIENT
    assert "call_bad" in failure.value.message


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, None, None),
    ],
)
def test_tool_choice_mapping(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    assert translate_tool_choice(choice, parallel) == expected


@pytest.mark.parametrize(("given", "sent"), [(0.0, 0.0), (0.7, 0.7), (1.0, 1.0), (1.3, 1.0), (2.0, 1.0)])
def test_temperature_is_clamped_to_anthropic_range(given: float, sent: float) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": given}
    assert build_request(msgspec.convert(body, ChatCompletionRequest), 512)["temperature"] == sent


def test_max_tokens_prefers_max_completion_tokens() -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    assert build_request(msgspec.convert(body, ChatCompletionRequest), 512)["max_tokens"] == 50
    body["max_completion_tokens"] = 70
    assert build_request(msgspec.convert(body, ChatCompletionRequest), 512)["max_tokens"] == 70


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls")],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    message = {"id": "msg_1", "model": MODEL, "content": [], "stop_reason": stop_reason, "usage": {}}
    assert translate_response(message, created=1, fallback_model="x")["choices"][0]["finish_reason"] == finish
