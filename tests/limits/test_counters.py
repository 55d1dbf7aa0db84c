"""The counters contract, run against every backend: all-or-nothing admission, sliding windows that age
out, slots and budget reservations held until settled or expired, settle correcting reservations to what
was used, soft caps reported, and no overshoot under concurrent admission."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from lockgate.config.schema import RedisConfig
from lockgate.limits.counters import Admission, Check, Counters, MemoryCounters
from lockgate.limits.redis_counters import RedisCounters
from lockgate.limits.shared import CountersServer, SocketCounters
from tests.conftest import RedisSpace

Factory = Callable[[], Awaitable[Counters]]


@pytest.fixture(params=["memory", "shared", pytest.param("redis", marks=pytest.mark.redis)])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[Counters]:
    made: Counters
    server: CountersServer | None = None
    if request.param == "memory":
        made = MemoryCounters()
    elif request.param == "shared":
        # The supervisor's server in a thread of its own, the worker's client on the test's loop.
        server = CountersServer(Path(tempfile.mkdtemp(prefix="lg-counters-")) / "counters.sock")
        server.start()
        made = SocketCounters(server.path)
    else:
        space: RedisSpace = request.getfixturevalue("redis_space")
        made = RedisCounters(RedisConfig(url=space.url, prefix=space.prefix, timeout=2.0))
    await made.reconciled()  # as the gateway does at start
    try:
        yield made
    finally:
        await made.close()
        if server is not None:
            server.stop()
            shutil.rmtree(server.path.parent, ignore_errors=True)


def key(what: str) -> str:
    return f"{what}:{uuid.uuid4().hex[:8]}"


def requests(name: str, limit: float, window: float = 60.0) -> Check:
    return Check(name, "window", "requests", limit, 1.0, window=window, name="rpm")


def tokens(name: str, limit: float, amount: float, window: float = 60.0) -> Check:
    return Check(name, "window", "tokens", limit, amount, window=window, name="tpm")


NANO = 1_000_000_000  # budgets count nano-dollars: integers, so sums are exact


def budget(name: str, limit: float, amount: float, soft: float | None = None) -> Check:
    """A budget of ``limit`` dollars reserving ``amount`` dollars, in the counters' nano-dollars."""
    return Check(
        name,
        "budget",
        "budget",
        round(limit * NANO),
        round(amount * NANO),
        ends_at=time.time() + 3600,
        soft=None if soft is None else round(soft * NANO),
        name="monthly",
    )


async def admit(counters: Counters, *checks: Check, hold: float = 60.0) -> Admission:
    return await counters.admit(checks, f"res_{uuid.uuid4().hex}", hold)


async def test_a_window_admits_up_to_its_limit_then_refuses_with_the_time_to_wait(counters: Counters) -> None:
    rpm = requests(key("rpm"), 3)
    admitted = [await admit(counters, rpm) for _ in range(3)]
    assert all(a.admitted for a in admitted)
    assert [a.remaining[0] for a in admitted] == [2, 1, 0]
    refused = await admit(counters, rpm)
    assert not refused.admitted
    assert refused.refusal == rpm
    assert 0 < refused.retry_after <= 60
    assert 0 < refused.reset[0] <= 60


async def test_admission_is_all_or_nothing(counters: Counters) -> None:
    tenant, full = requests(key("tenant"), 10), requests(key("key"), 1)
    assert (await admit(counters, full)).admitted
    refused = await admit(counters, tenant, full)
    assert (refused.admitted, refused.refused) == (False, 1)
    # The tenant's counter took nothing from the refused call: nine more fit.
    assert all([(await admit(counters, tenant)).admitted for _ in range(10)])
    assert not (await admit(counters, tenant)).admitted


async def test_a_window_ages_out(counters: Counters) -> None:
    rpm = requests(key("rpm"), 2, window=2)
    assert (await admit(counters, rpm)).admitted
    assert (await admit(counters, rpm)).admitted
    refused = await admit(counters, rpm)
    assert not refused.admitted and refused.retry_after <= 2
    await asyncio.sleep(refused.retry_after + 0.05)
    assert (await admit(counters, rpm)).admitted


async def test_settling_gives_back_the_tokens_a_call_reserved_but_did_not_use(counters: Counters) -> None:
    name = key("tpm")
    first = await admit(counters, tokens(name, 150, 100))
    assert first.admitted
    assert not (await admit(counters, tokens(name, 150, 100))).admitted
    await counters.settle(first, [30])
    second = await admit(counters, tokens(name, 150, 100))
    assert second.admitted
    assert second.remaining[0] == 20  # 150 - 30 used - 100 reserved


async def test_a_slot_is_held_until_settled_or_expired(counters: Counters) -> None:
    slots = Check(key("concurrent"), "concurrency", "concurrent", 2)
    held = [await admit(counters, slots), await admit(counters, slots, hold=0.5)]
    assert all(a.admitted for a in held)
    assert not (await admit(counters, slots)).admitted
    await counters.settle(held[0], [1])
    assert (await admit(counters, slots)).admitted
    assert not (await admit(counters, slots)).admitted
    await asyncio.sleep(0.6)  # the second call never settled: its slot expires
    assert (await admit(counters, slots)).admitted


async def test_a_budget_counts_pending_reservations_and_settles_to_the_spend(counters: Counters) -> None:
    name = key("budget")
    first = await admit(counters, budget(name, 1.0, 0.6, soft=0.5))
    assert first.admitted
    refused = await admit(counters, budget(name, 1.0, 0.6, soft=0.5))
    assert not refused.admitted
    assert 3500 < refused.retry_after <= 3600  # until the period ends
    assert await counters.settle(first, [0.2 * NANO]) == []  # 0.2 spent: under the soft cap
    second = await admit(counters, budget(name, 1.0, 0.6, soft=0.5))
    assert second.admitted
    over = await counters.settle(second, [0.45 * NANO])
    assert [(o.check.name, o.spent) for o in over] == [("monthly", 0.65 * NANO)]
    assert not (await admit(counters, budget(name, 1.0, 0.4))).admitted  # 0.65 + 0.4 > 1
    assert (await admit(counters, budget(name, 1.0, 0.35))).admitted


async def test_an_unsettled_budget_reservation_is_released_after_its_hold(counters: Counters) -> None:
    name = key("budget")
    assert (await admit(counters, budget(name, 1.0, 0.9), hold=0.5)).admitted
    assert not (await admit(counters, budget(name, 1.0, 0.9))).admitted
    await asyncio.sleep(0.6)
    assert (await admit(counters, budget(name, 1.0, 0.9))).admitted


async def test_reconciling_raises_the_spend_and_never_lowers_it(counters: Counters) -> None:
    name, ends = key("budget"), time.time() + 3600
    await counters.set_spend(name, 0.7 * NANO, ends)
    assert not (await admit(counters, budget(name, 1.0, 0.4))).admitted
    await counters.set_spend(name, 0.1 * NANO, ends)  # lower: ignored
    assert not (await admit(counters, budget(name, 1.0, 0.4))).admitted
    assert (await admit(counters, budget(name, 1.0, 0.3))).admitted


async def test_concurrent_admissions_never_overshoot(counters: Counters) -> None:
    rpm, spend = requests(key("rpm"), 100), budget(key("budget"), 0.05, 0.001)
    results = await asyncio.gather(*(admit(counters, rpm, spend) for _ in range(200)))
    admitted = [r for r in results if r.admitted]
    assert len(admitted) == 50  # the budget binds first: 50 x 0.001 = 0.05
    assert {r.refusal.what for r in results if r.refusal is not None} == {"budget"}
