"""The exact response cache, seen by a client: the official openai SDK against a running gateway, with
the stub upstream telling whether it was called. Every behaviour runs on the memory and the Redis
backend."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import sqlalchemy as sa

from lockgate.config.loader import LoadedConfig
from lockgate.control.prompt_spec import PromptSpec
from lockgate.control.registry import ModelCard
from lockgate.control.releases import ReleaseRequest
from lockgate.instance import Instance
from lockgate.security.apikeys import IssuedKey
from lockgate.security.rbac import Actor
from lockgate.services import Services
from lockgate.store import versions
from lockgate.store.tables import request_log
from tests.conftest import RedisSpace
from tests.support.gateway import RunningGateway, run_gateway, stub_config
from tests.support.processes import StubUpstream, free_port

QUESTION: Any = [{"role": "user", "content": "what is the capital of France"}]


def cached_config(stub: StubUpstream, backend: str, redis: RedisSpace | None, **cache: Any) -> LoadedConfig:
    sections: dict[str, Any] = {"cache": {"enabled": True, "backend": backend, **cache}}
    if redis is not None:
        sections["redis"] = {"url": redis.url, "prefix": redis.prefix}
    return stub_config(("primary", stub.base_url), control={"gates_required": False}, **sections)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> tuple[str, RedisSpace | None]:
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_space")
    return "memory", None


@pytest.fixture
def cache_settings() -> dict[str, Any]:
    """The ``cache`` section beyond enabled/backend; tests override it by parametrising."""
    return {}


@pytest.fixture
def running(
    instance: Instance,
    admin_key: IssuedKey,
    stub: StubUpstream,
    backend: tuple[str, RedisSpace | None],
    cache_settings: dict[str, Any],
) -> Iterator[RunningGateway]:
    with run_gateway(instance, cached_config(stub, *backend, **cache_settings)) as gateway:
        yield gateway


@pytest.fixture
def client(running: RunningGateway, admin_key: IssuedKey) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)


def ask(client: openai.OpenAI, **options: Any) -> tuple[str, dict[str, str]]:
    """One call of model ``m`` (deterministic unless overridden); returns the answer and the headers."""
    arguments: dict[str, Any] = {"model": "m", "messages": QUESTION, "temperature": 0, **options}
    raw = client.chat.completions.with_raw_response.create(**arguments)
    return raw.parse().choices[0].message.content or "", dict(raw.headers)


def ask_stream(client: openai.OpenAI, **options: Any) -> tuple[str, dict[str, str], list[Any]]:
    arguments: dict[str, Any] = {"model": "m", "messages": QUESTION, "temperature": 0, **options}
    raw = client.chat.completions.with_raw_response.create(stream=True, **arguments)
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, dict(raw.headers), chunks


def upstream_calls(stub: StubUpstream) -> int:
    return sum(1 for r in stub.received() if r["path"].endswith("/chat/completions"))


def cache_count(running: RunningGateway, outcome: str, label: str = "m", kind: str = "exact") -> float:
    value = running.gateway.metrics.registry.get_sample_value(
        "lockgate_cache_requests_total",
        {"tenant": "default", "route_or_model": label, "kind": kind, "outcome": outcome},
    )
    return value or 0.0


def logged(instance: Instance, request_id: str) -> dict[str, Any]:
    """The request log row of ``request_id``, once the writer has written it (at most 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        with instance.engine.connect() as connection:
            row = connection.execute(sa.select(request_log).where(request_log.c.id == request_id)).first()
        if row is not None:
            return dict(row._mapping)
        assert time.monotonic() < deadline, f"request {request_id} was not logged"
        time.sleep(0.05)


# --- exact hits ----------------------------------------------------------------------------------------


def test_an_identical_request_is_answered_from_the_cache(
    client: openai.OpenAI, stub: StubUpstream, running: RunningGateway
) -> None:
    first, first_headers = ask(client)
    second, second_headers = ask(client, user="someone-else")  # `user` does not change the answer
    assert first == second == "echo: what is the capital of France"
    assert (first_headers["x-lockgate-cache"], second_headers["x-lockgate-cache"]) == ("miss", "hit")
    assert upstream_calls(stub) == 1
    assert "x-lockgate-deployment" not in second_headers  # no deployment answered
    assert int(second_headers["age"]) >= 0
    # Anything that can change the answer is another entry.
    ask(client, max_tokens=50)
    ask(client, messages=[{"role": "user", "content": "what is the capital of Spain"}])
    assert upstream_calls(stub) == 3
    assert (cache_count(running, "hit"), cache_count(running, "miss")) == (1, 3)


def test_a_streamed_request_replays_a_stored_answer_as_a_stream(
    client: openai.OpenAI, stub: StubUpstream
) -> None:
    answer, _ = ask(client)
    text, headers, chunks = ask_stream(client, stream_options={"include_usage": True})
    assert text == answer
    assert headers["x-lockgate-cache"] == "hit"
    assert headers["content-type"].startswith("text/event-stream")
    assert len(chunks) > 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # Without include_usage, no usage chunk, as from an upstream.
    _, _, plain = ask_stream(client)
    assert all(c.usage is None and c.choices for c in plain)
    assert upstream_calls(stub) == 1


def test_a_streamed_answer_is_stored_once_it_ends_and_serves_plain_calls(
    client: openai.OpenAI, stub: StubUpstream
) -> None:
    question = [{"role": "user", "content": "one two three four"}]
    streamed, headers, _ = ask_stream(client, messages=question)
    assert headers["x-lockgate-cache"] == "miss"
    answer, headers = ask(client, messages=question)
    assert (answer, headers["x-lockgate-cache"]) == (streamed, "hit")
    again, headers, _ = ask_stream(client, messages=question)
    assert (again, headers["x-lockgate-cache"]) == (streamed, "hit")
    assert upstream_calls(stub) == 1


def test_a_stream_that_breaks_is_not_stored(client: openai.OpenAI, stub: StubUpstream) -> None:
    question = [{"role": "user", "content": "one two three four five"}]
    stub.script(break_stream_after=2)
    with pytest.raises(openai.APIError):
        ask_stream(client, messages=question)
    text, headers, _ = ask_stream(client, messages=question)
    assert (text, headers["x-lockgate-cache"]) == ("echo: one two three four five", "miss")
    assert upstream_calls(stub) == 2


def test_tenants_never_share_entries(
    running: RunningGateway,
    client: openai.OpenAI,
    services: Services,
    admin: Actor,
    admin_token: str,
    stub: StubUpstream,
) -> None:
    services.tenants.create(admin, "acme")
    # The platform admin administers the new tenant too, once its token is read again.
    acme_key = services.keys.create(services.tokens.authenticate(admin_token), "acme").secret
    wait_for_keys(running)
    acme = openai.OpenAI(base_url=running.base_url, api_key=acme_key, max_retries=0)
    ours, theirs = ask(client), ask(acme)
    assert ours[1]["x-lockgate-cache"] == theirs[1]["x-lockgate-cache"] == "miss"
    assert upstream_calls(stub) == 2  # each tenant reached the upstream once
    assert ask(client)[1]["x-lockgate-cache"] == ask(acme)[1]["x-lockgate-cache"] == "hit"
    assert upstream_calls(stub) == 2


def test_keys_of_a_tenant_share_entries_unless_isolated_per_key(
    instance: Instance, services: Services, admin: Actor, stub: StubUpstream, admin_key: IssuedKey
) -> None:
    other = services.keys.create(admin, "default").secret
    for isolation, expected in (("tenant", "hit"), ("key", "miss")):
        with run_gateway(instance, cached_config(stub, "memory", None, isolation=isolation)) as running:
            first = openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)
            second = openai.OpenAI(base_url=running.base_url, api_key=other, max_retries=0)
            assert ask(first)[1]["x-lockgate-cache"] == "miss"
            assert ask(second)[1]["x-lockgate-cache"] == expected


