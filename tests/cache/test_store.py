"""The answer stores: bounded and expiring in memory; in Redis, shared, expiring, and a miss when down."""

from __future__ import annotations

import logging

import pytest

from lockgate.cache.store import MemoryStore, RedisStore
from tests.conftest import RedisSpace
from tests.support.processes import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_memory_store_expires_entries_after_their_ttl() -> None:
    clock = Clock()
    store = MemoryStore(10, 1000, clock=clock)
    await store.set("a", b"answer", ttl=5)
    clock.now += 4.9
    assert await store.get("a") == b"answer"
    clock.now += 0.2
    assert await store.get("a") is None
    assert (len(store), store.bytes) == (0, 0)


async def test_memory_store_evicts_the_least_recently_used_by_count_and_by_bytes() -> None:
    store = MemoryStore(2, 10)
    await store.set("a", b"1", 60)
    await store.set("b", b"2", 60)
    assert await store.get("a") == b"1"  # a is now the most recently used
    await store.set("c", b"3", 60)
    assert (await store.get("a"), await store.get("b"), await store.get("c")) == (b"1", None, b"3")
    await store.set("big", b"x" * 10, 60)  # 10 bytes: room for nothing else
    assert (await store.get("a"), await store.get("c"), await store.get("big")) == (None, None, b"x" * 10)
    assert store.bytes == 10
    await store.set("huge", b"x" * 11, 60)  # larger than the whole store: not kept, nothing evicted
    assert (await store.get("huge"), await store.get("big")) == (None, b"x" * 10)


async def test_memory_store_replaces_an_entry_without_counting_it_twice() -> None:
    store = MemoryStore(10, 100)
    await store.set("a", b"12345", 60)
    await store.set("a", b"123", 60)
    assert (len(store), store.bytes, await store.get("a")) == (1, 3, b"123")


@pytest.mark.redis
async def test_redis_store_keeps_answers_under_its_prefix_with_a_ttl(redis_space: RedisSpace) -> None:
    import redis

    store = RedisStore(redis_space.url, redis_space.prefix, 0.5)
    other = RedisStore(redis_space.url, redis_space.prefix, 0.5)  # another replica
    await store.set("k1", b"answer", ttl=30)
    assert await other.get("k1") == b"answer"
    client = redis.Redis.from_url(redis_space.url)
    try:
        ttl_ms = client.pttl(f"{redis_space.prefix}cache:k1")
        assert 29_000 < ttl_ms <= 30_000
    finally:
        client.close()
    await store.set("k2", b"short", ttl=0.05)
    assert await other.get("k2") == b"short"
    await store.close()
    await other.close()


@pytest.mark.redis
async def test_redis_store_expires_answers(redis_space: RedisSpace) -> None:
    import asyncio

    store = RedisStore(redis_space.url, redis_space.prefix, 0.5)
    await store.set("k", b"short", ttl=0.1)
    await asyncio.sleep(0.25)
    assert await store.get("k") is None
    await store.close()


async def test_unreachable_redis_is_a_miss_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[int] = []
    clock = Clock()
    store = RedisStore(
        f"redis://127.0.0.1:{free_port()}/0",
        "lgtest:down:",
        0.2,
        on_error=lambda: errors.append(1),
        clock=clock,
    )
    with caplog.at_level(logging.WARNING, logger="lockgate.cache.store"):
        assert await store.get("k") is None
        await store.set("k", b"v", 10)  # resting: not even tried
        assert await store.get("k") is None
        clock.now += 1.5
        assert await store.get("k") is None  # tried again, failed again
    assert len(errors) == 2
    warnings = [r.getMessage() for r in caplog.records if "cannot reach Redis" in r.getMessage()]
    assert len(warnings) == 1
    assert "(ConnectionError); calls are served without the cache" in warnings[0]
    await store.close()
