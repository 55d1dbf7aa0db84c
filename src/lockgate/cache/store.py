"""Where exact answers live: in the worker's memory, or in Redis shared by every worker and replica.

Both keep opaque bytes under a key for a TTL and never raise: a backend that fails answers a miss.

``MemoryStore`` is a least-recently-used map bounded by entries and by bytes, per worker process; an
expired entry is dropped when it is next read (or evicted first when room is needed).

``RedisStore`` keeps each answer under ``{redis.prefix}cache:{key}`` with ``SET ... PX``, so Redis
expires it. An error or a call slower than ``redis.timeout`` counts as a miss, is counted in
``lockgate_cache_errors_total{part="redis"}`` and is logged once per outage (and once when Redis is back).
After a failure Redis is left alone for a second, so an outage costs requests nothing but the miss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

RETRY_AFTER = 1.0
"""Seconds Redis is left alone after a failure."""


class AnswerStore(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    name = "memory"

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if len(value) > self._max_bytes:
            return
        self._drop(key)
        self._entries[key] = (self._clock() + ttl, value)
        self.bytes += len(value)
        while len(self._entries) > self._max_entries or self.bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _drop(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self.bytes -= len(found[1])


class RedisStore:
    name = "redis"

    def __init__(
        self,
        url: str,
        prefix: str,
        timeout: float,
        on_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from redis.asyncio import Redis  # only where the redis backend is configured

        # Bounded once, by asyncio.timeout around each operation, not also by redis-py's socket_timeout
        # (see limits/redis_counters.py).
        self._client: Redis = Redis.from_url(url, socket_connect_timeout=timeout, retry_on_timeout=False)
        self._prefix = f"{prefix}cache:"
        self._timeout = timeout
        self._on_error = on_error
        self._clock = clock
        self._resting_until = 0.0
        self._down = False

    async def get(self, key: str) -> bytes | None:
        if self._resting():
            return None
        try:
            async with asyncio.timeout(self._timeout):
                value = await self._client.get(self._prefix + key)
        except Exception as exc:
            self._failed(exc)
            return None
        self._ok()
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if self._resting():
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.set(self._prefix + key, value, px=max(1, int(ttl * 1000)))
        except Exception as exc:
            self._failed(exc)
            return
        self._ok()

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception:
            log.debug("closing the cache's Redis client failed", exc_info=True)

    def _resting(self) -> bool:
        return self._down and self._clock() < self._resting_until

    def _failed(self, exc: BaseException) -> None:
        self._on_error()
        self._resting_until = self._clock() + RETRY_AFTER
        if not self._down:
            self._down = True
            log.warning(
                "the response cache cannot reach Redis (%s); calls are served without the cache until it can",
                type(exc).__name__,
            )

    def _ok(self) -> None:
        if self._down:
            self._down = False
            log.warning("the response cache reaches Redis again")
