"""Soft-cap alerts: once per budget, scope and period, whichever process sees the crossing first.

The counters report every settle that leaves a budget at or over its soft cap. This process remembers
which it has handled; the store decides between processes and replicas: the one whose row goes into
``budget_alerts`` first alerts (a log line, ``lockgate_budget_alerts_total``, and a POST of a JSON
document to ``limits.alert_webhook`` when one is configured). The webhook is tried three times; a
webhook that stays down loses the POST, never the log line or the metric.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from lockgate.limits.counters import Check
from lockgate.ops.metrics import GatewayMetrics
from lockgate.store.tables import budget_alerts

log = logging.getLogger(__name__)
NANO = 1_000_000_000


def budget_key_parts(key: str) -> tuple[str, str, datetime]:
    """(budget id, scope, period start) of a budget counter key ``b:ID:SCOPE:START``."""
    _, budget_id, rest = key.split(":", 2)
    scope, start = rest.rsplit(":", 1)
    return budget_id, scope, datetime.fromtimestamp(int(start), UTC)


class SoftCapAlerts:
    def __init__(self, engine: Engine, metrics: GatewayMetrics, webhook: SecretStr | None) -> None:
        self._engine = engine
        self._metrics = metrics
        self._webhook = webhook
        self._handled: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def crossed(self, check: Check, tenant: str) -> None:
        """``check``'s budget is at or over its soft cap: alert unless someone already did this period."""
        if check.key in self._handled:
            return
        self._handled.add(check.key)
        task = asyncio.get_running_loop().create_task(self._alert(check, tenant))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _alert(self, check: Check, tenant: str) -> None:
        budget_id, scope, start = budget_key_parts(check.key)
        try:
            first = await asyncio.to_thread(self._record, budget_id, scope, start, check)
        except Exception:
            self._handled.discard(check.key)  # the store is down: try again at the next crossing
            log.warning("could not record the soft-cap alert of budget %s", check.name, exc_info=True)
            return
        if not first:
            return
        document = {
            "kind": "budget.soft_cap",
            "tenant": tenant,
            "budget": check.name,
            "scope": scope,
            "period_start": start.isoformat(),
            "period_end": datetime.fromtimestamp(check.ends_at, UTC).isoformat(),
            "amount_usd": check.limit / NANO,
            "soft_cap_usd": (check.soft or 0) / NANO,
        }
        log.warning(
            "budget %s of tenant %s (%s) passed its soft cap of $%g for the period from %s",
            check.name,
            tenant,
            scope,
            document["soft_cap_usd"],
            document["period_start"],
        )
        self._metrics.budget_alerts.labels(tenant, check.name).inc()
        if self._webhook is not None:
            await self._post(document)

    def _record(self, budget_id: str, scope: str, start: datetime, check: Check) -> bool:
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    budget_alerts.insert().values(
                        budget_id=budget_id,
                        scope=scope,
                        period_start=start,
                        fired_at=datetime.now(UTC),
                        spent_usd=(check.soft or 0) / NANO,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def _post(self, document: dict[str, Any]) -> None:
        import aiohttp  # here: the server starts without it when no provider needs it

        assert self._webhook is not None
        url = self._webhook.get_secret_value()
        timeout = aiohttp.ClientTimeout(total=5)
        for attempt in range(3):
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.post(url, json=document) as answer,
                ):
                    if answer.status < 300:
                        return
                    reason = f"HTTP {answer.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
            await asyncio.sleep(0.5 * 2**attempt)
        # Never the URL: a webhook URL often carries its own secret.
        log.error("the budget alert webhook failed three times (%s); the alert is in the log only", reason)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
