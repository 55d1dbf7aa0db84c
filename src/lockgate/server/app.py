"""One server process: the gateway, the service layer, the control API, the eval worker, the rollout
controller and the online quality scorer, wired once.

``/metrics`` and ``/readyz`` details are for operators: the configured scrape token, or the control
token of a platform viewer.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lockgate.api.app import create_control_api
from lockgate.config.loader import LoadedConfig
from lockgate.evals.scoring import ScoringServices
from lockgate.evals.worker import EvalWorker
from lockgate.gateway.http import OpsAccess, create_app
from lockgate.gateway.runtime import Gateway
from lockgate.instance import Instance
from lockgate.rollouts.controller import RolloutController
from lockgate.rollouts.online import OnlineScorer
from lockgate.security.rbac import PLATFORM_TENANT, Role
from lockgate.server.drain import Draining
from lockgate.service_errors import ControlError
from lockgate.services import Services, build_services


def build_app(
    instance: Instance, config: LoadedConfig, *, run_evals: bool = True, drain_seconds: float = 0.0
) -> Starlette:
    """``drain_seconds`` > 0: on SIGTERM ``/readyz`` turns 503 that long before shutdown (server/drain.py)."""
    services = build_services(instance, config)
    gateway = Gateway(config, instance.engine, instance.pepper)
    app = server_app(services, gateway, run_evals=run_evals)
    if drain_seconds > 0:
        app.add_middleware(Draining, seconds=drain_seconds)
    return app


def server_app(services: Services, gateway: Gateway, *, run_evals: bool = True) -> Starlette:
    scoring = ScoringServices(services.engine)  # one local embedder per process, started on first use
    worker = EvalWorker(services.evals, gateway, scoring=scoring) if run_evals else None
    controller = RolloutController(services.rollouts, metrics=gateway.metrics)
    online = OnlineScorer(gateway, services.engine, scoring=scoring)
    gateway.observe_answers(online)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        if worker is not None:
            worker.start()
        controller.start()
        try:
            yield
        finally:
            await controller.stop()
            if worker is not None:
                await worker.stop()
            await gateway.mirror.drain()  # mirrored answers may still be scored
            await online.stop()  # before the gateway: a judge calls through it
            await scoring.close()
            await gateway.stop()

    control = create_control_api(services, gateway.config.control.max_body_bytes)
    return create_app(gateway, _wakes(control, gateway, worker), ops_access(services, gateway), lifespan)


def _wakes(app: ASGIApp, gateway: Gateway, worker: EvalWorker | None) -> ASGIApp:
    """After a control API request that may have changed something, this process acts at once instead
    of at its next poll: the gateway reloads keys and pointers, the eval worker looks for queued runs.
    After one that succeeded (the change committed), with Redis configured, a change notice makes every
    other worker poll at once too. Without it they see the change at their next poll (and runs within
    theirs)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "DELETE"):
            await app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await app(scope, receive, sending)
        gateway.watcher.wake()
        if status < 400:
            gateway.watcher.announce()
        if worker is not None:
            worker.wake()

    return wrapped


def ops_access(services: Services, gateway: Gateway) -> OpsAccess:
    configured = gateway.config.server.metrics_token

    async def allowed(authorization: str | None) -> bool:
        if not authorization:
            return False
        presented = authorization.removeprefix("Bearer ").strip()
        if configured is not None and hmac.compare_digest(
            presented.encode(), configured.get_secret_value().encode()
        ):
            return True
        if not presented.startswith("lgc-"):
            return False
        try:
            actor = await asyncio.to_thread(services.tokens.authenticate, presented, source="ops")
        except ControlError:
            return False
        return actor.has(PLATFORM_TENANT, Role.VIEWER)

    return allowed
