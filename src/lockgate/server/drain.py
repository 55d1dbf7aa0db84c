"""Graceful drain on SIGTERM: readiness goes false first, then the server stops.

A load balancer, or Kubernetes, takes a replica out of rotation when its readiness check fails, but only
at its next check. So on SIGTERM ``/readyz`` answers 503 ``{"status": "draining"}`` at once while the
process keeps serving every request for ``seconds``; every answer in that window carries
``connection: close`` so that keep-alive clients reconnect, to another replica. Only then does uvicorn's
own graceful shutdown begin: stop accepting, let in-flight requests finish (up to 30 s), then the
lifespan shutdown (rollout controller, eval worker, request log flush). A second SIGTERM, or SIGINT,
starts that shutdown at once.

Installed by ``lockgate serve --drain-seconds N`` (``LOCKGATE_DRAIN_SECONDS``) in each server process,
when its lifespan starts: uvicorn has set its signal handlers by then, and the one for SIGTERM is
wrapped, never replaced.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

DRAIN_ENV = "LOCKGATE_DRAIN_SECONDS"
DRAINING_BODY = b'{"status":"draining"}'


class Draining:
    """ASGI middleware: ``/readyz`` is 503 from the first SIGTERM on, for ``seconds`` before shutdown."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self.draining = threading.Event()
        self._installed = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self.install()
        elif scope["type"] == "http" and self.draining.is_set():
            if scope["path"] == "/readyz":
                await _answer_draining(send)
                return
            await self.app(scope, receive, _closing(send))
            return
        await self.app(scope, receive, send)

    def install(self) -> None:
        """Wrap the process's SIGTERM handler (uvicorn's); only the main thread may, and only once."""
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return  # no server installed a handler (default or ignored): nothing to delay
        stop: Callable[[int, FrameType | None], Any] = previous

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self.draining.is_set():
                stop(signum, frame)  # a second SIGTERM: shut down now
                return
            self.draining.set()
            log.warning("SIGTERM: readiness is now false; shutting down in %g s", self.seconds)
            timer = threading.Timer(self.seconds, stop, args=(signum, frame))
            timer.daemon = True
            timer.start()

        signal.signal(signal.SIGTERM, on_sigterm)
        self._installed = True


async def _answer_draining(send: Send) -> None:
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": DRAINING_BODY})


def _closing(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return wrapped