def wait_for_keys(running: RunningGateway) -> None:
    with running.gateway.engine.connect() as connection:
        wanted = versions.current(connection, versions.AUTH)
    deadline = time.monotonic() + 2
    while running.gateway.keyring.version < wanted:
        assert time.monotonic() < deadline, "the keyring did not reload"
        time.sleep(0.02)


# --- what the caller can ask -----------------------------------------------------------------------------


def test_bypass_neither_reads_nor_stores(client: openai.OpenAI, stub: StubUpstream) -> None:
    ask(client)
    _, headers = ask(client, extra_headers={"x-lockgate-cache": "bypass"})
    assert headers["x-lockgate-cache"] == "bypass"
    assert upstream_calls(stub) == 2
    other = [{"role": "user", "content": "never stored"}]
    ask(client, messages=other, extra_headers={"cache-control": "no-store"})
    assert ask(client, messages=other)[1]["x-lockgate-cache"] == "miss"
    assert upstream_calls(stub) == 4


def test_refresh_fetches_a_fresh_answer_and_stores_it(client: openai.OpenAI, stub: StubUpstream) -> None:
    question = [{"role": "user", "content": "refresh me"}]
    _, headers = ask(client, messages=question, extra_headers={"x-lockgate-cache": "refresh"})
    assert headers["x-lockgate-cache"] == "bypass"
    assert ask(client, messages=question)[1]["x-lockgate-cache"] == "hit"
    ask(client, messages=question, extra_headers={"cache-control": "no-cache"})
    assert upstream_calls(stub) == 2


