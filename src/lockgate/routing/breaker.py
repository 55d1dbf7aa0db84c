"""A per-deployment circuit breaker.

Closed: requests flow and consecutive failures are counted. At ``threshold`` the circuit opens and the
deployment is skipped for ``cooldown`` seconds. Then one probe request is let through (half-open): its
success closes the circuit, its failure opens it for another cooldown. A probe that never reports back
(its client went away) is presumed lost after another cooldown, so the circuit cannot stick half-open.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        threshold: int,
        cooldown: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._since = 0.0

    @property
    def state(self) -> CircuitState:
        return self._state

    @property
    def available(self) -> bool:
        """Whether a request could be let through now, without claiming the half-open probe."""
        return self._state is CircuitState.CLOSED or self._clock() - self._since >= self.cooldown

    def allow(self) -> bool:
        """Whether to send a request now; in half-open state this claims the single probe."""
        if self._state is CircuitState.CLOSED:
            return True
        now = self._clock()
        if now - self._since < self.cooldown:
            return False
        self._since = now
        self._set(CircuitState.HALF_OPEN)
        return True

    def success(self) -> None:
        self._failures = 0
        if self._state is not CircuitState.CLOSED:
            self._set(CircuitState.CLOSED)

    def failure(self) -> None:
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or self._failures >= self.threshold:
            self._since = self._clock()
            self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)
