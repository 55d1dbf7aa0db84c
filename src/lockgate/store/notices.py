"""Change notices between server processes and replicas, through Redis pub/sub.

Every worker polls the store's change versions (``store/watch.py``); with ``redis.url`` configured it
also subscribes to the channel ``{redis.prefix}changes``. A process whose control API just committed a
change publishes a notice there, and every other worker, on any host, polls its versions at once
instead of at its next interval. A notice carries no state, only "look now": the store stays the one
source of truth, a lost notice costs one polling interval, and a duplicate costs one small query.

Redis is never on the path of a request or a control API call: publishing happens in a task of its
own, one attempt bounded by ``redis.timeout``; the subscriber reconnects with a backoff from 0.5 s to
10 s and, once subscribed again, polls at once for whatever it missed. One warning when Redis goes
away, one when it is back. The ``redis`` package is imported only when a URL is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lockgate.store.outage import Outage

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from lockgate.config.schema import RedisConfig

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
KEEPALIVE = 5.0
"""Seconds of silence on the subscription before a ping; no answer within three of them: reconnect."""


class ChangeNotices:
    def __init__(self, url: str, prefix: str, timeout: float) -> None:
        self.channel = f"{prefix}changes"
        self._url = url
        self._timeout = timeout
        self._sender = uuid.uuid4().hex.encode()  # this process's own notices are not news to it
        self._publisher: Redis | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        self._publish_outage = Outage(log, "Redis (publishing change notices)")
        self._listen_outage = Outage(log, "Redis (change notices)")
        self.subscribed = False

    def publish(self) -> None:
        """Tell every other worker to poll now. Call after the change committed, on the event loop;
        returns at once and never raises."""
        task = asyncio.get_running_loop().create_task(self._publish(), name="change-notice")
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self) -> None:
        try:
            if self._publisher is None:
                self._publisher = self._client()
            await self._publisher.publish(self.channel, self._sender)
        except Exception as exc:
            self._publish_outage.failed(exc, "other workers see changes at their next poll")
        else:
            self._publish_outage.recovered()

    async def listen(self, on_notice: Callable[[], None]) -> None:
        """Call ``on_notice`` for every other process's notice, and once after each (re)subscription,
        until cancelled. Never raises otherwise."""
        backoff = 0.0
        while True:
            try:
                await self._listen(on_notice)
            except Exception as exc:
                if self.subscribed:
                    backoff = 0.0
                self.subscribed = False
                self._listen_outage.failed(
                    exc, "changes reach this worker by polling; reconnecting with backoff"
                )
            backoff = min(max(backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
            await asyncio.sleep(backoff)

    async def _listen(self, on_notice: Callable[[], None]) -> None:
        client = self._client()
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            confirmed = await pubsub.get_message(timeout=max(self._timeout, 1.0))
            if confirmed is None or confirmed.get("type") != "subscribe":
                raise TimeoutError(f"no confirmation of the subscription to {self.channel}")
            self.subscribed = True
            self._listen_outage.recovered()
            on_notice()  # whatever changed while this worker was not subscribed
            loop = asyncio.get_running_loop()
            heard = loop.time()
            while True:
                message = await pubsub.get_message(timeout=KEEPALIVE)
                if message is not None:
                    heard = loop.time()
                    if message.get("type") == "message" and message.get("data") != self._sender:
                        on_notice()
                    continue
                if loop.time() - heard > 3 * KEEPALIVE:
                    raise TimeoutError("Redis did not answer a ping on the notice subscription")
                await pubsub.ping()  # its answer arrives as a message
        finally:
            self.subscribed = False
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await client.aclose()

    async def close(self) -> None:
        for task in list(self._publishing):
            task.cancel()
        await asyncio.gather(*self._publishing, return_exceptions=True)
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                await self._publisher.aclose()
            self._publisher = None

    def _client(self) -> Redis:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options: dict[str, Any] = {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "retry": Retry(NoBackoff(), 0),  # one attempt: the callers back off themselves
        }
        return Redis.from_url(self._url, **options)


def change_notices(config: RedisConfig) -> ChangeNotices | None:
    """Notices through the configured Redis; None (polling alone) without ``redis.url``."""
    if config.url is None:
        return None
    return ChangeNotices(config.url.get_secret_value(), config.prefix, config.timeout)
