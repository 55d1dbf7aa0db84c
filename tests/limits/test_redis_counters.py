"""The Redis backend beyond the shared contract: the server's clock decides, several replicas admitting at
once never overshoot any limit and settle to exact totals, every key expires, and an unreachable or silent
Redis makes operations fail with ``CountersUnavailable`` within the timeout instead of hanging."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace

import pytest
import redis

from lockgate.config.schema import RedisConfig
from lockgate.limits.counters import Admission, Check, CountersReset, CountersUnavailable
from lockgate.limits.redis_counters import RedisCounters
from tests.conftest import RedisSpace

pytestmark = pytest.mark.redis

NANO = 1_000_000_000


@pytest.fixture
def raw(redis_space: RedisSpace) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_space.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
async def replicas(redis_space: RedisSpace) -> AsyncIterator[list[RedisCounters]]:
    """Three backends with connection pools of their own, as three gateway replicas hold them."""
    made = [RedisCounters(config(redis_space)) for _ in range(3)]
    await made[0].reconciled()  # as the gateway does at start
    yield made
    for counters in made:
        await counters.close()


def config(space: RedisSpace) -> RedisConfig:
    return RedisConfig(url=space.url, prefix=space.prefix, timeout=2.0)


def reservation() -> str:
    return f"res_{uuid.uuid4().hex}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_redis_servers_clock_decides_not_the_replicas(
    replicas: list[RedisCounters], raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    skewed = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: skewed)  # this replica's clock is an hour off
    rpm = Check(f"rpm:{uuid.uuid4().hex[:8]}", "window", "requests", 2, window=60)
    seconds, micros = raw.time()
    before = seconds + micros / 1e6
    first = await replicas[0].admit([rpm], reservation(), 30)
    second = await replicas[1].admit([rpm], reservation(), 30)
    seconds, micros = raw.time()
    after = seconds + micros / 1e6
    assert before <= first.at <= second.at <= after
    # One window for both replicas: the third call is refused whichever replica takes it.
    refused = await replicas[2].admit([rpm], reservation(), 30)
    assert not refused.admitted
    assert 0 < refused.retry_after <= 60


@pytest.mark.parametrize(
    ("binding", "tokens_each", "dollars_each", "admitted"),
    [
        ("requests", 50, 0.0001, 100),  # 100 requests; 5,000 tokens; $0.01
        ("tokens", 150, 0.0005, 66),  # 66 x 150 = 9,900 tokens; one more would be 10,050
        ("budget", 90, 0.001, 50),  # 50 x $0.001 = $0.05
    ],
)
async def test_three_replicas_admitting_at_once_never_overshoot_and_settle_exactly(
    replicas: list[RedisCounters], binding: str, tokens_each: int, dollars_each: float, admitted: int
) -> None:
    tag = uuid.uuid4().hex[:8]
    checks = [
        Check(f"rpm:{tag}", "window", "requests", 100, 1, name="rpm"),
        Check(f"tpm:{tag}", "window", "tokens", 10_000, tokens_each, name="tpm"),
        Check(
            f"budget:{tag}",
            "budget",
            "budget",
            round(0.05 * NANO),
            round(dollars_each * NANO),
            ends_at=time.time() + 3600,
            name="monthly",
        ),
    ]
    results = await asyncio.gather(*(replicas[i % 3].admit(checks, reservation(), 60) for i in range(200)))
    taken = [r for r in results if r.admitted]
    assert len(taken) == admitted
    assert {r.refusal.what for r in results if r.refusal is not None} == {binding}

    async def usage() -> Admission:
        """What is left on each counter, read by an admission that takes nothing."""
        probe = [replace(check, amount=0) for check in checks]
        return await replicas[0].admit(probe, reservation(), 60)

    reserved_nano = round(dollars_each * NANO)
    assert (await usage()).remaining == (
        100 - admitted,
        10_000 - admitted * tokens_each,
        0.05 * NANO - admitted * reserved_nano,
    )
    # Each call used less than it reserved: 40 tokens and $0.00003.
    await asyncio.gather(*(replicas[i % 3].settle(a, [1, 40, 30_000]) for i, a in enumerate(taken)))
    assert (await usage()).remaining == (
        100 - admitted,
        10_000 - admitted * 40,
        0.05 * NANO - admitted * 30_000,
    )


async def test_every_key_is_under_the_prefix_and_expires(
    replicas: list[RedisCounters], raw: redis.Redis, redis_space: RedisSpace
) -> None:
    tag = uuid.uuid4().hex[:8]
    ends_at = time.time() + 7 * 86400
    checks = [
        Check(f"rpm:{tag}", "window", "requests", 10, window=60),
        Check(f"slots:{tag}", "concurrency", "concurrent", 5),
        Check(f"budget:{tag}", "budget", "budget", 1000, 10, ends_at=ends_at),
    ]
    admission = await replicas[0].admit(checks, reservation(), 120)
    assert admission.admitted
    await replicas[0].set_spend(f"other:{tag}", 5, ends_at)
    keys = sorted(raw.scan_iter(match=f"{redis_space.prefix}*"))
    assert keys, "the counters wrote nothing"
    assert all(k.startswith(f"{redis_space.prefix}limits:") for k in keys)
    ttls = {k.removeprefix(f"{redis_space.prefix}limits:"): raw.ttl(k) for k in keys}
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    assert ttls[f"w:rpm:{tag}"] <= 62  # the window, and a little
    assert 120 <= ttls[f"c:slots:{tag}"] <= 122  # the longest hold, and a little
    a_day_after_the_period = ends_at + 86400 - time.time()
    for name in (f"b:budget:{tag}", f"p:budget:{tag}", f"b:other:{tag}"):
        assert abs(ttls[name] - a_day_after_the_period) <= 5, name


async def test_a_dropped_connection_is_replaced_for_the_next_operation(
    redis_space: RedisSpace, raw: redis.Redis
) -> None:
    name = f"lgtest-{uuid.uuid4().hex[:8]}"
    counters = RedisCounters(config(redis_space), client_name=name)
    rpm = Check(f"rpm:{uuid.uuid4().hex[:8]}", "window", "requests", 2)
    try:
        assert (await counters.admit([rpm], reservation(), 30)).admitted
        ours = [c["id"] for c in raw.client_list() if c["name"] == name]
        assert ours
        for client_id in ours:
            raw.client_kill_filter(_id=client_id)
        await asyncio.sleep(0.2)  # dropped while idle (a Redis restart, a proxy's idle timeout)
        again = await counters.admit([rpm], reservation(), 30)
        assert (again.admitted, again.remaining) == (True, (0,))
    finally:
        await counters.close()


async def _silent_server() -> tuple[asyncio.Server, int]:
    """Accepts connections and never answers: a Redis that hangs."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("where", ["refused", "silent"])
