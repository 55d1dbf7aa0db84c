"""HTTP endpoints of the gateway (OpenAI wire format) on Starlette.

Handlers only translate between HTTP and the pipeline: read the body within its size limit, parse it
once, hand a ``Call`` to the pipeline and write the ``Reply`` back, as JSON or server-sent events. No
exception reaches the client as a stack trace.

``POST /v1/feedback`` rates an answer the caller's key got (``gateway.feedback``).

``/healthz`` is open. ``/readyz`` tells anyone whether the worker is ready; its details (the store,
each deployment's circuit) and ``/metrics`` (tenants, spend) need an operator's credential, checked
by the ``OpsAccess`` the server passes in.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from lockgate.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
)
from lockgate.gateway.feedback import parse_rating
from lockgate.gateway.pipeline import Call, Endpoint, Reply
from lockgate.gateway.runtime import Gateway
from lockgate.wire import ChatCompletionRequest, EmbeddingRequest, decode_object, validate

log = logging.getLogger(__name__)

JSON = "application/json"

OpsAccess = Callable[[str | None], Awaitable[bool]]
"""Whether an ``Authorization`` header may read operational details (/metrics, /readyz details)."""


def metrics_token_access(gateway: Gateway) -> OpsAccess:
    """Only the configured ``server.metrics_token`` (none configured: nobody)."""
    configured = gateway.config.server.metrics_token

    async def allowed(authorization: str | None) -> bool:
        if configured is None or authorization is None:
            return False
        presented = authorization.removeprefix("Bearer ").strip().encode()
        return hmac.compare_digest(presented, configured.get_secret_value().encode())

    return allowed


def create_app(
    gateway: Gateway,
    control_api: ASGIApp | None = None,
    ops_access: OpsAccess | None = None,
    lifespan: Callable[[Starlette], Any] | None = None,
) -> Starlette:
    """The gateway's routes; with ``control_api``, every other path (``/api/v1``, ``/docs``) goes to it.

    ``lifespan`` replaces the default one (start and stop the gateway) when the server runs more.
    """
    limit = gateway.config.server.max_body_bytes
    may_read_ops = ops_access or metrics_token_access(gateway)

    async def pipeline(request: Request, endpoint: Endpoint, kind: type[Any]) -> Response:
        request_id = f"req_{uuid.uuid4().hex}"
        try:
            raw = await _read_body(request, limit)
            body = decode_object(raw)
            call = Call(
                request_id=request_id,
                endpoint=endpoint,
                raw=raw,
                body=body,
                request=validate(body, kind),
                authorization=_credentials(request),
                environment=request.headers.get("x-lockgate-environment") or None,
                session=request.headers.get("x-lockgate-session") or None,
                cache_header=request.headers.get("x-lockgate-cache") or None,
                cache_control=request.headers.get("cache-control") or None,
            )
            reply = await gateway.handle(call)
        except GatewayError as error:
            return error_response(error, request_id)
        except Exception:
            log.exception("unhandled error in request %s", request_id)
            return error_response(InternalError("The gateway failed to handle this request."), request_id)
        return _reply_response(call, reply)

    async def chat_completions(request: Request) -> Response:
        return await pipeline(request, "chat.completions", ChatCompletionRequest)

    async def embeddings(request: Request) -> Response:
        return await pipeline(request, "embeddings", EmbeddingRequest)

    async def list_models(request: Request) -> Response:
        request_id = f"req_{uuid.uuid4().hex}"
        try:
            principal = gateway.keyring.authenticate(_credentials(request))
        except GatewayError as error:
            return error_response(error, request_id)
        model_id = request.path_params.get("model")
        names = [n for n in gateway.table.names() if principal.may_use(n)]
        if model_id is not None:
            if model_id not in names:
                return error_response(
                    ModelNotFound(f"The model '{model_id}' does not exist.", param="model"), request_id
                )
            return _json(_model_object(model_id, gateway.started_at), request_id)
        data = [_model_object(n, gateway.started_at) for n in names]
        return _json({"object": "list", "data": data}, request_id)

    async def healthz(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def readyz(request: Request) -> Response:
        state = await gateway.readiness()
        body: dict[str, Any] = {"status": "ready" if state.ready else "not ready"}
        if await may_read_ops(request.headers.get("authorization")):
            body |= {"store": state.store, "deployments": state.deployments}
        return Response(orjson.dumps(body), status_code=200 if state.ready else 503, media_type=JSON)

    async def metrics(request: Request) -> Response:
        if not await may_read_ops(request.headers.get("authorization")):
            error = Unauthenticated(
                "Metrics need the scrape token (server.metrics_token) "
                "or a platform operator's control token.",
                code="missing_credentials",
            )
            return error_response(error, None)
        return Response(gateway.metrics.render(), media_type=gateway.metrics.content_type)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            return error_response(MethodNotAllowed("Method not allowed for this path."), None)
        return error_response(
            NotFound("Unknown path. See /v1/chat/completions, /v1/embeddings, /v1/models, /v1/feedback."),
            None,
        )

    @asynccontextmanager
    async def gateway_only(_: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    routes: list[BaseRoute] = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/feedback", _rate(gateway, limit), methods=["POST"]),
        Route("/v1/models/{model:path}", list_models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if control_api is not None:
        routes.append(Mount("", app=control_api))
    return Starlette(
        routes=routes, lifespan=lifespan or gateway_only, exception_handlers={HTTPException: http_error}
    )


def _rate(gateway: Gateway, limit: int) -> Callable[[Request], Awaitable[Response]]:
    """``POST /v1/feedback``: the caller's key rates one of its requests."""

    async def feedback(request: Request) -> Response:
        request_id = f"req_{uuid.uuid4().hex}"
        try:
            principal = gateway.keyring.authenticate(_credentials(request))
            rating = parse_rating(decode_object(await _read_body(request, limit)))
            rated = await gateway.feedback.rate(principal, rating)
        except GatewayError as error:
            return error_response(error, request_id)
        except Exception:
            log.exception("unhandled error in feedback request %s", request_id)
            return error_response(InternalError("The gateway failed to store this rating."), request_id)
        return _json(rated.body(), request_id)

    return feedback


