"""The eval worker: runs are claimed by exactly one worker, survive a stop or a dead worker without
re-running finished cases, can be cancelled, and record the deployments that answered them.

Runs are queued through the service and executed by ``EvalWorker`` through a gateway on a stub
upstream, as the server does it; a slow stub (its own process) keeps cases in flight long enough to
stop or cancel a run in the middle.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from lockgate.config.loader import LoadedConfig, load_mapping
from lockgate.control.releases import ReleaseRequest
from lockgate.evals.cases import Case
from lockgate.evals.datasets import DatasetSpec
from lockgate.evals.service import fingerprint
from lockgate.evals.store import EvalRun
from lockgate.evals.worker import EvalWorker
from lockgate.gateway.runtime import Gateway
from lockgate.instance import Instance
from lockgate.security.permissions import PERMISSIONS
from lockgate.security.rbac import Actor
from lockgate.service_errors import Invalid
from lockgate.services import Services
from tests.control.test_golden_path import ROUTE, card, prompt
from tests.support.evals import execute_run
from tests.support.gateway import RunningGateway, stub_config
from tests.support.processes import StubUpstream

LEASE = timedelta(seconds=30)
QUESTIONS = [f"question-{i}" for i in range(8)]


@dataclass(frozen=True)
class Setup:
    services: Services
    instance: Instance
    admin: Actor
    release_id: str

    def queue(self, concurrency: int = 2) -> EvalRun:
        return self.services.evals.start(
            self.admin, "default", self.release_id, "golden", concurrency=concurrency
        ).run

    def run(self, run_id: str) -> EvalRun:
        return self.services.evals.get(self.admin, "default", run_id).run

    def done(self, run_id: str) -> int:
        return self.services.evals.get(self.admin, "default", run_id).done


@pytest.fixture
def setup(services: Services, instance: Instance, admin: Actor) -> Setup:
    services.registry.register(admin, "default", card("support-llm"))
    services.registry.set_alias(admin, "default", "support-llm", "champion", "1")
    services.prompts.push(admin, "default", prompt("1.0.0", 'reply:"{{ question }}"'))
    request = ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0", output_contract={"type": "string"})
    release = services.releases.create(admin, "default", request)
    cases = [
        Case(id=f"c{i}", variables={"product": "lockgate", "question": q}, facts=[q])
        for i, q in enumerate(QUESTIONS)
    ]
    services.datasets.push(
        admin, "default", DatasetSpec(name="golden", scorers=[{"type": "contains"}]), cases
    )
    return Setup(services, instance, admin, release.id)


@pytest.fixture(scope="module")
def slow_stub() -> Iterator[StubUpstream]:
    """An upstream that takes 400 ms per answer."""
    stub = StubUpstream("slow", latency_ms=400).start()
    yield stub
    stub.kill()


@pytest.fixture
def slow(slow_stub: StubUpstream) -> StubUpstream:
    slow_stub.reset()
    return slow_stub


@asynccontextmanager
async def gateway_on(instance: Instance, config: LoadedConfig) -> AsyncIterator[Gateway]:
    gateway = Gateway(config, instance.engine, instance.pepper)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


async def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def questions_received(stub: StubUpstream) -> Counter[str]:
    """How often each dataset question reached the upstream."""
    seen: Counter[str] = Counter()
    for request in stub.received():
        text = str(request["body"]["messages"][-1]["content"])
        seen.update(q for q in QUESTIONS if f'"{q}"' in text)
    return seen


def serving_m(url: str, upstream_model: str = "upstream-m") -> LoadedConfig:
    """A server whose public model ``m`` is ``upstream_model`` at ``url``."""
    deployment = {"provider": "primary", "model": upstream_model, "timeout": 5}
    return load_mapping(
        {
            "providers": {"primary": {"kind": "openai", "base_url": url}},
            "models": [
                {"name": "m", "deployments": [deployment]},
                {"name": "other", "deployments": [{"provider": "primary", "model": "upstream-other"}]},
            ],
            "routing": {"retries": 1, "backoff_initial": 0.01, "backoff_max": 0.05, "cooldown": 1.0},
        }
    )


# --- claiming ----------------------------------------------------------------------------------------


def test_two_workers_racing_for_a_run_exactly_one_wins(setup: Setup) -> None:
    queued = setup.queue()
    store = setup.services.evals.store
    contenders = 6
    start = threading.Barrier(contenders)
    won: list[tuple[str, EvalRun | None]] = []

    def claim(owner: str) -> None:
        start.wait()
        won.append((owner, store.claim(owner, LEASE)))

    threads = [threading.Thread(target=claim, args=(f"worker-{i}",)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [(owner, run) for owner, run in won if run is not None]
    assert len(won) == contenders
    assert len(winners) == 1
    [(owner, run)] = winners
    assert run is not None and run.id == queued.id
    assert setup.run(queued.id).status == "running"
    # The winner holds the lease: a late claimer gets nothing, the winner can renew it.
    assert store.claim("latecomer", LEASE) is None
    assert store.renew(queued.id, owner, LEASE) == "running"
    assert store.renew(queued.id, "latecomer", LEASE) is None


async def test_an_expired_lease_is_claimed_again_and_the_run_resumes(
    setup: Setup, stub: StubUpstream
) -> None:
    queued = await asyncio.to_thread(setup.queue)
    store = setup.services.evals.store
    # A worker claims the run and dies without a word: its short lease runs out.
    dead = await asyncio.to_thread(store.claim, "dead-worker", timedelta(milliseconds=300))
    assert dead is not None and dead.id == queued.id
    assert await asyncio.to_thread(store.claim, "other-worker", LEASE) is None

    async with gateway_on(setup.instance, stub_config(("primary", stub.base_url))) as gateway:
        worker = EvalWorker(setup.services.evals, gateway)
        claimed: EvalRun | None = None
        deadline = time.monotonic() + 10
        while claimed is None:
            assert time.monotonic() < deadline, "the expired lease was never claimed again"
            await asyncio.sleep(0.05)
            claimed = await asyncio.to_thread(store.claim, worker.owner, LEASE)
        assert claimed.id == queued.id
        assert await asyncio.to_thread(store.renew, queued.id, "dead-worker", LEASE) is None  # it lost it
        await worker.execute(claimed)
    finished = await asyncio.to_thread(setup.run, queued.id)
    assert finished.status == "complete"
    assert finished.summary is not None and finished.summary["quality"] == 1.0


# --- stopping and cancelling -----------------------------------------------------------------------


async def test_a_stopped_run_keeps_its_cases_and_another_worker_finishes_it_without_repeating_them(
    setup: Setup, slow: StubUpstream
) -> None:
    queued = await asyncio.to_thread(setup.queue, 2)
    store = setup.services.evals.store
    config = stub_config(("primary", slow.base_url))

    async with gateway_on(setup.instance, config) as gateway:
        first = EvalWorker(setup.services.evals, gateway)
        claimed = await asyncio.to_thread(store.claim, first.owner, LEASE)
        assert claimed is not None and claimed.id == queued.id
        running = asyncio.create_task(first.execute(claimed))
        await until(lambda: setup.done(queued.id) >= 2, "the first cases")
        await first.stop()  # the server shuts down: cases in flight finish, nothing new starts
        await running

    paused = await asyncio.to_thread(setup.run, queued.id)
    kept = await asyncio.to_thread(setup.done, queued.id)
    assert paused.status == "running"
    assert 2 <= kept < len(QUESTIONS)
    assert questions_received(slow) == Counter({q: 1 for q in questions_received(slow)})
    assert sum(questions_received(slow).values()) == kept  # every case in flight was recorded

    async with gateway_on(setup.instance, config) as gateway:
        second = EvalWorker(setup.services.evals, gateway)
        resumed = await asyncio.to_thread(store.claim, second.owner, LEASE)  # the lease was given back
        assert resumed is not None and resumed.id == queued.id
        await second.execute(resumed)

    finished = await asyncio.to_thread(setup.run, queued.id)
    assert finished.status == "complete"
    assert await asyncio.to_thread(setup.done, queued.id) == len(QUESTIONS)
    assert questions_received(slow) == Counter({q: 1 for q in QUESTIONS})


async def test_cancelling_a_running_run_ends_it_cancelled(setup: Setup, slow: StubUpstream) -> None:
    queued = await asyncio.to_thread(setup.queue, 1)
    store = setup.services.evals.store
    lease = timedelta(seconds=0.6)  # the worker looks at the run's status every 0.2 s

    async with gateway_on(setup.instance, stub_config(("primary", slow.base_url))) as gateway:
        worker = EvalWorker(setup.services.evals, gateway, lease=lease)
        claimed = await asyncio.to_thread(store.claim, worker.owner, lease)
        assert claimed is not None
        running = asyncio.create_task(worker.execute(claimed))
        await until(lambda: setup.done(queued.id) >= 1, "the first case")
        progress = await asyncio.to_thread(setup.services.evals.cancel, setup.admin, "default", queued.id)
        assert progress.run.status == "cancelling"
        await asyncio.wait_for(running, 30)

    cancelled = await asyncio.to_thread(setup.run, queued.id)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    assert 1 <= await asyncio.to_thread(setup.done, queued.id) < len(QUESTIONS)
    with pytest.raises(Invalid, match="already cancelled"):
        await asyncio.to_thread(setup.services.evals.cancel, setup.admin, "default", queued.id)
    assert await asyncio.to_thread(store.claim, "another-worker", LEASE) is None  # nothing left to run


def test_cancelling_a_queued_run_ends_it_at_once(setup: Setup) -> None:
    queued = setup.queue()
    assert setup.services.evals.cancel(setup.admin, "default", queued.id).run.status == "cancelled"
    assert setup.services.evals.store.claim("worker", LEASE) is None


# --- what a run records -----------------------------------------------------------------------------


def test_a_changed_gateway_configuration_changes_the_fingerprint(
    setup: Setup, stub: StubUpstream, slow: StubUpstream
) -> None:
    def fingerprint_under(config: LoadedConfig) -> tuple[str | None, list[dict[str, Any]]]:
        run = execute_run(
            setup.services, setup.instance, setup.admin, setup.release_id, "golden", stub, config=config
        )
        assert run.status == "complete", run.error
        return run.fingerprint, run.deployments or []

    same, deployments = fingerprint_under(serving_m(stub.base_url))
    assert same is not None and same == fingerprint(deployments)
    assert [(d["model"], d["upstream_model"]) for d in deployments] == [("m", "upstream-m")]
    assert fingerprint_under(serving_m(stub.base_url))[0] == same

    # The same public model `m`, answered by another upstream model or another upstream server.
    renamed, renamed_deployments = fingerprint_under(serving_m(stub.base_url, "upstream-m-v2"))
    assert renamed != same
    assert renamed_deployments[0]["upstream_model"] == "upstream-m-v2"
    moved, _ = fingerprint_under(serving_m(slow.base_url))
    assert moved not in (same, renamed)


def test_results_can_only_come_from_the_server(
    setup: Setup, server: RunningGateway, admin_token: str
) -> None:
    assert {op for op in PERMISSIONS if op.startswith("evals.")} == {
        "evals.list",
        "evals.get",
        "evals.report",
        "evals.start",
        "evals.cancel",
    }
    claimed = {"release": setup.release_id, "dataset": "golden", "summary": {"quality": 1.0}}
    answer = httpx.post(
        f"{server.url}/api/v1/tenants/default/eval-runs",
        json=claimed,
        headers={"authorization": f"Bearer {admin_token}"},
    )
    assert answer.status_code == 422
    assert "summary" in answer.text
    assert setup.services.evals.list(setup.admin, "default") == []
