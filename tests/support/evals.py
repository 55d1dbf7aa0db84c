"""Run an eval the way the server does: queue it through the service, then let an eval worker claim and
execute it through a gateway (here in the test process, on the stub upstream)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from lockgate.config.loader import LoadedConfig
from lockgate.evals.store import EvalRun
from lockgate.evals.worker import EvalWorker
from lockgate.gateway.runtime import Gateway
from lockgate.instance import Instance
from lockgate.security.rbac import Actor
from lockgate.services import Services
from tests.support.gateway import stub_config
from tests.support.processes import StubUpstream


def run_eval(
    services: Services,
    instance: Instance,
    actor: Actor,
    release_id: str,
    dataset: str,
    stub: StubUpstream,
    *,
    against: str | None = None,
    repeats: int = 1,
    config: LoadedConfig | None = None,
) -> dict[str, Any]:
    """Queue, execute and finish a run; returns its summary."""
    run = execute_run(
        services, instance, actor, release_id, dataset, stub, against=against, repeats=repeats, config=config
    )
    assert run.status == "complete", (run.status, run.error)
    assert run.summary is not None
    return run.summary


def execute_run(
    services: Services,
    instance: Instance,
    actor: Actor,
    release_id: str,
    dataset: str,
    stub: StubUpstream,
    *,
    against: str | None = None,
    repeats: int = 1,
    config: LoadedConfig | None = None,
) -> EvalRun:
    queued = services.evals.start(
        actor, "default", release_id, dataset, repeats=repeats, concurrency=3, against=against
    )

    async def execute() -> None:
        gateway = Gateway(config or stub_config(("primary", stub.base_url)), instance.engine, instance.pepper)
        await gateway.start()
        try:
            worker = EvalWorker(services.evals, gateway)
            claimed = services.evals.store.claim(worker.owner, timedelta(seconds=30))
            assert claimed is not None and claimed.id == queued.run.id
            await worker.execute(claimed)
        finally:
            await gateway.stop()

    asyncio.run(execute())
    return services.evals.store.get(queued.run.id)
