"""Admit a call against its tenant's limits and budgets before anything upstream is spent.

The plan (``limits.plan``) says which counters the call touches and what it reserves; the counters
decide all of them at once. A refusal is a 429 in OpenAI's form with ``Retry-After`` and the
``x-ratelimit-*`` headers; an admitted call carries the same headers on its answer, and settles when the
Account stage has its usage and cost (however the call ended), correcting each reservation to what it
used. A call served from the cache settles with nothing used but its request.

When the counters cannot be reached the call is refused with a 503 (``limits.on_backend_error:
closed``, the default) or admitted unaccounted (``open``); either way it is counted.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from lockgate.errors import BudgetExceeded, GatewayError, LimitsUnavailable, RequestsLimited, TokensLimited
from lockgate.gateway.pipeline import Call, Handler, Reply
from lockgate.limits.alerts import SoftCapAlerts
from lockgate.limits.book import LimitBook
from lockgate.limits.counters import Admission, Check, Counters, CountersReset, CountersUnavailable
from lockgate.limits.plan import Plan, plan, used, with_output_limit
from lockgate.ops.metrics import GatewayMetrics
from lockgate.routing.table import RoutingTable

log = logging.getLogger(__name__)


class Limits:
    def __init__(
        self,
        book: LimitBook,
        counters: Counters,
        table: RoutingTable,
        metrics: GatewayMetrics,
        alerts: SoftCapAlerts,
        *,
        default_max_tokens: int,
        hold: float,
        fail_open: bool,
    ) -> None:
        self._book = book
        self._counters = counters
        self._table = table
        self._metrics = metrics
        self._alerts = alerts
        self._default_max_tokens = default_max_tokens
        self._hold = hold
        self._fail_open = fail_open
        self._settling: set[asyncio.Task[None]] = set()
        self._down = False
        self.on_reset: Callable[[], Awaitable[None]] = _nothing
        """Restores budget spend from the store when the backend lost it (set by the runtime)."""
        self.on_recovered: Callable[[], None] = lambda: None
        """Told when the backend answers again after failing (the runtime reconciles soon)."""

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        principal = call.principal
        if principal is None or call.shadow:
            return await call_next(call)
        limits = self._book.of(principal.tenant_id)
        if not limits.rules and not limits.budgets:
            return await call_next(call)
        admitted = plan(call, limits, self._table, self._default_max_tokens, datetime.now(UTC))
        if admitted.output_limit is not None and admitted.output_limit != _requested(call):
            with_output_limit(call, admitted.output_limit)
        if not admitted.checks:
            return await call_next(call)
        admission = await self._admit(call, admitted)
        if admission is None:  # the backend is down and limits fail open
            return await call_next(call)
        headers = _rate_headers(admission)
        if not admission.admitted:
            raise _refusal(admission, headers)
        call.settle = lambda tokens, cost: self._settle(call, admission, tokens, cost)
        reply = await call_next(call)
        reply.headers.update(headers)
        return reply

    async def _admit(self, call: Call, admitted: Plan) -> Admission | None:
        try:
            try:
                admission = await self._counters.admit(admitted.checks, call.request_id, self._hold)
            except CountersReset:
                # The backend lost its budget spend: restore it from the store, then decide.
                await self.on_reset()
                admission = await self._counters.admit(admitted.checks, call.request_id, self._hold)
        except (CountersUnavailable, CountersReset) as exc:
            self._metrics.limit_decisions.labels("unavailable").inc()
            if not self._down:
                self._down = True
                log.error(
                    "limits backend unavailable (%s); failing %s",
                    exc,
                    "open" if self._fail_open else "closed",
                )
            if self._fail_open:
                return None
            raise LimitsUnavailable(
                "Limits cannot be checked right now; try again shortly.", headers={"Retry-After": "1"}
            ) from None
        if self._down:
            self._down = False
            log.warning("limits backend reachable again")
            self.on_recovered()
        refused = admission.refusal
        self._metrics.limit_decisions.labels("admitted" if refused is None else refused.what).inc()
        return admission

    def _settle(self, call: Call, admission: Admission, tokens: int, cost: float) -> None:
        if call.cache is not None:
            tokens, cost = 0, 0.0  # served from the cache: nothing reached an upstream
        amounts = used(admission.checks, tokens, cost)
        tenant = call.principal.tenant if call.principal is not None else "-"
        task = asyncio.get_running_loop().create_task(self._settle_async(admission, amounts, tenant))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle_async(self, admission: Admission, amounts: list[float], tenant: str) -> None:
        try:
            over = await self._counters.settle(admission, amounts)
        except CountersUnavailable:
            # The reservation expires on its own (``limits.reservation_hold``); spend is in the request log.
            self._metrics.limit_decisions.labels("unsettled").inc()
            return
        for crossed in over:
            self._alerts.crossed(crossed.check, tenant)

    async def drain(self) -> None:
        """Wait for settlements in flight (graceful stop)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)


async def _nothing() -> None:
    return None


def _requested(call: Call) -> int | None:
    from lockgate.wire import ChatCompletionRequest

    return call.request.output_limit if isinstance(call.request, ChatCompletionRequest) else None


def _refusal(admission: Admission, headers: dict[str, str]) -> GatewayError:
    check = admission.refusal
    assert check is not None
    wait = max(1, math.ceil(admission.retry_after))
    headers = {**headers, "Retry-After": str(wait)}
    if check.what == "budget":
        return BudgetExceeded(
            f"The budget '{check.name}' is spent for this period; it resets in {_duration(wait)}.",
            headers=headers,
        )
    if check.what == "tokens":
        if check.amount > check.limit:
            return TokensLimited(
                f"This call needs up to {int(check.amount)} tokens, more than the limit '{check.name}' "
                f"allows in a minute ({int(check.limit)}); lower max_tokens or shorten the input.",
                code="request_too_large_for_limit",
                headers=headers,
            )
        return TokensLimited(
            f"Rate limit '{check.name}' reached on tokens per minute: limit {int(check.limit)}, this call "
            f"needs up to {int(check.amount)}. Try again in {_duration(wait)}.",
            headers=headers,
        )
    if check.what == "concurrent":
        return RequestsLimited(
            f"Limit '{check.name}' of {int(check.limit)} concurrent calls reached. "
            f"Try again in {_duration(wait)}.",
            code="concurrency_limit_exceeded",
            headers=headers,
        )
    return RequestsLimited(
        f"Rate limit '{check.name}' reached on requests per minute: limit {int(check.limit)}. "
        f"Try again in {_duration(wait)}.",
        headers=headers,
    )


def _rate_headers(admission: Admission) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers, from the tightest requests and tokens windows of the call."""
    headers: dict[str, str] = {}
    for what in ("requests", "tokens"):
        tightest: tuple[float, Check, float] | None = None
        for check, remaining, reset in zip(
            admission.checks, admission.remaining, admission.reset, strict=True
        ):
            if (
                check.kind == "window"
                and check.what == what
                and (tightest is None or remaining < tightest[0])
            ):
                tightest = (remaining, check, reset)
        if tightest is not None:
            remaining, check, reset = tightest
            headers[f"x-ratelimit-limit-{what}"] = str(int(check.limit))
            headers[f"x-ratelimit-remaining-{what}"] = str(int(remaining))
            headers[f"x-ratelimit-reset-{what}"] = _duration(reset)
    return headers


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``1h2m3s``; under a second, ``250ms``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
