"""The eval worker: runs queued eval runs inside the server, through its own gateway.

Every server process runs one worker. A worker claims a run by taking its lease in the store (one
winner however many processes or hosts try): at once when the run was queued through its own process,
otherwise at its next poll (every 5 s, off the request path). It renews the lease while the cases run
and records the deployments that answered as it goes. When asked to stop (the server shuts down) no new
case starts, the cases in flight finish and are recorded, and the lease is given back so the run
resumes on the next claim; if the process dies instead, the lease expires and another worker (or the
restarted server) resumes it. A run whose status becomes ``cancelling`` stops the same way and ends
``cancelled``. Cases go through the gateway pipeline of the process that runs them: the production
configuration of that server, never one a client chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import Any

from lockgate.evals.client import PipelineClient
from lockgate.evals.scoring import ScoringServices
from lockgate.evals.service import EvalService
from lockgate.evals.store import EvalRun
from lockgate.gateway.runtime import Gateway
from lockgate.store.database import store_unreachable
from lockgate.store.outage import Outage

log = logging.getLogger(__name__)

CANCEL_CHECK_SECONDS = 1.0


class EvalWorker:
    def __init__(
        self,
        evals: EvalService,
        gateway: Gateway,
        *,
        poll: float = 5.0,
        lease: timedelta = timedelta(seconds=30),
        scoring: ScoringServices | None = None,
    ) -> None:
        self._evals = evals
        self._gateway = gateway
        self._poll = poll
        self._lease = lease
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = asyncio.Event()
        self._woken = asyncio.Event()
        self._stop_run = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._own_scoring = scoring is None
        self._outage = Outage(log, "the store (eval worker)")
        self._scoring = scoring or ScoringServices(evals.store.engine)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="eval-worker")

    def wake(self) -> None:
        """Look for work now (a run was just queued through this process) instead of at the next poll."""
        self._woken.set()

    async def stop(self) -> None:
        """Finish the cases in flight, record them, give the lease back."""
        self._stopping.set()
        self._stop_run.set()
        if self._task is not None:
            await self._task
        if self._own_scoring:
            await self._scoring.close()

    async def _loop(self) -> None:
        store = self._evals.store
        while not self._stopping.is_set():
            try:
                run = await asyncio.to_thread(store.claim, self.owner, self._lease)
                self._outage.recovered()
                if run is None:
                    await self._idle(self._poll)
                    continue
                await self.execute(run)
            except Exception as exc:
                # The store may be unreachable for a while (logged once); the lease lets the run resume.
                if not store_unreachable(exc):
                    log.exception("eval worker iteration failed; retrying")
                else:
                    self._outage.failed(exc, f"looking for runs again every {self._poll:g} s")
                await self._idle(self._poll)

    async def _idle(self, seconds: float) -> None:
        """Wait until woken, stopped or ``seconds`` have passed. Runs queued through this process wake
        the worker at once; the poll finds runs queued elsewhere and runs whose worker died."""
        woken = asyncio.ensure_future(self._woken.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({woken, stopping}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            stopping.cancel()
        self._woken.clear()

    async def execute(self, run: EvalRun) -> None:
        """Run what is left of ``run`` (already claimed by this worker) and finish it."""
        evals, store = self._evals, self._evals.store
        self._stop_run = asyncio.Event()
        if self._stopping.is_set():
            self._stop_run.set()
        planned = await asyncio.to_thread(evals.plan, run)
        client = PipelineClient(
            self._gateway,
            run.tenant_id,
            planned.tenant,
            await asyncio.to_thread(self._scoring.allowed_models, run.tenant_id),
        )
        previous = {d["name"]: d for d in run.deployments or []}

        def deployments() -> list[dict[str, Any]]:
            merged = {**previous}
            for name, described in client.answered.items():
                key = name if merged.get(name, described) == described else f"{name}#{len(merged)}"
                merged[key] = described
            return [merged[k] for k in sorted(merged)]

        heartbeat = asyncio.create_task(self._heartbeat(run.id, deployments))
        log.info("eval run %s: %d of %d cases to go", run.id, len(planned.todo), planned.total)
        try:
            context = self._scoring.context(client)
            complete = await evals.execute(planned, client, context, self._stop_run)
        except Exception as exc:
            heartbeat.cancel()
            log.exception("eval run %s failed", run.id)
            await asyncio.to_thread(
                store.finish, run.id, "failed", None, error=f"{type(exc).__name__}: {exc}"
            )
            return
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        status = await asyncio.to_thread(lambda: store.get(run.id).status)
        if complete:
            await asyncio.to_thread(evals.finalize, run.id, deployments())
            log.info("eval run %s complete", run.id)
        elif status == "cancelling":
            await asyncio.to_thread(store.finish, run.id, "cancelled", None, deployments=deployments())
            log.info("eval run %s cancelled", run.id)
        else:
            await asyncio.to_thread(store.renew, run.id, self.owner, self._lease, deployments())
            await asyncio.to_thread(store.release, run.id, self.owner)
            log.info("eval run %s paused; it resumes on the next claim", run.id)

    async def _heartbeat(self, run_id: str, deployments: Any) -> None:
        """Look for a cancellation every second; renew the lease every third of its length."""
        store = self._evals.store
        renew_every = self._lease.total_seconds() / 3
        look_every = min(CANCEL_CHECK_SECONDS, renew_every)
        waited = 0.0
        while True:
            await asyncio.sleep(look_every)
            waited += look_every
            if waited >= renew_every:
                waited = 0.0
                status = await asyncio.to_thread(store.renew, run_id, self.owner, self._lease, deployments())
            else:
                status = await asyncio.to_thread(store.status, run_id, self.owner)
            if status is None or status == "cancelling":
                # Lost the lease (another worker resumes it) or asked to cancel: start nothing new.
                self._stop_run.set()
                return
