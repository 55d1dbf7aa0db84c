"""The counters contract: admit a call against several counters at once, then settle what it used.

Every call that a limit or a budget applies to is admitted with a list of ``Check``s, one per counter,
and the backend decides them **atomically**: either every counter takes its reservation or none does.
Three kinds of counter:

- ``window``: a sliding window of ``window`` seconds in one-second buckets (requests or tokens a minute).
  The call fits if the window's usage plus its ``amount`` stays within ``limit``; the amount goes into the
  bucket of the current second. Over any ``window`` consecutive buckets the total never exceeds the limit.
- ``concurrency``: calls in flight. A slot is held until the call settles, or until ``hold`` seconds pass
  (a call whose process died gives its slot back then).
- ``budget``: spend over a period (``key`` names the period), in whole nano-dollars so that sums are
  exact. The call fits if the settled spend, plus every pending reservation, plus its worst-case
  ``amount`` stays within ``limit``; its reservation is pending until it settles or ``hold`` seconds pass.

``settle`` replaces each reservation by what the call actually used (at most what it reserved, when the
reservation was an upper bound): window amounts are corrected in the bucket where they were reserved,
the slot is freed, the pending budget amount becomes settled spend. It reports each budget whose settled
spend is now at or over its ``soft`` cap, so the caller can alert (once per period: the store decides).

Backends: ``MemoryCounters`` (one process), the Redis one (``limits.redis_counters``, several replicas),
and the one the ``lockgate serve`` supervisor shares with its workers (``limits.shared``). The same
conformance tests run against each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Kind = Literal["window", "concurrency", "budget"]
What = Literal["requests", "tokens", "concurrent", "budget"]


@dataclass(frozen=True, slots=True)
class Check:
    key: str
    """The counter's identity, unique per rule (or budget and period) and per key or model it splits by."""
    kind: Kind
    what: What
    limit: float
    amount: float = 1.0
    """Reserved now: 1 request, the worst-case tokens, the worst-case cost; 1 slot."""
    window: float = 60.0
    """Seconds, for ``window`` checks."""
    ends_at: float = 0.0
    """Epoch seconds at which a ``budget`` period ends (its counters expire a day later)."""
    soft: float | None = None
    """A budget's soft cap: settling at or over it is reported."""
    name: str = ""
    """What a person calls it: the rule or budget name, for errors and alerts."""


@dataclass(frozen=True, slots=True)
class Admission:
    reservation: str
    admitted: bool
    checks: tuple[Check, ...]
    at: float
    """Epoch seconds (the backend's clock) of the decision; window reservations went into its bucket."""
    refused: int | None = None
    """Index of the first check that did not fit."""
    retry_after: float = 0.0
    """Seconds until the refused check could fit (the period's end for a budget)."""
    remaining: tuple[float, ...] = ()
    """Per check, the limit minus the usage after this reservation (or before it, when refused)."""
    reset: tuple[float, ...] = ()
    """Per check, seconds until its usage is back to zero if nothing else arrives."""

    @property
    def refusal(self) -> Check | None:
        return self.checks[self.refused] if self.refused is not None else None


class CountersUnavailable(Exception):
    """The backend could not answer (Redis down or too slow, the supervisor's socket gone): the caller
    decides whether the call fails closed or goes through unchecked."""


class CountersReset(Exception):
    """The backend lost its state (a restarted Redis): budget spend must be reconciled from the store,
    then ``reconciled`` called, before budgets can be checked again."""


@dataclass(frozen=True, slots=True)
class OverSoftCap:
    check: Check
    spent: float


class Counters(Protocol):
    async def admit(self, checks: Sequence[Check], reservation: str, hold: float) -> Admission:
        """Reserve ``amount`` on every check, or on none (``admitted`` False, ``refused`` says which)."""

    async def settle(self, admission: Admission, used: Sequence[float]) -> list[OverSoftCap]:
        """Replace the reservations by ``used`` (one amount per check; ignored for concurrency)."""

    async def set_spend(self, key: str, spent: float, ends_at: float) -> None:
        """Raise a budget period's settled spend to at least ``spent`` (reconciling from the store)."""

    async def reconciled(self) -> None:
        """Every budget was raised to the store's spend: admissions may check budgets again."""

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Window:
    buckets: dict[int, float] = field(default_factory=dict)

    def usage(self, now: int, width: int) -> float:
        oldest = now - width
        for second in [s for s in self.buckets if s <= oldest]:
            del self.buckets[second]
        return sum(self.buckets.values())

    def retry_after(self, now: float, width: int, limit: float, amount: float) -> float:
        """Seconds until enough of the window has aged out for ``amount`` to fit."""
        usage = sum(self.buckets.values())
        for second in sorted(self.buckets):
            usage -= self.buckets[second]
            if usage + amount <= limit:
                return max(0.0, second + width - now)
        return float(width)

    def reset(self, now: float, width: int) -> float:
        return max(0.0, max(self.buckets) + width - now) if self.buckets else 0.0


@dataclass(slots=True)
class _Budget:
    ends_at: float
    spent: float = 0.0
    pending: dict[str, tuple[float, float]] = field(default_factory=dict)
    """reservation -> (amount, expires at)"""

    def committed(self, now: float) -> float:
        for reservation in [r for r, (_, expires) in self.pending.items() if expires <= now]:
            del self.pending[reservation]
        return self.spent + sum(amount for amount, _ in self.pending.values())


