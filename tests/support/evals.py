"""Run an eval the way ``lockgate eval run`` does, in the test process, on a stub-backed gateway."""

from __future__ import annotations

import asyncio
from typing import Any

from lockgate.control.plane import ControlPlane
from lockgate.evals.cases import ScoringContext
from lockgate.evals.client import PipelineClient
from lockgate.gateway.runtime import Gateway
from lockgate.instance import Instance
from lockgate.security.rbac import Actor
from tests.support.gateway import stub_config
from tests.support.processes import StubUpstream


def run_eval(
    instance: Instance,
    control: ControlPlane,
    actor: Actor,
    release_id: str,
    dataset: str,
    stub: StubUpstream,
    *,
    against: str | None = None,
    repeats: int = 1,
) -> dict[str, Any]:
    """Plan, execute and finalize a run; returns its summary."""
    planned = control.evals.prepare(actor, "default", release_id, dataset, repeats=repeats, concurrency=3)

    async def execute() -> bool:
        gateway = Gateway(stub_config(("primary", stub.base_url)), instance.engine, instance.pepper)
        await gateway.start()
        try:
            client = PipelineClient(gateway, control.tenants.get("default").id, "default")
            context = ScoringContext(complete=client.complete)
            return await control.evals.execute(planned, client, context, asyncio.Event(), concurrency=3)
        finally:
            await gateway.stop()

    assert asyncio.run(execute())
    return control.evals.finalize("default", planned.run.id, against).summary