def test_max_age_accepts_only_a_young_enough_answer(client: openai.OpenAI, stub: StubUpstream) -> None:
    ask(client)
    assert ask(client, extra_headers={"x-lockgate-cache": "max-age=60"})[1]["x-lockgate-cache"] == "hit"
    time.sleep(1.1)
    assert ask(client, extra_headers={"cache-control": "max-age=1"})[1]["x-lockgate-cache"] == "miss"
    assert upstream_calls(stub) == 2


def test_an_unknown_cache_directive_is_refused(client: openai.OpenAI, stub: StubUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, extra_headers={"x-lockgate-cache": "please"})
    assert isinstance(caught.value.body, dict)
    assert (caught.value.body["param"], caught.value.body["code"]) == ("x-lockgate-cache", "invalid_value")
    assert upstream_calls(stub) == 0


@pytest.mark.parametrize("cache_settings", [{"ttl": 0.3}])
def test_an_answer_expires_after_its_ttl(client: openai.OpenAI, stub: StubUpstream) -> None:
    ask(client)
    assert ask(client)[1]["x-lockgate-cache"] == "hit"
    time.sleep(0.5)
    assert ask(client)[1]["x-lockgate-cache"] == "miss"
    assert upstream_calls(stub) == 2


# --- what is never cached ------------------------------------------------------------------------------


def test_sampling_calls_are_not_cached_unless_the_model_opts_in(
    client: openai.OpenAI, stub: StubUpstream, running: RunningGateway
) -> None:
    def header(**options: Any) -> str:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=QUESTION, **options)
        return raw.headers["x-lockgate-cache"]

    # No temperature is the upstream's default (1): it samples, like any temperature above 0.
    assert [header(), header(), header(temperature=0.7), header(temperature=0.7)] == ["skip"] * 4
    assert upstream_calls(stub) == 4
    assert cache_count(running, "skip") == 4
    # A seed asks for a reproducible answer: it is cached whatever the temperature.
    assert [header(temperature=0.7, seed=1), header(temperature=0.7, seed=1)] == ["miss", "hit"]
    assert upstream_calls(stub) == 5


@pytest.mark.parametrize("cache_settings", [{"models": {"m": {"nondeterministic": True}}}])
def test_a_model_may_opt_in_to_caching_sampling_calls(client: openai.OpenAI, stub: StubUpstream) -> None:
    assert [ask(client, temperature=0.9)[1]["x-lockgate-cache"] for _ in range(2)] == ["miss", "hit"]
    assert upstream_calls(stub) == 1


@pytest.mark.parametrize("cache_settings", [{"models": {"other": {"enabled": False}}}])
def test_a_model_with_caching_off_gets_no_cache_header(client: openai.OpenAI, stub: StubUpstream) -> None:
    headers = [ask(client, model="other")[1] for _ in range(2)]
    assert all("x-lockgate-cache" not in h for h in headers)
    assert upstream_calls(stub) == 2


def test_failed_calls_are_not_cached(client: openai.OpenAI, stub: StubUpstream) -> None:
    stub.script(fail=[{"status": 400, "message": "bad request"}])
    with pytest.raises(openai.BadRequestError):
        ask(client)
    answer, headers = ask(client)
    assert (answer, headers["x-lockgate-cache"]) == ("echo: what is the capital of France", "miss")
    assert upstream_calls(stub) == 2


def test_an_answer_from_a_fallback_model_is_not_cached(
    instance: Instance, admin_key: IssuedKey, stub: StubUpstream
) -> None:
    # Model m's own upstream refuses connections; its fallback m-backup is the stub.
    config = stub_config(
        ("primary", f"http://127.0.0.1:{free_port()}/v1"),
        ("backup", stub.base_url),
        cache={"enabled": True},
    )
    with run_gateway(instance, config) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)
        assert [ask(client)[1]["x-lockgate-cache"] for _ in range(2)] == ["miss", "miss"]
    assert upstream_calls(stub) == 2


# --- accounting ----------------------------------------------------------------------------------------