def error_response(error: GatewayError, request_id: str | None) -> Response:
    headers = {**error.headers, "x-request-id": request_id} if request_id else error.headers or None
    return Response(
        orjson.dumps(error.body(request_id)), status_code=error.status, media_type=JSON, headers=headers
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequest("Invalid Content-Length header.")
        if int(declared) > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _credentials(request: Request) -> str | None:
    return request.headers.get("authorization") or request.headers.get("x-api-key")


def _headers(call: Call) -> dict[str, str]:
    headers = {"x-request-id": call.request_id}
    if call.deployment is not None:
        headers["x-lockgate-deployment"] = call.deployment.name
        headers["x-lockgate-attempts"] = str(call.attempts)
    return headers


def _reply_response(call: Call, reply: Reply) -> Response:
    headers = {**_headers(call), **reply.headers}
    if reply.stream is not None:
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return StreamingResponse(
            _sse(reply.stream, call.request_id), media_type="text/event-stream", headers=headers
        )
    return Response(orjson.dumps(reply.body), media_type=JSON, headers=headers)


async def _sse(chunks: AsyncIterator[dict[str, Any]], request_id: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except GatewayError as error:
        yield b"data: " + orjson.dumps(error.body(request_id)) + b"\n\n"
        return
    except Exception:
        log.exception("stream of request %s failed", request_id)
        yield b"data: " + orjson.dumps(InternalError("The stream failed.").body(request_id)) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"


def _json(body: dict[str, Any], request_id: str) -> Response:
    return Response(orjson.dumps(body), media_type=JSON, headers={"x-request-id": request_id})


def _model_object(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "lockgate"}
