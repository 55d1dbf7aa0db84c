"""The official openai SDK against the gateway, with a real OpenAI-compatible stub process upstream."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import Iterator

import openai
import pytest

from lockgate.instance import Instance
from lockgate.security.apikeys import IssuedKey
from lockgate.security.rbac import Actor
from lockgate.services import Services
from tests.support.gateway import RunningGateway, run_gateway, stub_config
from tests.support.processes import StubUpstream


@pytest.fixture
def running(instance: Instance, admin_key: IssuedKey, stub: StubUpstream) -> Iterator[RunningGateway]:
    with run_gateway(instance, stub_config(("primary", stub.base_url))) as gateway:
        yield gateway


@pytest.fixture
def client(running: RunningGateway, admin_key: IssuedKey) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)


def test_sync_completion_is_answered_by_the_upstream_under_the_public_name(
    client: openai.OpenAI, stub: StubUpstream
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hello there"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.model == "m"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert raw.headers["x-lockgate-deployment"] == "primary/upstream-m"
    assert raw.headers["x-request-id"].startswith("req_")
    forwarded = stub.received()[-1]["body"]
    assert forwarded["model"] == "upstream-m"


def test_parameters_are_passed_through_untouched(client: openai.OpenAI, stub: StubUpstream) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    client.chat.completions.create(  # type: ignore[call-overload]
        model="m",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        n=2,
        stop=["\n\n"],
        max_completion_tokens=17,
        seed=42,
        user="user-7",
        temperature=0.3,
        extra_body={"top_k": 5},
    )
    body = stub.received()[-1]["body"]
    assert body["tools"] == tools
    assert body["tool_choice"] == "auto"
    assert body["response_format"] == {"type": "json_object"}
    assert (body["n"], body["stop"], body["max_completion_tokens"], body["seed"]) == (2, ["\n\n"], 17, 42)
    assert (body["user"], body["temperature"], body["top_k"]) == ("user-7", 0.3, 5)


def test_n_returns_every_choice(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]


def test_stream_yields_text_then_usage_when_asked(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert all(c.model == "m" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_stream_without_include_usage_sends_no_usage_chunk(client: openai.OpenAI, stub: StubUpstream) -> None:
    chunks = list(
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a b"}], stream=True)
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    # The gateway still asked upstream for usage, to account for the request.
    assert stub.received()[-1]["body"]["stream_options"] == {"include_usage": True}


def test_async_client(running: RunningGateway, admin_key: IssuedKey) -> None:
    async def ask() -> list[str]:
        client = openai.AsyncOpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)
        answers = await asyncio.gather(
            *(
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
                for i in range(5)
            )
        )
        await client.close()
        return [a.choices[0].message.content or "" for a in answers]

    assert asyncio.run(ask()) == [f"echo: q{i}" for i in range(5)]


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model="m", input=["alpha", "beta"], encoding_format="float")
    assert [len(d.embedding) for d in floats.data] == [8, 8]
    # The SDK asks for base64 by default and decodes it; the gateway encodes it whatever the upstream did.
    default = client.embeddings.create(model="m", input=["alpha", "beta"])
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert floats.model == "m"


def test_base64_embedding_is_little_endian_float32(running: RunningGateway, admin_key: IssuedKey) -> None:
    import httpx

    answer = httpx.post(
        f"{running.base_url}/embeddings",
        json={"model": "m", "input": "alpha", "encoding_format": "base64"},
        headers={"authorization": f"Bearer {admin_key.secret}"},
    ).json()
    packed = base64.b64decode(answer["data"][0]["embedding"])
    assert len(struct.unpack("<8f", packed)) == 8


def test_models_lists_only_what_the_key_may_use(
    instance: Instance, running: RunningGateway, services: Services, admin: Actor
) -> None:
    limited = services.keys.create(admin, "default", allowed_models=["other"])
    running.gateway.keyring.load(instance.engine)
    client = openai.OpenAI(base_url=running.base_url, api_key=limited.secret, max_retries=0)
    assert [m.id for m in client.models.list()] == ["other"]
    assert client.models.retrieve("other").id == "other"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("m")
