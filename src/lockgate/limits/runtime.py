"""Limits in one gateway worker: the book of rules and budgets, the counters, the stage, the reconciler.

The counters are chosen by ``limits.backend``: ``redis`` shares them between replicas; ``memory`` keeps
them in this server (the ``lockgate serve`` supervisor hosts them for its workers when there are several,
see ``limits.shared``). Budget counters are kept in step with the store: at start and every
``limits.reconcile_interval`` each budget's counter for the current period is raised to the spend the
request log holds (never lowered: what settled since is in the counter first), so a restarted backend
loses no spend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, func, select

from lockgate.config.schema import GatewayConfig
from lockgate.gateway.stages.limits import Limits
from lockgate.limits.alerts import SoftCapAlerts
from lockgate.limits.book import LimitBook, StoredBudget
from lockgate.limits.counters import Counters, CountersUnavailable, MemoryCounters
from lockgate.limits.plan import NANO, budget_check
from lockgate.limits.spec import EACH, period_bounds
from lockgate.ops.metrics import GatewayMetrics
from lockgate.routing.table import RoutingTable
from lockgate.store.tables import request_log

log = logging.getLogger(__name__)

SOCKET_ENV = "LOCKGATE_COUNTERS_SOCKET"


def make_counters(config: GatewayConfig) -> Counters:
    if config.limits.backend == "redis":
        from lockgate.limits.redis_counters import RedisCounters

        return RedisCounters(config.redis)
    socket_path = os.environ.get(SOCKET_ENV)
    if socket_path:
        from lockgate.limits.shared import SocketCounters

        return SocketCounters(socket_path)
    return MemoryCounters()


class GatewayLimits:
    def __init__(
        self, config: GatewayConfig, engine: Engine, table: RoutingTable, metrics: GatewayMetrics
    ) -> None:
        self._engine = engine
        self._interval = config.limits.reconcile_interval
        self.book = LimitBook()
        self.counters = make_counters(config)
        self.alerts = SoftCapAlerts(engine, metrics, config.limits.alert_webhook)
        self.stage = Limits(
            self.book,
            self.counters,
            table,
            metrics,
            self.alerts,
            default_max_tokens=config.limits.default_max_tokens,
            hold=config.limits.reservation_hold,
            fail_open=config.limits.on_backend_error == "open",
        )
        self._task: asyncio.Task[None] | None = None
        self._reconciling = asyncio.Lock()
        self.stage.on_reset = self.reconcile
        self.stage.on_recovered = self._soon
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await asyncio.to_thread(self.book.load, self._engine)
        await self.reconcile()
        self._task = asyncio.create_task(self._reconcile_forever(), name="limits-reconcile")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.stage.drain()
        await self.alerts.drain()
        await self.counters.close()

    async def reconcile(self) -> None:
        """Raise every budget counter of the current period to the spend the store holds, then tell the
        counters they are in step (a Redis that lost its data refuses budget checks until then)."""
        async with self._reconciling:
            now = datetime.now(UTC)
            try:
                spent = await asyncio.to_thread(self._spend, now) if self.book.budgets else []
                for check_key, nano, ends_at in spent:
                    await self.counters.set_spend(check_key, nano, ends_at)
                await self.counters.reconciled()
            except CountersUnavailable:
                log.warning("budget counters not reconciled: the limits backend is unavailable")
            except Exception:
                log.warning("budget counters not reconciled", exc_info=True)

    def _soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reconcile())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.reconcile()

    def _spend(self, now: datetime) -> list[tuple[str, float, float]]:
        found: list[tuple[str, float, float]] = []
        with self._engine.connect() as connection:
            for tenant_id, stored in self.book.budgets:
                for values, cost in self._rows(connection, tenant_id, stored, now):
                    check = budget_check(stored, values, now, 0)
                    found.append((check.key, math.ceil(cost * NANO - 1e-6), check.ends_at))
        return found

    @staticmethod
    def _rows(
        connection: Connection, tenant_id: str, stored: StoredBudget, now: datetime
    ) -> Iterator[tuple[dict[str, str | None], float]]:
        start, end = period_bounds(stored.budget.period, now)
        log_ = request_log.c
        where = [
            log_.tenant_id == tenant_id,
            log_.created_at >= start,
            log_.created_at < end,
            log_.shadow.is_(False),
        ]
        scope = stored.budget.scope
        if scope.key is not None and scope.key != EACH:
            where.append(log_.key_id == scope.key)
        if scope.team is not None and scope.team != EACH:
            where.append(log_.team == scope.team)
        group = log_.key_id if scope.key == EACH else log_.team if scope.team == EACH else None
        columns = [func.coalesce(func.sum(log_.cost_usd), 0.0)]
        query = select(*columns, group) if group is not None else select(*columns)
        query = query.where(*where)
        if group is not None:
            query = query.where(group.is_not(None)).group_by(group)
        for row in connection.execute(query):
            if group is None:
                yield {"key": None, "team": None, "model": None}, float(row[0])
            elif scope.key == EACH:
                yield {"key": row[1], "team": None, "model": None}, float(row[0])
            else:
                yield {"key": None, "team": row[1], "model": None}, float(row[0])
