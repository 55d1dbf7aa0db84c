"""Real model servers: llama.cpp's OpenAI-compatible server upstream, and the embedded local model.

These use the packaged Gemma 3 270M file, so answers come from a real (small) model: assertions check
what a person would, that a simple factual question gets the right answer.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from lockgate.config.loader import load_mapping
from lockgate.instance import Instance
from lockgate.security.apikeys import IssuedKey
from tests.support.gateway import run_gateway
from tests.support.processes import LlamaServer, LockgateServer

pytestmark = pytest.mark.slow

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]


def test_llama_cpp_server_behind_the_openai_provider(
    instance: Instance, admin_key: IssuedKey, llama_server: LlamaServer
) -> None:
    config = load_mapping(
        {
            "providers": {"llamacpp": {"kind": "openai", "base_url": llama_server.base_url}},
            "models": [
                {"name": "gemma", "deployments": [{"provider": "llamacpp", "model": "gemma", "timeout": 60}]}
            ],
        }
    )
    with run_gateway(instance, config) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)
        answer = client.chat.completions.create(
            model="gemma", messages=QUESTION, max_tokens=24, temperature=0, stop=["\n\n", "###"]
        )
        assert "Paris" in (answer.choices[0].message.content or "")
        assert answer.usage is not None and answer.usage.completion_tokens > 0
        stream = client.chat.completions.create(
            model="gemma",
            messages=QUESTION,
            max_tokens=24,
            temperature=0,
            stop=["\n\n", "###"],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "Paris" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


def test_serve_on_embedded_defaults_answers_with_the_local_model(tmp_path: Path) -> None:
    """README command (1), minus the install: `lockgate serve` with no config and no services."""
    server = LockgateServer(tmp_path, None, {"LOCKGATE_DATABASE_URL": ""}).start(timeout=120)
    try:
        match = re.search(r"admin key \(shown once, store it now\): (lg-\S+)", server.output())
        assert match is not None, server.output()
        key = match.group(1)
        base = f"{server.url}/v1"
        listed = httpx.get(f"{base}/models", headers={"authorization": f"Bearer {key}"}).json()
        assert [m["id"] for m in listed["data"]] == ["gemma-3-270m"]

        client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
        answer = client.chat.completions.create(
            model="gemma-3-270m", messages=QUESTION, max_tokens=24, temperature=0
        )
        assert "Paris" in (answer.choices[0].message.content or "")

        stream = client.chat.completions.create(
            model="gemma-3-270m", messages=QUESTION, max_tokens=24, temperature=0, stream=True
        )
        assert "Paris" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        async def ask_async() -> str:
            async_client = openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0)
            reply = await async_client.chat.completions.create(
                model="gemma-3-270m", messages=QUESTION, max_tokens=24, temperature=0
            )
            await async_client.close()
            return reply.choices[0].message.content or ""

        assert "Paris" in asyncio.run(ask_async())
        vectors = client.embeddings.create(model="gemma-3-270m", input=["a cat", "a dog"])
        assert len(vectors.data) == 2
        assert len(vectors.data[0].embedding) == len(vectors.data[1].embedding) > 100
    finally:
        assert server.stop()
    # The key never reached the server's log output beyond the one-time bootstrap line.
    assert server.output().count(key) == 2
