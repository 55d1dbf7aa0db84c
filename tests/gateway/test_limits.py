"""Limits and budgets as a client meets them, through the official openai SDK against a running gateway
(in-process counters): 429s in OpenAI's form with Retry-After and x-ratelimit-* headers, per-call caps
as 400s naming the field, max_tokens set where the call had none, reservations settled to what was used,
soft-cap alerts once per period, and every refusal written to the request log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
import sqlalchemy as sa

from lockgate.instance import Instance
from lockgate.limits.spec import parse_budget, parse_rule
from lockgate.security.rbac import Actor
from lockgate.services import Services
from lockgate.store import versions
from lockgate.store.tables import budget_alerts, request_log
from tests.support.gateway import RunningGateway, run_gateway, stub_config
from tests.support.processes import StubUpstream


@pytest.fixture
def running(instance: Instance, stub: StubUpstream) -> Iterator[RunningGateway]:
    with run_gateway(instance, stub_config(("primary", stub.base_url))) as gateway:
        yield gateway


@pytest.fixture
def key(services: Services, admin: Actor) -> str:
    return services.keys.create(admin, "default", name="app", team="research").secret


def client(running: RunningGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.base_url, api_key=key, max_retries=0)


def limit(services: Services, admin: Actor, running: RunningGateway, **rule: Any) -> None:
    services.limits.set_rule(admin, "default", parse_rule({"name": "r", **rule}, "test"))
    reload(services, running)


def budget(services: Services, admin: Actor, running: RunningGateway, **spec: Any) -> None:
    services.limits.set_budget(admin, "default", parse_budget({"name": "b", "period": "day", **spec}, "test"))
    reload(services, running)


def reload(services: Services, running: RunningGateway) -> None:
    """Wait until the gateway has loaded every key and limit in the store."""
    with services.engine.connect() as connection:
        limits = versions.current(connection, versions.LIMITS)
        auth = versions.current(connection, versions.AUTH)
    gateway = running.gateway
    deadline = time.monotonic() + 2
    while gateway.limits.book.version < limits or gateway.keyring.version < auth:
        assert time.monotonic() < deadline, "the gateway did not load the keys and limits"
        time.sleep(0.02)


def body(**extra: Any) -> bytes:
    return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}], **extra})


def ask(running: RunningGateway, key: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{running.base_url}/chat/completions",
        content=body(**extra),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )


def logged(services: Services) -> list[Any]:
    time.sleep(0.5)  # the request log writes in batches
    with services.engine.connect() as connection:
        return list(connection.execute(sa.select(request_log).order_by(request_log.c.created_at)))


def test_a_requests_limit_answers_429_with_retry_after_and_rate_headers(
    services: Services, admin: Actor, running: RunningGateway, key: str
) -> None:
    limit(services, admin, running, requests_per_minute=3)
    answers = [ask(running, key) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers[:3]] == ["2", "1", "0"]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[0].headers["x-ratelimit-reset-requests"].endswith("s")
    refused = answers[3]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert "requests per minute: limit 3" in error["message"]
    # The SDK sees its own RateLimitError.
    with pytest.raises(openai.RateLimitError):
        client(running, key).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert [r.status_code for r in logged(services)] == [200, 200, 200, 429, 429]


def test_a_tokens_limit_counts_the_worst_case_then_gives_back_what_was_not_used(
    services: Services, admin: Actor, running: RunningGateway, key: str
) -> None:
    limit(services, admin, running, tokens_per_minute=1000)
    first = ask(running, key, max_tokens=400)
    assert first.status_code == 200
    # Reserved: a token per byte of the request, 16 per message and for the template, and the 400.
    reserved = len(body(max_tokens=400)) + 2 * 16 + 400
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == 1000 - reserved
    again = ask(running, key, max_tokens=400)
    assert again.status_code == 200  # it fits only because the first call settled to its usage
    rows = [r for r in logged(services) if r.status_code == 200]
    used = sum(r.input_tokens + r.output_tokens for r in rows)
    assert used < 20
    too_big = ask(running, key, max_tokens=2000)
    assert too_big.status_code == 429
    assert too_big.json()["error"]["code"] == "request_too_large_for_limit"


def test_per_call_caps_refuse_with_the_field_and_set_max_tokens_where_the_call_had_none(
    services: Services, admin: Actor, running: RunningGateway, key: str, stub: StubUpstream
) -> None:
    limit(services, admin, running, max_tokens=64, max_cost_usd=0.001)
    refused = ask(running, key, max_tokens=65)
    assert refused.status_code == 400
    assert (refused.json()["error"]["param"], refused.json()["error"]["code"]) == (
        "max_tokens",
        "max_tokens_exceeded",
    )
    assert ask(running, key).status_code == 200
    assert stub.received()[-1]["body"]["max_tokens"] == 64  # the cap went upstream with the call
    limit(services, admin, running, max_tokens=64, max_cost_usd=0.00000001)
    costly = ask(running, key)
    assert costly.status_code == 400
    assert costly.json()["error"]["code"] == "max_cost_exceeded"


def test_a_concurrency_limit_frees_its_slot_when_the_call_ends(
    services: Services, admin: Actor, running: RunningGateway, key: str
) -> None:
    limit(services, admin, running, concurrent=1)
    for _ in range(3):  # one at a time: each call's slot is back before the next
        assert ask(running, key).status_code == 200


def test_a_budget_blocks_at_its_hard_cap_and_alerts_once_at_its_soft_cap(
    services: Services, admin: Actor, running: RunningGateway, key: str
) -> None:
    # Model m costs $1 / $2 per million tokens. A call reserves about $0.0001 (90 input tokens at most,
    # 10 output) and spends about $0.000008 (the stub's few words): a $0.0002 budget takes about a
    # dozen calls, then no call's worst case fits any more.
    budget(services, admin, running, amount_usd=0.0002, soft_ratio=0.25)
    statuses = [ask(running, key, max_tokens=10).status_code for _ in range(40)]
    assert statuses.count(200) > 5 and statuses[-1] == 429
    blocked = ask(running, key, max_tokens=10)
    error = blocked.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
    assert int(blocked.headers["retry-after"]) > 0
    rows = logged(services)
    assert 0.00005 < sum(r.cost_usd for r in rows) <= 0.0002
    with services.engine.connect() as connection:
        alerts = connection.execute(sa.select(budget_alerts)).all()
    assert len(alerts) == 1
    metrics = running.gateway.metrics.registry
    assert metrics.get_sample_value("lockgate_budget_alerts_total", {"tenant": "default", "budget": "b"}) == 1


def test_a_team_budget_leaves_other_teams_alone(
    services: Services, admin: Actor, running: RunningGateway, key: str
) -> None:
    other = services.keys.create(admin, "default", name="other", team="support").secret
    budget(services, admin, running, amount_usd=0.0000001, scope={"team": "research"})
    assert ask(running, key).status_code == 429
    assert ask(running, other).status_code == 200


def test_calls_of_tenants_without_rules_carry_no_rate_headers(
    services: Services, running: RunningGateway, key: str
) -> None:
    reload(services, running)
    answer = ask(running, key)
    assert answer.status_code == 200
    assert not [h for h in answer.headers if h.startswith("x-ratelimit-")]


def test_settling_corrects_each_reservation_to_its_cost_from_the_price_table(
    services: Services, admin: Actor, running: RunningGateway, key: str
) -> None:
    # The budget's boundary is probed to the nano-dollar: after three calls (one streamed) the next call,
    # whose worst case is w, fits a budget of exactly spent + w and not one of spent + w - $0.00000001.
    budget(services, admin, running, amount_usd=1.0)
    sdk = client(running, key)
    assert ask(running, key, max_tokens=50).status_code == 200
    words = "one two three four five six seven eight nine ten"
    assert ask(running, key, max_tokens=50, messages=[{"role": "user", "content": words}]).status_code == 200
    stream = sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "a streamed call"}], max_tokens=50, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    rows = [r for r in logged(services) if r.status_code == 200]
    assert len(rows) == 3
    for row in rows:  # each call's cost is its usage at model m's prices: $1 and $2 per million tokens
        assert row.input_tokens > 0 and row.output_tokens > 0
        assert row.cost_usd == pytest.approx((row.input_tokens * 1 + row.output_tokens * 2) / 1e6, abs=1e-12)
    spent = sum(row.cost_usd for row in rows)
    worst = ((len(body(max_tokens=50)) + 2 * 16) * 1 + 50 * 2) / 1e6  # the next call's reservation
    assert worst > spent  # one reservation is more than the three calls spent: settling gave it back

    budget(services, admin, running, amount_usd=spent + worst - 1e-8)
    refused = ask(running, key, max_tokens=50)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    budget(services, admin, running, amount_usd=spent + worst)
    assert ask(running, key, max_tokens=50).status_code == 200
