"""The gateway runtime: everything one worker process needs, built once from configuration."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text

from lockgate.config.loader import LoadedConfig
from lockgate.gateway.feedback import FeedbackBook
from lockgate.gateway.invoke import Invoker
from lockgate.gateway.mirror import Mirror
from lockgate.gateway.pipeline import Handler, compose
from lockgate.gateway.routebook import RouteBook
from lockgate.gateway.stages.account import Account
from lockgate.gateway.stages.authenticate import Authenticate
from lockgate.gateway.stages.authorize import Authorize
from lockgate.gateway.stages.release import AnswerObserver, ResolveRelease
from lockgate.limits.runtime import GatewayLimits
from lockgate.ops.metrics import GatewayMetrics
from lockgate.ops.request_log import RequestLog
from lockgate.providers.base import Provider, ProviderSettings
from lockgate.providers.registry import provider_class
from lockgate.routing.breaker import CircuitState
from lockgate.routing.table import RoutingTable
from lockgate.security.keyring import Keyring
from lockgate.store import versions
from lockgate.store.notices import change_notices
from lockgate.store.watch import ChangeWatcher

if TYPE_CHECKING:
    from lockgate.gateway.stages.cache import ResponseCache

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    store: str
    deployments: dict[str, str]


class Gateway:
    def __init__(self, loaded: LoadedConfig, engine: Engine, pepper: bytes) -> None:
        config = loaded.gateway
        self.config = config
        self.engine = engine
        self.started_at = int(time.time())
        self.metrics = GatewayMetrics()
        self.providers: dict[str, Provider[ProviderSettings]] = {
            name: provider_class(settings.kind)(name, settings) for name, settings in loaded.providers.items()
        }
        self.table = RoutingTable.build(config, self.providers, on_circuit_change=self._circuit_changed)
        self.keyring = Keyring(pepper)
        self.routes = RouteBook(on_unservable=self.metrics.releases_unservable.set)
        self.request_log = RequestLog(
            engine,
            config.request_log,
            on_written=self.metrics.log_written.inc,
            on_dropped=lambda reason, count: self.metrics.log_dropped.labels(reason).inc(count),
            on_pending=self.metrics.log_pending.set,
        )
        self.mirror = Mirror(self.metrics)
        self.feedback = FeedbackBook(engine, self.metrics.registry)
        self._release = ResolveRelease(self.routes, self.metrics, self.mirror)
        self.cache: ResponseCache | None = None
        if config.cache.enabled:  # the cache's modules load only where it is on
            from lockgate.gateway.stages.cache import build_cache

            self.cache = build_cache(config.cache, config.redis, self.metrics)
        self.limits = GatewayLimits(config, engine, self.table, self.metrics)
        self.handle: Handler = compose(
            [
                Account(self.request_log, self.metrics),
                Authenticate(self.keyring),
                self._release,
                Authorize(self.table),
                self.limits.stage,
                *([self.cache] if self.cache is not None else []),  # response cache
            ],
            Invoker(self.table, config.routing, self.metrics),
        )
        self.mirror.handler = self.handle
        if self.cache is not None:
            self.cache.attach(self.handle)
        self.watcher = ChangeWatcher(
            engine, config.server.change_poll_interval, notices=change_notices(config.redis)
        )
        self.watcher.watch(versions.AUTH, lambda: self.keyring.version, self.keyring.load)
        self.watcher.watch(versions.ROUTES, lambda: self.routes.version, self.routes.load)
        self.watcher.watch(versions.LIMITS, lambda: self.limits.book.version, self.limits.book.load)
        self._tasks: list[asyncio.Task[None]] = []

    def observe_answers(self, observer: AnswerObserver | None) -> None:
        """Tell ``observer`` of every complete answer of a rollout that scores online quality."""
        self._release.observer = observer

    @property
    def answer_observer(self) -> AnswerObserver | None:
        return self._release.observer

    async def start(self) -> None:
        await asyncio.to_thread(self.keyring.load, self.engine)
        await asyncio.to_thread(self.routes.load, self.engine)
        await self.limits.start()
        self.request_log.start()
        if self.cache is not None:
            await self.cache.start()
        for provider in self.providers.values():
            await provider.start()
        self._tasks.append(asyncio.create_task(self.watcher.run(), name="change-watcher"))
        # Start-up objects (config, compiled releases, pools, the model) live for the whole process:
        # move them out of the collector's view so full collections stay short under load.
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        await self.mirror.drain()
        if self.cache is not None:
            await self.cache.close()
        await self.limits.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for provider in self.providers.values():
            try:
                await provider.close()
            except Exception:
                log.warning("closing provider %s failed", provider.name, exc_info=True)
        await asyncio.to_thread(self.request_log.close)

    async def readiness(self) -> Readiness:
        """Ready while some deployment can answer. The store is reported, not required: keys and routes
        are served from memory and request records wait for it (ops/request_log.py), so taking every
        replica out of the load balancer during a store outage would turn it into a gateway outage."""
        try:
            await asyncio.wait_for(asyncio.to_thread(self._ping_store), timeout=2.0)
            store = "ok"
        except Exception as exc:
            store = (
                f"unreachable ({type(exc).__name__}); serving from memory, "
                f"{self.request_log.depth()} request records waiting"
            )
        deployments = {d.name: d.breaker.state.value for d in self.table.deployments()}
        healthy = any(d.breaker.available for d in self.table.deployments())
        return Readiness(healthy, store, deployments)

    def _ping_store(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def _circuit_changed(self, deployment: str, state: CircuitState) -> None:
        log.warning("circuit of deployment %s is now %s", deployment, state.value)
        self.metrics.circuit_open.labels(deployment).set(0 if state is CircuitState.CLOSED else 1)
