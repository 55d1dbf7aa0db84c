"""The judge against a real model: llama.cpp's server on Gemma 3 270M, behind the real gateway.

The model is far too small to judge well, so only the machinery is checked: the structured-verdict
request passes through the gateway, the server's grammar keeps the reply in shape, and the verdict is
read into a score on the scale with a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from lockgate.config.loader import load_mapping
from lockgate.evals.cases import Case, Outcome, ScoringContext
from lockgate.evals.scorers import build_scorers
from lockgate.instance import Instance
from lockgate.security.apikeys import IssuedKey
from tests.support.gateway import run_gateway
from tests.support.processes import LlamaServer

pytestmark = pytest.mark.slow


async def test_a_real_judge_returns_a_verdict_on_the_scale(
    instance: Instance, admin_key: IssuedKey, llama_server: LlamaServer
) -> None:
    config = load_mapping(
        {
            "providers": {"llamacpp": {"kind": "openai", "base_url": llama_server.base_url}},
            "models": [
                {"name": "judge", "deployments": [{"provider": "llamacpp", "model": "gemma", "timeout": 120}]}
            ],
        }
    )
    replies: list[str] = []
    with run_gateway(instance, config) as running:
        client = openai.AsyncOpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)

        async def complete(model: str, messages: Sequence[dict[str, Any]], extra_body: dict[str, Any]) -> str:
            reply = await client.chat.completions.create(
                model=model,
                messages=cast(list[ChatCompletionMessageParam], list(messages)),
                extra_body=extra_body,
            )
            replies.append(reply.choices[0].message.content or "")
            return replies[-1]

        spec = {"type": "judge", "model": "judge", "rubric": "The answer names the right city.", "scale": 5}
        [scorer] = build_scorers([spec], ScoringContext(complete=complete))
        case = Case(id="capital", variables={"question": "What is the capital of France?"}, expected="Paris")
        result = await scorer.score(case, Outcome("The capital of France is Paris.", 120.0))
        await client.close()

    verdict = orjson.loads(replies[0])  # the server's grammar kept the reply to the schema
    assert set(verdict) == {"score", "reason"}
    assert 1 <= result.details["judge_score"] <= 5
    assert result.details["judge_score"] == verdict["score"]
    assert result.value == (verdict["score"] - 1) / 4
    assert result.reason.startswith(f"judge {verdict['score']}/5: ")
    assert result.reason.removeprefix(f"judge {verdict['score']}/5: ").strip() not in (
        "",
        "(no reason given)",
    )