async def test_an_unreachable_redis_fails_within_the_timeout(where: str) -> None:
    server = None
    if where == "silent":
        server, port = await _silent_server()
    else:
        port = free_port()
    counters = RedisCounters(RedisConfig(url=f"redis://127.0.0.1:{port}/0", prefix="lgtest:", timeout=0.25))
    rpm = Check("rpm:down", "window", "requests", 10)
    admission = Admission("res_1", True, (rpm,), time.time())
    operations: dict[str, Callable[[], Awaitable[object]]] = {
        "admit": lambda: counters.admit([rpm], reservation(), 30),
        "settle": lambda: counters.settle(admission, [1]),
        "set_spend": lambda: counters.set_spend("budget:down", 1, time.time() + 60),
    }
    try:
        for name, operation in operations.items():
            started = time.monotonic()
            with pytest.raises(CountersUnavailable):
                await asyncio.wait_for(operation(), 10)
            # Bounded by the configured timeout (plus scheduling slack), not by a hang.
            assert time.monotonic() - started < 1.5, name
    finally:
        await counters.close()
        if server is not None:
            server.close()


async def test_a_redis_that_lost_its_data_refuses_budget_checks_until_reconciled(
    replicas: list[RedisCounters], raw: redis.Redis, redis_space: RedisSpace
) -> None:
    tag = uuid.uuid4().hex[:8]
    ends_at = time.time() + 86400
    budget = Check(f"budget:{tag}", "budget", "budget", 1000, 600, ends_at=ends_at)
    rpm = Check(f"rpm:{tag}", "window", "requests", 10)
    assert (await replicas[0].admit([budget], reservation(), 60)).admitted
    for key in raw.scan_iter(match=f"{redis_space.prefix}*"):
        raw.delete(key)  # what a restarted Redis without persistence holds: nothing
    with pytest.raises(CountersReset):
        await replicas[1].admit([rpm, budget], reservation(), 60)
    assert (await replicas[1].admit([rpm], reservation(), 60)).admitted  # no budget: nothing to lose
    await replicas[2].set_spend(f"budget:{tag}", 600, ends_at)  # the spend the store holds
    await replicas[2].reconciled()
    refused = await replicas[1].admit([budget], reservation(), 60)
    assert not refused.admitted  # 600 spent + 600 asked > 1000: the spend was not forgotten