def test_a_hit_is_logged_with_cost_zero_and_the_answers_tokens(
    client: openai.OpenAI, instance: Instance
) -> None:
    first = client.chat.completions.with_raw_response.create(model="m", messages=QUESTION, temperature=0)
    second = client.chat.completions.with_raw_response.create(model="m", messages=QUESTION, temperature=0)
    miss, hit = (
        logged(instance, first.headers["x-request-id"]),
        logged(instance, second.headers["x-request-id"]),
    )
    usage = second.parse().usage
    assert usage is not None
    assert (miss["cache"], hit["cache"]) == (None, "exact")
    assert miss["cost_usd"] > 0
    assert (hit["cost_usd"], hit["deployment"], hit["attempts"]) == (0, None, 0)
    assert (hit["input_tokens"], hit["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert (hit["status_code"], hit["model"]) == (200, "m")


def test_hits_add_nothing_to_the_token_and_cost_counters(
    client: openai.OpenAI, running: RunningGateway
) -> None:
    def spent() -> tuple[float | None, float | None]:
        registry = running.gateway.metrics.registry
        labels = {"model": "m", "tenant": "default"}
        return (
            registry.get_sample_value("lockgate_cost_usd_total", labels),
            registry.get_sample_value("lockgate_tokens_total", {**labels, "direction": "output"}),
        )

    ask(client)
    after_miss = spent()
    assert after_miss[0] and after_miss[1]
    ask(client)
    ask_stream(client)
    assert spent() == after_miss


# --- routes ----------------------------------------------------------------------------------------------


def push_release(
    services: Services, admin: Actor, route: str, contract: dict[str, Any] | None, template: str = "{{ q }}"
) -> str:
    if not services.registry.list(admin, "default", name="llm-m"):
        card = ModelCard(
            name="llm-m",
            version="1",
            gateway_model="m",
            license="apache-2.0",
            intended_use="tests",
            owner_team="qa",
        )
        services.registry.register(admin, "default", card)
    spec = {
        "name": route,
        "version": "1.0.0",
        "messages": [
            {"role": "system", "content": "Answer in JSON."},
            {"role": "user", "content": template},
        ],
        "variables": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        "settings": {"model": "llm-m:1", "temperature": 0},
        "output_schema": contract,
    }
    services.prompts.push(admin, "default", PromptSpec.model_validate(spec))
    release = services.releases.create(admin, "default", ReleaseRequest(route=route, prompt=f"{route}@1.0.0"))
    services.environments.point(admin, "default", route, "dev", release.id)
    return release.id


def wait_for_routes(running: RunningGateway) -> None:
    with running.gateway.engine.connect() as connection:
        wanted = versions.current(connection, versions.ROUTES)
    deadline = time.monotonic() + 2
    while running.gateway.routes.version < wanted:
        assert time.monotonic() < deadline, "the route book did not reload"
        time.sleep(0.02)


def test_route_answers_are_cached_per_release_and_only_within_their_contract(
    running: RunningGateway, client: openai.OpenAI, services: Services, admin: Actor, stub: StubUpstream
) -> None:
    contract = {"type": "object", "required": ["answer"]}
    release = push_release(services, admin, "faq", contract)
    wait_for_routes(running)

    def ask_route(q: str) -> tuple[str, dict[str, str]]:
        raw = client.chat.completions.with_raw_response.create(
            model="route:faq",
            messages=[],
            extra_body={"variables": {"q": q}},
            extra_headers={"x-lockgate-environment": "dev"},
        )
        return raw.parse().choices[0].message.content or "", dict(raw.headers)

    # An answer outside the contract is a 502 and is not stored: the next call reaches the upstream again.
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as caught:
            ask_route("not json")
        assert caught.value.status_code == 502
    assert upstream_calls(stub) == 2
    good = 'reply:{"answer": "Paris"}'
    answers = [ask_route(good) for _ in range(2)]
    assert [a for a, _ in answers] == ['{"answer": "Paris"}'] * 2
    assert [h["x-lockgate-cache"] for _, h in answers] == ["miss", "hit"]
    assert answers[1][1]["x-lockgate-release"] == release
    assert upstream_calls(stub) == 3
    assert cache_count(running, "hit", label="route:faq") == 1


# --- Redis -----------------------------------------------------------------------------------------------


@pytest.mark.redis
def test_requests_are_served_while_redis_is_unreachable(
    instance: Instance, admin_key: IssuedKey, stub: StubUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = RedisSpace(f"redis://127.0.0.1:{free_port()}/0", "lgtest:down:")
    with run_gateway(instance, cached_config(stub, "redis", unreachable)) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)
        answers = [ask(client) for _ in range(3)]
        errors = running.gateway.metrics.registry.get_sample_value(
            "lockgate_cache_errors_total", {"part": "redis"}
        )
    assert [a for a, _ in answers] == ["echo: what is the capital of France"] * 3
    assert [h["x-lockgate-cache"] for _, h in answers] == ["miss"] * 3
    assert upstream_calls(stub) == 3
    assert errors is not None and errors >= 1
    warnings = [r for r in caplog.records if "cannot reach Redis" in r.getMessage()]
    assert len(warnings) == 1