class MemoryCounters:
    """Exact counters in this process; every operation is synchronous, so it is atomic on the event loop.

    The ``clock`` is injectable for tests; it returns epoch seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._budgets: dict[str, _Budget] = {}
        self._swept = 0.0

    async def admit(self, checks: Sequence[Check], reservation: str, hold: float) -> Admission:
        return self.admit_now(checks, reservation, hold)

    async def settle(self, admission: Admission, used: Sequence[float]) -> list[OverSoftCap]:
        return self.settle_now(admission, used)

    async def set_spend(self, key: str, spent: float, ends_at: float) -> None:
        self.set_spend_now(key, spent, ends_at)

    async def reconciled(self) -> None:
        return None  # this process's memory is never lost while it runs

    async def close(self) -> None:
        return None

    # The synchronous operations, shared with the supervisor's server (``limits.shared``).

    def admit_now(self, checks: Sequence[Check], reservation: str, hold: float) -> Admission:
        now = self._clock()
        second = math.floor(now)
        self._sweep(now)
        usages = [self._usage(check, now, second) for check in checks]
        for index, (check, usage) in enumerate(zip(checks, usages, strict=True)):
            if usage + check.amount > check.limit:
                return Admission(
                    reservation,
                    False,
                    tuple(checks),
                    now,
                    refused=index,
                    retry_after=self._retry_after(check, now, check.amount),
                    remaining=tuple(max(0.0, c.limit - u) for c, u in zip(checks, usages, strict=True)),
                    reset=tuple(self._reset(c, now) for c in checks),
                )
        for check in checks:
            if check.kind == "window":
                buckets = self._windows.setdefault(check.key, _Window()).buckets
                buckets[second] = buckets.get(second, 0.0) + check.amount
            elif check.kind == "concurrency":
                self._slots.setdefault(check.key, {})[reservation] = now + hold
            else:
                budget = self._budgets.setdefault(check.key, _Budget(check.ends_at))
                budget.pending[reservation] = (check.amount, now + hold)
        return Admission(
            reservation,
            True,
            tuple(checks),
            now,
            remaining=tuple(max(0.0, c.limit - u - c.amount) for c, u in zip(checks, usages, strict=True)),
            reset=tuple(self._reset(c, now) for c in checks),
        )

    def settle_now(self, admission: Admission, used: Sequence[float]) -> list[OverSoftCap]:
        if not admission.admitted:
            return []
        over: list[OverSoftCap] = []
        second = math.floor(admission.at)
        for check, amount in zip(admission.checks, used, strict=True):
            if check.kind == "window":
                window = self._windows.get(check.key)
                if window is not None and second in window.buckets:
                    window.buckets[second] = max(0.0, window.buckets[second] + amount - check.amount)
            elif check.kind == "concurrency":
                self._slots.get(check.key, {}).pop(admission.reservation, None)
            else:
                budget = self._budgets.setdefault(check.key, _Budget(check.ends_at))
                budget.pending.pop(admission.reservation, None)
                budget.spent += amount
                if check.soft is not None and budget.spent >= check.soft:
                    over.append(OverSoftCap(check, budget.spent))
        return over

    def set_spend_now(self, key: str, spent: float, ends_at: float) -> None:
        budget = self._budgets.setdefault(key, _Budget(ends_at))
        budget.spent = max(budget.spent, spent)

    def _usage(self, check: Check, now: float, second: int) -> float:
        if check.kind == "window":
            window = self._windows.get(check.key)
            return window.usage(second, int(check.window)) if window is not None else 0.0
        if check.kind == "concurrency":
            slots = self._slots.get(check.key)
            if not slots:
                return 0.0
            for reservation in [r for r, expires in slots.items() if expires <= now]:
                del slots[reservation]
            return float(len(slots))
        budget = self._budgets.get(check.key)
        return budget.committed(now) if budget is not None else 0.0

    def _retry_after(self, check: Check, now: float, amount: float) -> float:
        if check.kind == "window":
            window = self._windows.get(check.key)
            if window is None or amount > check.limit:
                return check.window
            return window.retry_after(now, int(check.window), check.limit, amount)
        if check.kind == "concurrency":
            slots = self._slots.get(check.key) or {}
            return max(0.0, min(slots.values()) - now) if slots else 1.0
        return max(0.0, check.ends_at - now)

    def _reset(self, check: Check, now: float) -> float:
        if check.kind == "window":
            window = self._windows.get(check.key)
            return window.reset(now, int(check.window)) if window is not None else 0.0
        if check.kind == "budget":
            return max(0.0, check.ends_at - now)
        return 0.0

    def _sweep(self, now: float) -> None:
        """Forget empty windows and budgets of periods that ended a day ago (bounded memory)."""
        if now - self._swept < 60:
            return
        self._swept = now
        second = math.floor(now)
        for key in [k for k, w in self._windows.items() if not w.buckets or max(w.buckets) < second - 3600]:
            del self._windows[key]
        for key in [k for k, s in self._slots.items() if not s]:
            del self._slots[key]
        for key in [k for k, b in self._budgets.items() if b.ends_at + 86400 < now]:
            del self._budgets[key]
