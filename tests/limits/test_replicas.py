"""Zero overshoot where it is hard: 200 calls at once against a tenant limited to 100 requests, 10,000
tokens and $0.05, through three ``lockgate serve`` replicas sharing PostgreSQL and Redis, and through one
``lockgate serve --workers 2`` on its in-process counters. What the request log records never exceeds a
limit, and every refused call got a 429 with ``Retry-After``. Then Redis goes away under load: limited calls
fail closed (or go through, configured to fail open), and once Redis is back, from scratch, the budget
remembers every cent the store recorded."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
import yaml

from lockgate.store.tables import request_log
from tests.conftest import RedisSpace
from tests.rollouts.test_simulation import control, ok, shown_once
from tests.support.processes import LockgateServer, StubUpstream
from tests.support.proxy import TcpProxy

TENANT = "/api/v1/tenants/default"
LIMITS: dict[str, Any] = {"name": "tight", "requests_per_minute": 100, "tokens_per_minute": 10_000}
BUDGET: dict[str, Any] = {"name": "daily", "period": "day", "amount_usd": 0.05, "soft_ratio": None}
# $100 / $200 per million tokens: a call reserves about $0.02 (130 tokens in, 20 out at most) and
# spends about $0.0009, so requests, tokens and dollars all come into play among 200 calls.
PRICES = {"input_price_per_1m": 100.0, "output_price_per_1m": 200.0}


def write_config(directory: Path, stub: StubUpstream, **sections: Any) -> Path:
    path = directory / "lockgate.yaml"
    config = {
        "providers": {"primary": {"kind": "openai", "base_url": stub.base_url}},
        "models": [
            {"name": "m", "deployments": [{"provider": "primary", "model": "s", "timeout": 30, **PRICES}]}
        ],
        "routing": {"retries": 0},
        "control": {"gates_required": False},
        **sections,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Cluster:
    servers: list[LockgateServer]
    token: str
    key: str
    engine: sa.Engine

    def limit(self, rule: dict[str, Any] = LIMITS, budget: dict[str, Any] | None = BUDGET) -> None:
        with control(self.servers[0].url, self.token) as admin:
            ok(admin.put(f"{TENANT}/limits/{rule['name']}", json=rule))
            if budget is not None:
                ok(admin.put(f"{TENANT}/budgets/{budget['name']}", json=budget))
        time.sleep(1.0)  # every replica reloads within its poll interval

    def fire(self, n: int) -> list[httpx.Response]:
        """``n`` calls at once, spread over the servers."""

        async def all_at_once() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=n)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                calls = [
                    client.post(
                        f"{self.servers[i % len(self.servers)].url}/v1/chat/completions",
                        headers={"authorization": f"Bearer {self.key}"},
                        json={
                            "model": "m",
                            "max_tokens": 20,
                            "messages": [{"role": "user", "content": f"q {i}"}],
                        },
                    )
                    for i in range(n)
                ]
                return list(await asyncio.gather(*calls))

        return asyncio.run(all_at_once())

    def recorded(self, expected: int) -> list[Any]:
        """Every request record, once all ``expected`` are written."""
        deadline = time.monotonic() + 15
        while True:
            with self.engine.connect() as connection:
                rows = list(connection.execute(sa.select(request_log).where(request_log.c.model == "m")))
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


@contextmanager
def start(
    tmp_path: Path, database_url: str, config: Path, replicas: int, workers: int = 1
) -> Iterator[Cluster]:
    shared = {
        "LOCKGATE_DATABASE_URL": database_url,
        "LOCKGATE_KEY_PEPPER": secrets.token_hex(32),
        "LOCKGATE_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    servers: list[LockgateServer] = []
    engine = sa.create_engine(database_url)
    try:
        for i in range(replicas):
            home = tmp_path / f"replica-{i}"
            home.mkdir()
            env = {**shared, "LOCKGATE_DATA_DIR": str(home / ".lockgate")}
            servers.append(LockgateServer(home, config, env, workers=workers).start())
        output = servers[0].output()
        token = shown_once(output, "control token of user 'admin' (shown once): ")
        key = shown_once(output, "admin key (shown once, store it now): ")
        yield Cluster(servers, token, key, engine)
    finally:
        for server in servers:
            server.stop()
        engine.dispose()


def assert_within_limits(cluster: Cluster, answers: list[httpx.Response]) -> None:
    refused = [a for a in answers if a.status_code != 200]
    admitted = len(answers) - len(refused)
    assert admitted > 0, [a.text for a in refused[:3]]
    for answer in refused:
        assert answer.status_code == 429, answer.text
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.json()["error"]["code"] in ("rate_limit_exceeded", "budget_exceeded")
    rows = [r for r in cluster.recorded(len(answers)) if r.status_code == 200]
    assert len(rows) == admitted  # everything answered was recorded
    assert len(rows) <= LIMITS["requests_per_minute"]
    assert sum(r.input_tokens + r.output_tokens for r in rows) <= LIMITS["tokens_per_minute"]
    assert sum(r.cost_usd for r in rows) <= BUDGET["amount_usd"]


@pytest.mark.redis
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_three_replicas_on_redis_never_overshoot_a_limit(
    database_url: str, tmp_path: Path, stub: StubUpstream, redis_space: RedisSpace
) -> None:
    redis_section = {"url": redis_space.url, "prefix": redis_space.prefix}
    config = write_config(tmp_path, stub, redis=redis_section, limits={"backend": "redis"})
    with start(tmp_path, database_url, config, replicas=3) as cluster:
        cluster.limit()
        answers = cluster.fire(200)
        assert_within_limits(cluster, answers)
        assert len({a.status_code for a in answers}) == 2  # some admitted, some refused


def test_one_server_with_two_workers_never_overshoots_on_its_own_counters(
    database_url: str, tmp_path: Path, stub: StubUpstream
) -> None:
    config = write_config(tmp_path, stub)
    with start(tmp_path, database_url, config, replicas=1, workers=2) as cluster:
        cluster.limit()
        answers = cluster.fire(200)
        assert_within_limits(cluster, answers)


@pytest.mark.redis
@pytest.mark.parametrize("mode", ["closed", "open"])
def test_redis_going_away_fails_closed_or_open_and_no_spend_is_lost_when_it_returns(
    database_url: str, tmp_path: Path, stub: StubUpstream, redis_space: RedisSpace, mode: str
) -> None:
    with TcpProxy("127.0.0.1", 6379) as proxy:
        redis_section = {"url": f"redis://127.0.0.1:{proxy.port}/0", "prefix": redis_space.prefix}
        limits = {"backend": "redis", "on_backend_error": mode}
        config = write_config(tmp_path, stub, redis=redis_section, limits=limits)
        with start(tmp_path, database_url, config, replicas=1) as cluster:
            cluster.limit(rule={"name": "rpm", "requests_per_minute": 10_000}, budget=None)
            before = cluster.fire(10)
            assert {a.status_code for a in before} == {200}

            proxy.cut()
            during = cluster.fire(10)
            if mode == "closed":
                assert {a.status_code for a in during} == {503}
                assert {a.json()["error"]["code"] for a in during} == {"limits_unavailable"}
                assert {a.headers["retry-after"] for a in during} == {"1"}
            else:
                assert {a.status_code for a in during} == {200}
            # Redis comes back empty, as a restarted server without persistence does.
            wiped = redis.Redis.from_url(redis_space.url)
            for key in wiped.scan_iter(match=f"{redis_space.prefix}*"):
                wiped.delete(key)
            wiped.close()
            proxy.restore()

            # A budget just above what the store has recorded: if the spend were lost, calls would go on.
            spent = sum(
                r.cost_usd for r in cluster.recorded(20 if mode == "open" else 10) if r.status_code == 200
            )
            assert spent > 0
            cluster.limit(
                rule={"name": "rpm", "requests_per_minute": 10_000},
                budget={**BUDGET, "amount_usd": round(spent + 0.0005, 6)},
            )
            after = cluster.fire(20)
            assert 429 in {a.status_code for a in after}, "the budget forgot what was spent"
            rows = [r for r in cluster.recorded(0) if r.status_code == 200]
            assert sum(r.cost_usd for r in rows) <= spent + 0.0005
