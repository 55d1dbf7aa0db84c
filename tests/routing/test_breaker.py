"""The per-deployment circuit breaker, driven by a fake clock."""

from __future__ import annotations

import pytest

from lockgate.routing.breaker import CircuitBreaker, CircuitState

THRESHOLD = 3
COOLDOWN = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[CircuitState]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: list[CircuitState]) -> CircuitBreaker:
    return CircuitBreaker(THRESHOLD, COOLDOWN, clock=clock, on_change=changes.append)


def state(breaker: CircuitBreaker) -> CircuitState:
    """The current state, read through a call so the type checker does not narrow it across calls."""
    return breaker.state


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(THRESHOLD):
        assert breaker.allow()
        breaker.failure()
    assert state(breaker) is CircuitState.OPEN


def test_starts_closed(breaker: CircuitBreaker, changes: list[CircuitState]) -> None:
    assert state(breaker) is CircuitState.CLOSED
    assert breaker.available
    assert all(breaker.allow() for _ in range(100))
    assert changes == []


def test_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker) -> None:
    for _ in range(THRESHOLD - 1):
        breaker.failure()
        assert state(breaker) is CircuitState.CLOSED
        assert breaker.allow()
    breaker.failure()
    assert state(breaker) is CircuitState.OPEN
    assert not breaker.available
    assert not breaker.allow()


def test_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    for _ in range(5):
        for _ in range(THRESHOLD - 1):
            breaker.failure()
        breaker.success()
    assert state(breaker) is CircuitState.CLOSED
    breaker.failure()
    assert state(breaker) is CircuitState.CLOSED


def test_blocks_for_the_whole_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    for _ in range(9):
        clock.advance(COOLDOWN / 10)
        assert not breaker.available
        assert not breaker.allow()
        assert state(breaker) is CircuitState.OPEN
    clock.advance(COOLDOWN / 10 - 1e-6)
    assert not breaker.allow()


def test_exactly_one_probe_after_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(COOLDOWN)
    assert breaker.available
    assert state(breaker) is CircuitState.OPEN  # `available` does not claim the probe
    assert breaker.allow()
    assert state(breaker) is CircuitState.HALF_OPEN
    assert not breaker.available
    assert [breaker.allow() for _ in range(20)] == [False] * 20
    clock.advance(COOLDOWN / 2)
    assert not breaker.allow()


def test_probe_success_closes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(COOLDOWN)
    assert breaker.allow()
    breaker.success()
    assert state(breaker) is CircuitState.CLOSED
    assert all(breaker.allow() for _ in range(10))
    # the count starts afresh: it takes a full threshold of failures to open again
    for _ in range(THRESHOLD - 1):
        breaker.failure()
    assert state(breaker) is CircuitState.CLOSED
    breaker.failure()
    assert state(breaker) is CircuitState.OPEN


def test_probe_failure_reopens_for_a_full_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(COOLDOWN + 5)
    assert breaker.allow()
    clock.advance(2)
    breaker.failure()
    assert state(breaker) is CircuitState.OPEN
    clock.advance(COOLDOWN - 0.01)
    assert not breaker.allow()
    clock.advance(0.01)
    assert breaker.allow()
    assert state(breaker) is CircuitState.HALF_OPEN


def test_lost_probe_is_retried_after_another_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(COOLDOWN)
    assert breaker.allow()  # this probe never reports back
    clock.advance(COOLDOWN - 0.01)
    assert not breaker.allow()
    clock.advance(0.01)
    assert breaker.available
    assert breaker.allow()
    assert state(breaker) is CircuitState.HALF_OPEN
    assert not breaker.allow()
    breaker.success()
    assert state(breaker) is CircuitState.CLOSED


def test_on_change_sequence(breaker: CircuitBreaker, clock: FakeClock, changes: list[CircuitState]) -> None:
    trip(breaker)
    breaker.failure()  # already open: no second notification
    clock.advance(COOLDOWN)
    breaker.allow()
    breaker.allow()
    breaker.failure()
    clock.advance(COOLDOWN)
    breaker.allow()
    breaker.success()
    breaker.success()
    assert changes == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


def test_threshold_of_one(clock: FakeClock) -> None:
    breaker = CircuitBreaker(1, COOLDOWN, clock=clock)
    breaker.failure()
    assert state(breaker) is CircuitState.OPEN
    assert not breaker.allow()
